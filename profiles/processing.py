"""Event processing: identity resolution, profile upserts, merges, computed traits.

Events are processed in chunks, oldest first. A chunk is claimed under row locks
(skipping rows another worker holds) and processed in one transaction that attaches
each event to its profile and marks the chunk processed. The chunk's identities,
email owners and profiles are read with a few queries up front: an event that
cannot merge anyone is applied in memory and written with the rest of the chunk
(profiles/processing_chunk.py), while one that may is resolved one query at a time
(profiles/processing_identities.py). Computed traits are then brought up to date
once per profile per chunk (profiles/processing_traits.py). An identify never
changes consent or subscription status.
"""

import logging

from django.db import OperationalError, transaction
from django.db.models import QuerySet

from profiles.models import Event, EventType
from profiles.processing_chunk import EventChunk, IdentityTaken
from profiles.processing_identities import (
    EventUnresolvable,
    MergeRefused,
    profile_merge,
)
from profiles.processing_traits import number_coerce, profile_traits_compute
from profiles.signals import profiles_changed
from profiles.traits import TraitRule, trait_schema_load

__all__ = [
    "EventUnresolvable",
    "MergeRefused",
    "events_process",
    "events_process_pending",
    "number_coerce",
    "profile_merge",
    "profile_traits_compute",
]

logger = logging.getLogger(__name__)

EVENT_CHUNK_SIZE = 1000
CHUNK_ATTEMPTS = 3
# What processing reads of an event; properties are left to the SQL of the traits.
EVENT_FIELDS_READ = (
    "message_id",
    "type",
    "event",
    "user_id",
    "anonymous_id",
    "previous_id",
    "profile_id",
    "traits",
    "context",
    "source",
    "timestamp",
    "received_at",
)


def events_process(*, event_ids: list[int]) -> int:
    """Process the given events that are still unprocessed; return how many were."""
    pending = Event.objects.filter(pk__in=event_ids, processed_at__isnull=True)
    return _events_process_queryset(pending, limit=len(event_ids))


def events_process_pending(*, limit: int | None = None) -> int:
    """Process unprocessed events oldest first, at most `limit`; return how many."""
    pending = Event.objects.filter(processed_at__isnull=True)
    return _events_process_queryset(pending, limit=limit)


def _events_process_queryset(pending: QuerySet[Event], *, limit: int | None) -> int:
    # The schema is read once for the whole run, not once per event.
    schema = trait_schema_load()
    done = 0
    while limit is None or done < limit:
        size = (
            EVENT_CHUNK_SIZE if limit is None else min(EVENT_CHUNK_SIZE, limit - done)
        )
        processed = _chunk_redone_if_raced(pending, size=size, schema=schema)
        if processed == 0:
            break
        done += processed

    if done:
        logger.info("Events processed: %s", done, extra={"events": done})
    return done


def _chunk_redone_if_raced(
    pending: QuerySet[Event], *, size: int, schema: dict[str, TraitRule]
) -> int:
    for _ in range(CHUNK_ATTEMPTS - 1):
        try:
            return _chunk_process(pending, size=size, schema=schema)
        except IdentityTaken:
            # Rolled back whole; the other worker's ids are committed by now, so
            # the next attempt sees them.
            logger.warning("Event chunk redone: another worker linked its ids first")
    return _chunk_process(pending, size=size, schema=schema)


@transaction.atomic
def _chunk_process(
    pending: QuerySet[Event], *, size: int, schema: dict[str, TraitRule]
) -> int:
    # skip_locked lets two workers share the backlog without taking the same rows;
    # the locks last until this transaction marks the rows processed.
    claimed = pending.select_for_update(skip_locked=True, of=("self",))
    events = list(claimed.only(*EVENT_FIELDS_READ).order_by("timestamp", "id")[:size])
    if not events:
        return 0

    chunk = EventChunk(events=events, schema=schema)
    failed: dict[int, str] = {}
    for event in events:
        try:
            chunk.apply(event)
        except (OperationalError, IdentityTaken):
            # Transient (a deadlock, a lost connection, a race for a new id): roll
            # the chunk back whole and do it again.
            raise
        except Exception as exc:
            logger.exception("Event processing failed", extra={"event": event.pk})
            failed[event.pk] = f"{type(exc).__name__}: {exc}"[:500]

    chunk.finish(events=events, failed=failed)
    _profiles_changed_announce([event.pk for event in events])
    return len(events)


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


def _profiles_changed_announce(event_ids: list[int]) -> None:
    """After commit, say which profiles changed and what about them (segments listen)."""
    rows = Event.objects.filter(pk__in=event_ids, profile__isnull=False).values_list(
        "profile_id", "type", "event"
    )
    identified: set[int] = set()
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
