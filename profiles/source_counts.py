"""Each source's processed events and applied deliveries, by the hour they arrived.

The Sources page shows each feed's volume, failures, last success and lag. Counted
from the event and delivery tables, they cost scans of everything a site and a shop
ever sent, on every page view: 3,000,000 events and 3,000,000 deliveries took the
page over 5 seconds. They are counted in SourceHour instead, as they are done:

- a chunk of events on PostgreSQL in the statement that marks it processed
  (profiles/processing_writes.py), any other through source_hours_add;
- a webhook delivery through delivery_counted, as it is applied or refused.

An event marked to be processed again is taken off first, so each counts once.
source_hours_rebuild counts everything again from the tables, for an operator who
changed rows by hand (`manage.py source_hours_rebuild`).

The tracking API's duplicates (items whose messageId was stored already) are no
rows anywhere: duplicates_count adds them as they arrive, and a recount keeps them.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Count, F, Max, Min, Q, QuerySet, Value
from django.db.models.functions import Greatest, TruncHour

from profiles.models import (
    PAYLOAD_REFUSED,
    Event,
    SourceHour,
    SourceUnit,
    WebhookDelivery,
)
from profiles.refusals import refusal_hour

logger = logging.getLogger(__name__)


@dataclass
class _Hour:
    done: int = 0
    failed: int = 0
    noted: int = 0
    last_succeeded_at: datetime | None = None
    first_id: int | None = None

    def add(self, pk: int, received_at: datetime, *, failed: bool, noted: bool) -> None:
        self.done += 1
        self.failed += failed
        self.noted += noted
        if not failed:
            self.last_succeeded_at = _latest(self.last_succeeded_at, received_at)
        self.first_id = pk if self.first_id is None else min(pk, self.first_id)


_Key = tuple[str, str, datetime]  # source, unit, hour


@transaction.atomic
def source_hours_add(*, event_ids: list[int]) -> None:
    """Count these events, just marked processed, by their source and hour."""
    rows = Event.objects.filter(pk__in=event_ids, processed_at__isnull=False)
    found = rows.values_list("pk", "source", "received_at", "processing_error")
    _hours_add(_event_hours(found))


def _event_hours(rows: Iterable[tuple[int, str, datetime, str]]) -> dict[_Key, _Hour]:
    hours: dict[_Key, _Hour] = {}
    for pk, source, received_at, error in rows:
        key = (source, SourceUnit.EVENTS, refusal_hour(received_at))
        hours.setdefault(key, _Hour()).add(
            pk, received_at, failed=bool(error), noted=False
        )
    return hours


@transaction.atomic
def delivery_counted(*, delivery: WebhookDelivery, error: str) -> None:
    """Count a webhook delivery just finished with `error` (empty, a note, a refusal)."""
    hour = _Hour()
    refused = error.startswith(PAYLOAD_REFUSED)
    noted = bool(error) and not refused
    hour.add(delivery.pk, delivery.received_at, failed=refused, noted=noted)
    key = (delivery.source, SourceUnit.DELIVERIES, refusal_hour(delivery.received_at))
    _hours_add({key: hour})


def _hours_add(hours: dict[_Key, _Hour]) -> None:
    # In the order every writer locks them: two never wait on each other.
    for key in sorted(hours):
        source, unit, hour = key
        added = hours[key]
        locked = SourceHour.objects.select_for_update()
        row, _ = locked.get_or_create(source=source, unit=unit, hour=hour)
        row.done += added.done
        row.failed += added.failed
        row.noted += added.noted
        row.last_succeeded_at = _latest(row.last_succeeded_at, added.last_succeeded_at)
        if row.first_id is None or added.first_id < row.first_id:
            row.first_id = added.first_id
        row.save(
            update_fields=["done", "failed", "noted", "last_succeeded_at", "first_id"]
        )


def duplicates_count(*, source: str, at: datetime, count: int) -> None:
    """Count items a tracking request sent again, by its source and hour.

    Called once the request's events are committed. Never raises: the sender has
    its answer, and a count lost is only a figure on the Sources page.
    """
    fields = {"source": source, "unit": SourceUnit.EVENTS, "hour": refusal_hour(at)}
    added = {"duplicates": F("duplicates") + count}
    try:
        with transaction.atomic():
            if SourceHour.objects.filter(**fields).update(**added):
                return
            try:
                with transaction.atomic():
                    SourceHour.objects.create(**fields, duplicates=count)
            except IntegrityError:
                # Processing or another request began the hour first.
                SourceHour.objects.filter(**fields).update(**added)
    except DatabaseError:
        logger.warning(
            "Duplicates could not be counted", exc_info=True, extra={"source": source}
        )


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
        counted = SourceHour.objects.filter(
            source=row["source"], unit=SourceUnit.EVENTS, hour=row["hour"]
        )
        # Never below nothing: an hour counted short (rows changed by hand) stays
        # as near the truth as it can.
        counted.update(
            done=Greatest(F("done") - row["n"], 0),
            failed=Greatest(F("failed") - row["failed"], 0),
        )


@transaction.atomic
def source_hours_rebuild() -> int:
    """Count everything done again from the event and delivery tables; return the hours."""
    if connection.vendor == "postgresql":
        # Writers that count meanwhile wait, and then count on top of the new rows
        # only what this count could not see.
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE profiles_sourcehour IN EXCLUSIVE MODE")
    # Counted as they arrived, in no table: kept as they are.
    duplicates = {
        (source, unit, hour): count
        for source, unit, hour, count in SourceHour.objects.filter(
            duplicates__gt=0
        ).values_list("source", "unit", "hour", "duplicates")
    }
    SourceHour.objects.all().delete()

    failed = ~Q(processing_error="")
    events = _grouped(Event.objects.all(), failed=failed, noted=None)
    refused = Q(error__startswith=PAYLOAD_REFUSED)
    deliveries = _grouped(
        WebhookDelivery.objects.all(), failed=refused, noted=~Q(error="") & ~refused
    )
    rows = [
        *(SourceHour(unit=SourceUnit.EVENTS, **row) for row in events),
        *(SourceHour(unit=SourceUnit.DELIVERIES, **row) for row in deliveries),
    ]
    for row in rows:
        row.duplicates = duplicates.pop((row.source, row.unit, row.hour), 0)
    rows += [
        SourceHour(source=source, unit=unit, hour=hour, duplicates=count)
        for (source, unit, hour), count in duplicates.items()
    ]
    SourceHour.objects.bulk_create(rows, batch_size=2000)
    logger.info("Source hours counted again", extra={"hours": len(rows)})
    return len(rows)


def _grouped(rows: QuerySet, *, failed: Q, noted: Q | None) -> QuerySet:
    return (
        rows.filter(processed_at__isnull=False)
        .annotate(hour=TruncHour("received_at", tzinfo=UTC))
        .values("source", "hour")
        .annotate(
            done=Count("id"),
            failed=Count("id", filter=failed),
            noted=Value(0) if noted is None else Count("id", filter=noted),
            last_succeeded_at=Max("received_at", filter=~failed),
            first_id=Min("id"),
        )
        .order_by()
    )
