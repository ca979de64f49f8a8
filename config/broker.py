"""The embedded broker: kombu's filesystem transport, made safe for several processes.

Kombu's own channel creates a message file under its final name and only then writes
the message into it, so a worker that lists the folder in between reads an empty file
and dies on the JSON error; the exchange tables in the control folder have the same
gap. Here a writer fills a file under a name the reader never picks up and renames it
into place, which is atomic on one filesystem, and the reader claims a message by
renaming it before reading, so two readers never take the same one.
"""

import contextlib
import fcntl
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, virtual
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

# Suffixes that keep a file out of the reader's pattern ("<stamp>_<uuid>.<queue>.msg").
WRITING_SUFFIX = ".writing"
CLAIMED_SUFFIX = ".claimed"
UNREADABLE_SUFFIX = ".unreadable"

# A file that is still not whole JSON after this long was left by a writer that died
# (or by a producer still on kombu's own channel); it is set aside, not retried forever.
UNREADABLE_AFTER_SECONDS = 60


class Channel(filesystem.Channel):
    """A filesystem channel whose messages and exchange tables appear whole or not at all."""

    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:
        """Write the message under a private name, then rename it into the queue."""
        # The same name kombu gives it: the stamp keeps the reader's order first in, first out.
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        _write_atomically(path, str_to_bytes(dumps(payload)))

    def _get(self, queue: str) -> dict[str, Any]:
        """Claim and return the oldest whole message of the queue."""
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue

            payload = self._claim(name)
            if payload is not None:
                return payload
        raise Empty()

    def _claim(self, name: str) -> dict[str, Any] | None:
        """Take one message file for this reader; None if it is gone or not whole yet."""
        path = os.path.join(self.data_folder_in, name)
        claimed = f"{path}.{uuid.uuid4().hex}{CLAIMED_SUFFIX}"
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            # Another reader (or a purge) took it first.
            return None

        with open(claimed, "rb") as file:
            raw = file.read()
        try:
            payload = loads(raw)
        except ValueError:
            self._put_back(claimed, path)
            return None

        self._finish(claimed, name)
        return payload

    def _put_back(self, claimed: str, path: str) -> None:
        """Return a file that is not whole JSON for the next poll, or set it aside."""
        age = time.time() - os.stat(claimed).st_mtime
        if age < UNREADABLE_AFTER_SECONDS:
            os.rename(claimed, path)
            return

        os.rename(claimed, path + UNREADABLE_SUFFIX)
        logger.error(
            "Queue message is not readable JSON; set aside",
            extra={"path": path + UNREADABLE_SUFFIX},
        )

    def _finish(self, claimed: str, name: str) -> None:
        if not self.store_processed:
            os.remove(claimed)
            return

        # shutil.move, as kombu does: the processed folder may be on another filesystem.
        os.makedirs(self.processed_folder, exist_ok=True)
        shutil.move(claimed, os.path.join(self.processed_folder, name))

    def _queue_bind(
        self, exchange: str, routing_key: str, pattern: str, queue: str
    ) -> None:
        """Add the binding to the exchange's table, if it is not there yet."""
        binding = filesystem.exchange_queue_t(
            routing_key or "", pattern or "", queue or ""
        )
        with self._table_lock(exchange):
            table = self.get_table(exchange)
            if binding not in table:
                self._write_table(exchange, [binding, *table])

    def _delete(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        pattern: str,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Delete the queue and remove its binding from the exchange's table."""
        # Skips kombu's filesystem _delete, which rewrites the table in place.
        virtual.Channel._delete(
            self, queue, exchange, routing_key, pattern, *args, **kwargs
        )
        binding = filesystem.exchange_queue_t(
            routing_key or "", pattern or "", queue or ""
        )
        with self._table_lock(exchange):
            table = self.get_table(exchange)
            if binding in table:
                table.remove(binding)
                self._write_table(exchange, table)

    @contextlib.contextmanager
    def _table_lock(self, exchange: str) -> Iterator[None]:
        """Hold the exchange's lock file, so that table updates do not lose each other."""
        # A separate lock file, because the table file itself is replaced on each write.
        table_file = self._exchange_file(exchange)
        self.control_folder.mkdir(parents=True, exist_ok=True)
        with open(f"{table_file}.lock", "a") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    def _write_table(self, exchange: str, table: list[Any]) -> None:
        path = self._exchange_file(exchange)
        _write_atomically(str(path), str_to_bytes(dumps(table)))


class Transport(filesystem.Transport):
    """Kombu's filesystem transport with the channel above."""

    Channel = Channel


def _write_atomically(path: str, data: bytes) -> None:
    """Write data to path so that a reader sees either nothing or all of it."""
    temporary = f"{path}.{uuid.uuid4().hex}{WRITING_SUFFIX}"
    try:
        Path(temporary).write_bytes(data)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise ChannelError(f"Cannot write {path!r}") from exc
