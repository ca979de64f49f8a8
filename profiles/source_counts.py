"""Each source's processed events, counted by the hour they arrived (SourceHour).

The Sources page shows each feed's volume, failures, last success and lag. Counted
from the event table, they cost scans of every event a site ever sent, on every page
view: 3,000,000 events took the page 3.7 seconds. Processing counts each chunk's
events here instead, in the chunk's transaction, as it marks them processed; an
event marked to be processed again is taken off first, so each counts once.

source_hours_rebuild counts everything again from the event table, for an operator
who changed events by hand (`manage.py source_hours_rebuild`).
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connection, transaction
from django.db.models import Count, F, Max, Min, Q, QuerySet
from django.db.models.functions import TruncHour

from profiles.models import Event, SourceHour

logger = logging.getLogger(__name__)


@transaction.atomic
def source_hours_add(*, event_ids: list[int]) -> None:
    """Count these events, just marked processed, by their source and hour.

    A chunk on PostgreSQL counts its events in the statement that marks them
    (profiles/processing_writes.py); this counts the rest: the embedded SQLite's
    chunks, and an event marked failed on its own.
    """
    rows = Event.objects.filter(pk__in=event_ids, processed_at__isnull=False)
    found = rows.values_list("pk", "source", "received_at", "processing_error")
    # In the order every writer locks them: two never wait on each other.
    for key, hour in sorted(_hours(found).items()):
        _hour_add(key, hour)


@dataclass
class _Hour:
    events: int = 0
    failed: int = 0
    last_succeeded_at: datetime | None = None
    first_event_id: int | None = None


def _hours(
    rows: Iterable[tuple[int, str, datetime, str]],
) -> dict[tuple[str, datetime], _Hour]:
    hours: dict[tuple[str, datetime], _Hour] = {}
    for pk, source, received_at, error in rows:
        hour = hours.setdefault((source, source_hour(received_at)), _Hour())
        hour.events += 1
        if error:
            hour.failed += 1
        else:
            hour.last_succeeded_at = _latest(hour.last_succeeded_at, received_at)
        hour.first_event_id = min(pk, hour.first_event_id or pk)
    return hours


def _hour_add(key: tuple[str, datetime], added: _Hour) -> None:
    source, hour = key
    locked = SourceHour.objects.select_for_update()
    row, _ = locked.get_or_create(source=source, hour=hour)
    row.events += added.events
    row.failed += added.failed
    row.last_succeeded_at = _latest(row.last_succeeded_at, added.last_succeeded_at)
    if added.first_event_id is not None:
        row.first_event_id = min(added.first_event_id, row.first_event_id or 1 << 62)
    row.save(update_fields=["events", "failed", "last_succeeded_at", "first_event_id"])


def source_hour(at: datetime) -> datetime:
    """Return the start of the UTC hour that `at` falls in."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


def source_hours_take_off(*, events: QuerySet[Event]) -> None:
    """Uncount the processed ones of these events: they are to be processed again.

    Their last success stays: it says when the feed last worked, which it did.
    """
    processed = events.filter(processed_at__isnull=False)
    grouped = (
        processed.annotate(hour=TruncHour("received_at", tzinfo=UTC))
        .values("source", "hour")
        .annotate(n=Count("id"), failed=Count("id", filter=~Q(processing_error="")))
        .order_by("source", "hour")
    )
    for row in grouped:
        counted = SourceHour.objects.filter(source=row["source"], hour=row["hour"])
        counted.filter(events__gte=row["n"], failed__gte=row["failed"]).update(
            events=F("events") - row["n"], failed=F("failed") - row["failed"]
        )


@transaction.atomic
def source_hours_rebuild() -> int:
    """Count every processed event again from the event table; return the hours kept."""
    if connection.vendor == "postgresql":
        # Chunks that count meanwhile wait, and then count on top of the new rows
        # only what this count could not see.
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE profiles_sourcehour IN EXCLUSIVE MODE")
    SourceHour.objects.all().delete()

    counted = (
        Event.objects.filter(processed_at__isnull=False)
        .annotate(hour=TruncHour("received_at", tzinfo=UTC))
        .values("source", "hour")
        .annotate(
            events=Count("id"),
            failed=Count("id", filter=~Q(processing_error="")),
            last_succeeded_at=Max("received_at", filter=Q(processing_error="")),
            first_event_id=Min("id"),
        )
        .order_by()
    )
    rows = SourceHour.objects.bulk_create(
        (SourceHour(**row) for row in counted), batch_size=2000
    )
    logger.info("Source hours counted again", extra={"hours": len(rows)})
    return len(rows)
