"""Event processing: identity resolution, profile upserts, merges, computed traits.

Events are processed in chunks, in the order they arrived. A chunk is claimed under
row locks (skipping rows another worker holds) and processed in one transaction that
attaches each event to its profile and marks the chunk processed. The chunk's
identities, email owners and profiles are read with a few queries up front: an event
that cannot merge anyone is applied in memory and written with the rest of the chunk
(profiles/processing_chunk.py), while one that may is resolved one query at a time
(profiles/processing_identities.py). Computed traits are then brought up to date
once per profile per chunk (profiles/processing_traits.py). An identify never
changes consent or subscription status.
"""

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DatabaseError, OperationalError, connection, transaction
from django.db.models import Exists, OuterRef, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from profiles.models import Event, EventType, ProcessingRequest, Profile
from profiles.processing_chunk import (
    EVENT_FIELDS,
    IDENTIFY_FIELDS,
    ChunkEvent,
    EventChunk,
    IdentityTaken,
)
from profiles.processing_identities import (
    EventUnresolvable,
    MergeRefused,
    profile_merge,
)
from profiles.processing_traits import number_coerce, profile_traits_compute
from profiles.processing_writes import among, json_value
from profiles.signals import profiles_changed
from profiles.source_counts import source_hours_add, source_hours_take_off
from profiles.traits import TraitRule, trait_schema_load

__all__ = [
    "EventUnresolvable",
    "MergeRefused",
    "events_process",
    "events_orphans_repair",
    "events_process_again",
    "events_process_pending",
    "events_processing_request",
    "events_processing_request_drop",
    "number_coerce",
    "profile_merge",
    "profile_traits_compute",
]

logger = logging.getLogger(__name__)

EVENT_CHUNK_SIZE = 40000
CHUNK_ATTEMPTS = 3
# A run processes at most this many events, then asks for another run rather than
# hold its worker while a busy site keeps sending.
EVENTS_CATCH_UP_MAX = 120_000
# A run asked for and not begun after this long (its task lost, or the queue busy
# with long work) is asked for again by the next request.
PROCESSING_REQUEST_STALE_SECONDS = 15


def events_processing_request() -> bool:
    """Ask for a processing run; return True if the caller must enqueue its task.

    Called after events are committed. While a run is asked for and not yet begun,
    the answer is False: that run begins after these events were committed, so it
    takes them along. A burst of requests thus costs one task, not one each.
    """
    now = timezone.now()
    fresh_since = now - timedelta(seconds=PROCESSING_REQUEST_STALE_SECONDS)
    # Read first: while a run is asked for, a request writes nothing (the upsert
    # below would lock the row, and commit, for each request of a burst). A run
    # drops the request before it claims, so one still standing here claims later.
    # In SQL of its own: every API request asks, and the ORM's query cost twice
    # the database's answer (0.4 ms against 0.17 ms).
    with connection.cursor() as cursor:
        cursor.execute(
            _REQUEST_STANDING_SQL,
            [connection.ops.adapt_datetimefield_value(fresh_since)],
        )
        if cursor.fetchone() is not None:
            return False
    return _request_set(now, unless_since=fresh_since)


_REQUEST_STANDING_SQL = (
    f"SELECT 1 FROM {ProcessingRequest._meta.db_table} "  # noqa: S608 - the model's
    "WHERE id = 1 AND requested_at >= %s"
)


def _request_set(now: datetime, *, unless_since: datetime | None) -> bool:
    # Set the request's time, unless it was set after `unless_since`; return
    # whether it was set.
    table = ProcessingRequest._meta.db_table
    adapt = connection.ops.adapt_datetimefield_value
    condition = (
        ""
        if unless_since is None
        else (f"WHERE {table}.requested_at IS NULL OR {table}.requested_at < %s ")
    )
    params = [adapt(now)] + ([] if unless_since is None else [adapt(unless_since)])
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (id, requested_at) VALUES (1, %s) "  # noqa: S608
            "ON CONFLICT (id) DO UPDATE SET requested_at = excluded.requested_at "
            f"{condition}RETURNING id",
            params,
        )
        return cursor.fetchone() is not None


def _request_standing() -> bool:
    return ProcessingRequest.objects.filter(pk=1, requested_at__isnull=False).exists()


def events_processing_request_drop() -> None:
    """Forget the request: a run has begun, or its task could not be queued."""
    ProcessingRequest.objects.filter(pk=1).update(requested_at=None)


def events_process() -> int:
    """Process the waiting events as they arrived, in chunks; return how many were.

    One run at a time across all workers. A run that has the turn drops the
    request before it claims anything, so events committed after that ask again;
    after letting go of its turn it looks at the request, and takes the turn again
    if it was asked for meanwhile. A run that finds another one going leaves the
    request standing for it, looks once more (the other may have just let go), and
    ends: no worker process waits, and no task is queued to look again. After
    EVENTS_CATCH_UP_MAX events or RUN_MAX_SECONDS a run queues the next one.
    """
    done, started = 0, time.monotonic()
    schema = trait_schema_load()
    waiting = Event.objects.filter(processed_at__isnull=True)
    while True:
        if not _turn_take():
            _request_set(timezone.now(), unless_since=None)
            if not _turn_take():
                break
        try:
            events_processing_request_drop()
            processed, more = _chunks_process(
                waiting, limit=EVENTS_CATCH_UP_MAX - done, schema=schema
            )
            done += processed
        finally:
            _turn_release()
        spent = time.monotonic() - started
        if more or done >= EVENTS_CATCH_UP_MAX or spent > RUN_MAX_SECONDS:
            if more or _request_standing():
                _next_run_queue()
            break
        if not _request_standing():
            break

    if done:
        logger.info("Events processed: %s", done, extra={"events": done})
    return done


# A run lets go of its worker process after this long, and queues the next run.
RUN_MAX_SECONDS = 60
SQLITE_WRITERS_PAUSE_SECONDS = 0.2


def _next_run_queue() -> None:
    # Queued outright: the request may be standing, and would make
    # events_process_enqueue queue nothing.
    from profiles.tasks import events_process_task  # the tasks module imports this

    try:
        events_process_task.apply_async()
    except Exception:
        logger.warning("Could not queue the next processing run", exc_info=True)


@transaction.atomic
def events_process_again(*, events: QuerySet[Event]) -> int:
    """Mark events to be processed again; return how many.

    Their profiles' computed traits are counted again in full at their next
    refresh: what those profiles keep already counts these events, and adding them
    a second time would count them twice.
    """
    # Locked first, as a chunk locks them before its profiles and counts: a chunk
    # processing them now finishes, and what it counted is then taken off.
    list(events.select_for_update().values_list("pk", flat=True))
    profiles = events.exclude(profile=None).values("profile_id")
    Profile.objects.filter(pk__in=profiles).update(
        engagement_at=None, category_counts=None
    )
    source_hours_take_off(events=events)
    return events.update(processed_at=None, processing_error="")


def events_orphans_repair() -> int:
    """Delete the events whose profile was deleted; return how many.

    The event table keeps no foreign key to profiles (profiles/models.py says why),
    and a profile's delete locks it first, so that events being attached to it go
    with it. Should one still be left behind, the person it belonged to was
    deleted on purpose (an admin's delete, an erasure), and it goes as Django's
    delete would have taken it: processed again, it would make them a profile anew.
    """
    profile_exists = Exists(Profile.objects.filter(pk=OuterRef("profile_id")))
    orphans = Event.objects.exclude(profile=None).exclude(profile_exists)
    count, _ = orphans.delete()
    if count:
        logger.warning(
            "Events whose profile was deleted are deleted", extra={"events": count}
        )
    return count


def events_process_pending(*, limit: int | None = None) -> int:
    """Process unprocessed events as they arrived, at most `limit`; return how many.

    Nothing, if another run is going: that run goes on while events wait.
    """
    if not _turn_take():
        return 0
    try:
        pending = Event.objects.filter(processed_at__isnull=True)
        done, _ = _chunks_process(pending, limit=limit, schema=trait_schema_load())
    finally:
        _turn_release()
    if done:
        logger.info("Events processed: %s", done, extra={"events": done})
    return done


# Runs take turns across all workers. Two chunks in a row touch mostly the same
# people: processed side by side, each would wait for the other's profile locks,
# and lock them in an order that deadlocks (a worker pool of two took five times as
# long as one). The key is any number no other lock uses. A session lock, not a
# transaction's: each chunk commits on its own. A worker that dies loses its
# connection, and the lock with it.
RUN_LOCK_KEY = 0x42E5_0E7E


def _turn_take() -> bool:
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [RUN_LOCK_KEY])
        (taken,) = cursor.fetchone()
    return bool(taken)


def _turn_release() -> None:
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s)", [RUN_LOCK_KEY])


# A chunk stops taking events after this long, and the rest wait for the next one,
# which claims about twice what this one managed. Quick events apply 40,000 to a
# chunk well within it; a merge takes some 30 ms, and a backlog of merges would
# otherwise be one transaction of minutes, holding its people's profiles (a
# Shopify delivery for one of them failed) and keeping new events waiting.
CHUNK_APPLY_SECONDS = 1.0
CHUNK_SIZE_MIN = 100


@dataclass(frozen=True)
class _ChunkDone:
    processed: int
    full: bool  # as many claimed as asked for, or stopped early: more may wait
    cut: bool  # stopped early, by CHUNK_APPLY_SECONDS


def _chunks_process(
    pending: QuerySet[Event], *, limit: int | None, schema: dict[str, TraitRule]
) -> tuple[int, bool]:
    """Process chunks until one comes back short or `limit` events are done.

    Return how many were done, and whether more may be waiting (the limit was
    reached). `schema` is read once per run by the caller, not once per event.
    """
    done, size = 0, EVENT_CHUNK_SIZE
    while limit is None or done < limit:
        wanted = size if limit is None else min(size, limit - done)
        chunk = _chunk_done(pending, size=wanted, schema=schema)
        done += chunk.processed
        if not chunk.full:
            return done, False
        if connection.vendor != "postgresql":
            # SQLite has one writer: let the API's requests write between chunks.
            time.sleep(SQLITE_WRITERS_PAUSE_SECONDS)
        if chunk.cut:
            size = max(CHUNK_SIZE_MIN, 2 * chunk.processed)
        else:
            size = min(EVENT_CHUNK_SIZE, 2 * size)
    return done, True


def _chunk_done(
    pending: QuerySet[Event], *, size: int, schema: dict[str, TraitRule]
) -> _ChunkDone:
    try:
        return _chunk_redone_if_raced(pending, size=size, schema=schema)
    except OperationalError:
        raise
    except DatabaseError:
        # A write the database refused for one event's sake rolled the whole chunk
        # back: done again one event at a time, only that event fails, and the
        # events behind it are not held up.
        logger.exception("Event chunk failed; its events are processed one by one")
        return _chunk_one_by_one(pending, size=size, schema=schema)


def _chunk_redone_if_raced(
    pending: QuerySet[Event], *, size: int, schema: dict[str, TraitRule]
) -> _ChunkDone:
    for _ in range(CHUNK_ATTEMPTS - 1):
        try:
            return _chunk_process(pending, size=size, schema=schema)
        except IdentityTaken:
            # Rolled back whole; the other worker's ids are committed by now, so
            # the next attempt sees them.
            logger.warning(
                "Event chunk redone: another writer changed whose its ids are first"
            )
    return _chunk_process(pending, size=size, schema=schema)


def _chunk_one_by_one(
    pending: QuerySet[Event], *, size: int, schema: dict[str, TraitRule]
) -> _ChunkDone:
    ids = list(
        pending.order_by("received_at", "timestamp", "id").values_list("pk", flat=True)[
            :size
        ]
    )
    failures: list[tuple[int, DatabaseError]] = []
    for event_id in ids:
        try:
            _chunk_redone_if_raced(pending.filter(pk=event_id), size=1, schema=schema)
        except OperationalError:
            raise
        except DatabaseError as exc:
            logger.exception("Event processing failed", extra={"event": event_id})
            failures.append((event_id, exc))
    if len(failures) > 1 and len(failures) == len(ids):
        # Not one event went through: the fault is not theirs (a table, a
        # deployment), and they wait unprocessed, as before, until it is mended.
        raise failures[0][1]
    for event_id, exc in failures:
        _event_failed(event_id, f"{type(exc).__name__}: {exc}"[:500])
    return _ChunkDone(processed=len(ids), full=len(ids) == size, cut=False)


def _event_failed(event_id: int, error: str) -> None:
    # Marked processed with its error, as an event that fails in Python is, so the
    # sweep moves on; "Process again" in the admin retries it after a fix.
    marked = Event.objects.filter(pk=event_id, processed_at__isnull=True).update(
        processed_at=timezone.now(), processing_error=error
    )
    if marked:
        source_hours_add(event_ids=[event_id])


@transaction.atomic
def _chunk_process(
    pending: QuerySet[Event], *, size: int, schema: dict[str, TraitRule]
) -> _ChunkDone:
    events = _chunk_claim(pending, size=size)
    if not events:
        return _ChunkDone(processed=0, full=False, cut=False)

    chunk = EventChunk(events=events, schema=schema)
    failed: dict[int, str] = {}
    started, cut = time.monotonic(), False
    for count, event in enumerate(events):
        if count and time.monotonic() - started > CHUNK_APPLY_SECONDS:
            # The rest stay unprocessed; their row locks go with this transaction.
            events, cut = events[:count], True
            break
        try:
            chunk.apply(event)
        except (OperationalError, IdentityTaken):
            # Transient (a deadlock, a lost connection, a race for a new id): roll
            # the chunk back whole and do it again.
            raise
        except Exception as exc:
            logger.exception("Event processing failed", extra={"event": event.pk})
            failed[event.pk] = f"{type(exc).__name__}: {exc}"[:500]

    attached = chunk.finish(events=events, failed=failed)
    _profiles_changed_announce(attached, merged_into=chunk.merged_into)
    full = cut or len(events) == size
    return _ChunkDone(processed=len(events), full=full, cut=cut)


def _chunk_claim(pending: QuerySet[Event], *, size: int) -> list[ChunkEvent]:
    # Runs take turns; skip_locked still leaves alone a row some other transaction
    # holds. The locks last until this transaction marks the rows processed. Events are
    # claimed in the order they arrived, and only their ids are sorted and locked
    # (a long backlog then costs a narrow sort, not one of whole rows); the chunk
    # is applied in the order its events happened, as far as one chunk can tell.
    claimed = pending.select_for_update(skip_locked=True, of=("self",))
    ids = claimed.order_by("received_at", "timestamp", "id").values("pk")[:size]
    rows = Event.objects.filter(pk__in=ids).order_by("timestamp", "id")
    with _bitmap_scans_off():
        events = [ChunkEvent(*row) for row in rows.values_list("pk", *EVENT_FIELDS)]
    _identify_fields_read(events)
    return events


@contextmanager
def _bitmap_scans_off() -> Iterator[None]:
    # The unprocessed-events index keeps an entry for each event processed since the
    # table was last vacuumed. A bitmap scan of it visits every one of their rows,
    # at each claim: at 200,000 events, 9 of a claim's 14 ms. An index scan marks
    # the dead entries it meets, and the next claims step over them.
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_bitmapscan = off")
    yield
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_bitmapscan TO DEFAULT")


def _identify_fields_read(events: list[ChunkEvent]) -> None:
    # The other events' traits and context (a page's or a track's context is most
    # of its row) and times would be decoded for nothing.
    identifies = {
        event.pk: event for event in events if event.type == EventType.IDENTIFY
    }
    if not identifies:
        return

    # The JSON columns are read as text and decoded with orjson: Django's json
    # decoding of each identify's traits and context was a tenth of a chunk's Python.
    found = Event.objects.filter(pk__in=among(identifies, of="bigint")).annotate(
        **{column: Cast(name, TextField()) for name, column in _AS_TEXT.items()}
    )
    columns = [_AS_TEXT.get(name, name) for name in IDENTIFY_FIELDS]
    for pk, *values in found.values_list("pk", *columns):
        event = identifies[pk]
        for name, value in zip(IDENTIFY_FIELDS, values, strict=True):
            setattr(event, name, json_value(value) if name in _AS_TEXT else value)


_AS_TEXT = {"traits": "traits_text", "context": "context_text"}


# Any processed event can move computed traits (last seen, engagement, orders...).
METRIC_WORDS = frozenset(
    f"metric:{name}"
    for name in (
        "lifetime_value",
        "order_count",
        "average_order_value",
        "engagement_score",
        "favourite_category",
        "first_order_at",
        "last_order_at",
        "last_seen_at",
        "last_opened_at",
        "last_clicked_at",
    )
)


def _profiles_changed_announce(
    rows: list[tuple[int, str, str]], *, merged_into: set[int]
) -> None:
    """After commit, say which profiles changed and what about them (segments listen).

    `rows` are the (profile pk, type, event name) of the chunk's attached events;
    `merged_into` the profiles others were merged into, whatever event merged them
    (a track that names a userId and an anonymousId does too): they took over tags,
    fields and memberships, so every segment reads them again.
    """
    identified: set[int] = set(merged_into)
    tracked: set[int] = set()
    changed = set(METRIC_WORDS)
    for profile_id, kind, name in rows:
        if kind in (EventType.IDENTIFY, EventType.ALIAS, EventType.GROUP):
            # Fields, traits and merges: cheaper to re-check every segment than to
            # trace each field an identify touched.
            identified.add(profile_id)
        else:
            tracked.add(profile_id)
            if name:
                changed.add(f"event:{name}")

    def announce() -> None:
        if identified:
            profiles_changed.send(
                sender=Event, profile_ids=sorted(identified), changed=None
            )
        if tracked - identified:
            profiles_changed.send(
                sender=Event, profile_ids=sorted(tracked - identified), changed=changed
            )

    transaction.on_commit(announce)
