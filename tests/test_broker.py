"""The embedded broker (config/broker.py) under real concurrent producers and readers."""

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import kombu.exceptions
import pytest
from kombu import Connection

from config.broker import UNREADABLE_AFTER_SECONDS, Transport

PRODUCERS = 4
MESSAGES_PER_PRODUCER = 400
QUEUE = "broker-test"


def connect(folder: Path) -> Connection:
    return Connection(
        "filesystem://localhost/",
        transport=Transport,
        transport_options={
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            # Poll as fast as possible: the tighter the reader, the likelier it is
            # to find a file that a producer has not finished.
            "polling_interval": 0,
        },
    )


def produce(folder: Path, producer: int) -> None:
    with connect(folder) as connection:
        queue = connection.SimpleQueue(QUEUE)
        for number in range(MESSAGES_PER_PRODUCER):
            # A body of some size, so that each write takes a moment.
            queue.put({"producer": producer, "number": number, "pad": "x" * 20_000})
        queue.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    # The transport remembers bindings per process; each test has its own folders.
    Transport.global_state.clear()
    (tmp_path / "queue").mkdir()
    return tmp_path


def test_it_delivers_every_message_once_while_producers_write_concurrently(folder):
    # given producers in their own processes, writing while a consumer reads
    context = multiprocessing.get_context("fork")
    producers = [
        context.Process(target=produce, args=(folder, producer))
        for producer in range(PRODUCERS)
    ]
    received = []

    # when the consumer drains the queue as the messages come in
    with connect(folder) as connection:
        queue = connection.SimpleQueue(QUEUE)
        for process in producers:
            process.start()
        deadline = time.monotonic() + 120
        while len(received) < PRODUCERS * MESSAGES_PER_PRODUCER:
            assert time.monotonic() < deadline, f"only {len(received)} arrived"
            try:
                message = queue.get(timeout=1)
            except queue.Empty:
                continue
            received.append((message.payload["producer"], message.payload["number"]))
            message.ack()
        for process in producers:
            process.join(30)
        leftover = queue.qsize()
        queue.close()

    # then each message arrived exactly once, and nothing failed
    assert [process.exitcode for process in producers] == [0] * PRODUCERS
    assert sorted(received) == [
        (producer, number)
        for producer in range(PRODUCERS)
        for number in range(MESSAGES_PER_PRODUCER)
    ]
    assert leftover == 0
    assert sorted(os.listdir(folder / "queue")) == []


def test_it_leaves_a_message_file_that_is_not_written_yet_for_the_next_poll(folder):
    # given a file as a producer on kombu's own channel leaves it: created, still empty
    with connect(folder) as connection:
        queue = connection.SimpleQueue(QUEUE)
        path = folder / "queue" / f"1_a.{QUEUE}.msg"
        path.write_bytes(b"")

        # when the consumer polls, it finds nothing to read and does not fail
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.2)
        assert path.read_bytes() == b""

        # then, once the producer has written it, the next poll delivers it
        with connection.SimpleQueue(QUEUE) as writer:
            writer.put({"number": 7})
        written = next(file for file in (folder / "queue").iterdir() if file != path)
        path.write_bytes(written.read_bytes())
        written.unlink()
        message = queue.get(timeout=1)
        message.ack()
        queue.close()

    assert message.payload == {"number": 7}
    assert sorted(os.listdir(folder / "queue")) == []


def test_it_sets_aside_a_message_file_left_empty_for_too_long(folder):
    # given an empty message file older than a writer ever takes
    path = folder / "queue" / f"1_a.{QUEUE}.msg"
    path.write_bytes(b"")
    long_ago = time.time() - UNREADABLE_AFTER_SECONDS - 1
    os.utime(path, (long_ago, long_ago))

    # when the consumer polls
    with connect(folder) as connection:
        queue = connection.SimpleQueue(QUEUE)
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.2)
        queue.close()

    # then the file is renamed out of the queue, where an engineer can look at it
    assert sorted(os.listdir(folder / "queue")) == [f"1_a.{QUEUE}.msg.unreadable"]


def test_the_default_broker_is_the_safe_filesystem_transport(tmp_path):
    # given no broker configured (the embedded default)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env["BESPOKE_VAR_DIR"] = str(tmp_path)
    script = (
        "from config.celery import app;"
        "conn = app.connection_for_write();"
        "print(conn.transport.driver_type, conn.get_transport_cls().__module__,"
        " conn.transport.polling_interval)"
    )

    # when the Celery app makes its broker connection
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )

    # then it is the filesystem URL, served by Bespoke's transport, polled often
    # enough that a queue of tasks drains in seconds, not minutes
    assert result.stdout.split() == ["filesystem", "config.broker", "0.1"]


def test_a_broker_that_never_answers_fails_a_publish_in_seconds():
    # A broker that accepts the connection and then says nothing (a failover, a
    # NAT timeout) held a tracking request past two minutes.
    import socket
    import threading

    from django.conf import settings

    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])
            except TimeoutError:
                continue

    listener = threading.Thread(target=accept, daemon=True)
    listener.start()
    url = f"redis://127.0.0.1:{port}/0"
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    raised: list[BaseException] = []

    def publish() -> None:
        # As Celery publishes a task: with its retry policy.
        try:
            with Connection(url, transport_options=options) as connection:
                connection.Producer().publish(
                    {"task": "profiles.tasks.events_process_task"},
                    routing_key="celery",
                    retry=True,
                    retry_policy=settings.CELERY_TASK_PUBLISH_RETRY_POLICY,
                )
        except Exception as exc:
            raised.append(exc)

    # In a thread, so that a publish that hangs fails the test instead.
    publisher = threading.Thread(target=publish, daemon=True)
    try:
        publisher.start()
        publisher.join(timeout=4 * settings.BROKER_SOCKET_TIMEOUT_SECONDS)
    finally:
        stop.set()
        listener.join()
        for accepted_socket in accepted:
            accepted_socket.close()
        silent.close()

    assert not publisher.is_alive(), "the publish still waits on the broker"
    assert len(raised) == 1
    assert isinstance(raised[0], kombu.exceptions.OperationalError)
    assert "Timeout" in str(raised[0])
