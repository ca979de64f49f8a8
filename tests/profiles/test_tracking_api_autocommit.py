"""A request whose only write is its events stores them in one transaction of its own.

The claim of its messageIds and the COPY of its events commit together, with no
savepoint, and processing is asked for after the commit. These tests run as the
server does, not inside a test transaction, so that this path is the one taken.
"""

import base64

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from psycopg.errors import DeadlockDetected

from profiles import ingestion
from profiles.models import Event, RejectedEvent

pytestmark = pytest.mark.django_db(transaction=True)

AUTH = {
    "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"test-env-write-key:").decode()
}


def track(number: int) -> str:
    return (
        f'{{"type":"track","messageId":"m-{number}","userId":"u{number}",'
        '"event":"Product Viewed"}'
    )


def batch(client: Client, *items: str):
    body = '{"batch":[' + ",".join(items) + "]}"
    return client.post("/v1/batch", data=body, content_type="application/json", **AUTH)


@pytest.fixture
def enqueued(monkeypatch):
    calls: list[bool] = []

    def enqueue() -> None:
        # Run after the events are committed: the worker must find them.
        calls.append(connection.in_atomic_block)

    monkeypatch.setattr(ingestion, "events_process_enqueue", enqueue)
    return calls


def test_events_alone_are_stored_and_their_processing_asked_for(client, enqueued):
    with CaptureQueriesContext(connection) as queries:
        response = batch(client, track(1), track(2))

    assert response.status_code == 200
    assert not [q for q in queries if "SAVEPOINT" in q["sql"]], "no savepoint"
    assert (response.json()["stored"], response.json()["duplicates"]) == (2, 0)
    assert Event.objects.filter(processed_at__isnull=True).count() == 2
    assert enqueued == [False]


def test_a_retried_batch_stores_nothing_twice_and_the_new_items_once(client, enqueued):
    batch(client, track(1), track(2))

    again = batch(client, track(1), track(2), track(3))

    assert (again.json()["stored"], again.json()["duplicates"]) == (1, 2)
    assert sorted(Event.objects.values_list("message_id", flat=True)) == [
        "m-1",
        "m-2",
        "m-3",
    ]


def test_a_retried_batch_of_stored_items_only_asks_for_no_processing(client, enqueued):
    batch(client, track(1))

    again = batch(client, track(1))

    assert (again.json()["stored"], again.json()["duplicates"]) == (0, 1)
    assert enqueued == [False]


def test_with_a_rejected_item_the_events_and_the_rejection_are_kept_together(
    client, enqueued
):
    response = batch(client, track(1), '{"type":"track","messageId":"bad"}')

    assert response.status_code == 200
    assert response.json()["stored"] == 1
    assert RejectedEvent.objects.get().message_id == "bad"
    assert Event.objects.get().message_id == "m-1"


def test_a_deadlock_met_by_the_copy_is_retried_and_stored_once(
    client, enqueued, monkeypatch
):
    copy = ingestion._events_copy
    met: list[int] = []

    def deadlocked_once(fresh):
        if not met:
            met.append(1)
            raise DeadlockDetected("deadlock detected")
        copy(fresh)

    monkeypatch.setattr(ingestion, "_events_copy", deadlocked_once)

    response = batch(client, track(1), track(2))

    assert (response.json()["stored"], response.json()["duplicates"]) == (2, 0)
    assert Event.objects.count() == 2
    assert enqueued == [False]


def test_requests_claiming_the_same_ids_at_once_store_each_event_once(enqueued):
    # Four senders post batches of the same ids in other orders at once: claims
    # wait on one another, meet ids committed meanwhile or deadlock, and are
    # redone carefully. Every id is stored once, and counted stored once.
    import random
    import threading

    from django.db import connections

    ids = list(range(40))
    answers: list[dict] = []
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def sender(seed: int) -> None:
        rng = random.Random(seed)
        client = Client()
        try:
            start.wait()
            for _ in range(5):
                chosen = rng.sample(ids, 25)
                answers.append(batch(client, *map(track, chosen)).json())
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sender, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    stored = list(Event.objects.values_list("message_id", flat=True))
    assert len(stored) == len(set(stored))
    assert sum(answer["stored"] for answer in answers) == len(stored)
    assert all(answer["stored"] + answer["duplicates"] == 25 for answer in answers)
