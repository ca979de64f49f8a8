"""Reads for the data-health pages: how each source feeds Bespoke, and trait schema fit.

Everything here returns plain dicts and lists. Volumes, lags and rejection groups are
aggregated in SQL; no selector loads a source's events to count them.
"""

import statistics
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from time import monotonic
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Max,
    Min,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Coalesce, TruncDay, TruncHour
from django.utils import timezone

from profiles.importing.runs import contact_import_idle_seconds
from profiles.models import (
    AWAITS_ORDER,
    PAYLOAD_REFUSED,
    ContactImport,
    Event,
    ImportStatus,
    Profile,
    RefusedRequest,
    RejectedEvent,
    SourceHour,
    SourceUnit,
    TraitDefinition,
    WebhookDelivery,
    WriteKey,
)
from profiles.refusals import SOURCE_ESP, SOURCE_NO_KEY, refusal_hour
from profiles.shopify import SOURCE as SOURCE_SHOPIFY
from profiles.traits import (
    BESPOKE_FLAGS,
    TraitInvalid,
    TraitRule,
    trait_coerce,
    trait_untyped,
    trait_value_same,
)

VOLUME_HOURS = 48
VOLUME_DAYS = 30
LAG_WINDOW_SECONDS = 60 * 60
BACKLOG_WARNING_SECONDS = 5 * 60
REJECTIONS_WINDOW_DAYS = 30
FAILED_EVENTS_SHOWN = 5
# Only SQLite needs a sample to take a median in Python; PostgreSQL does it in SQL.
LAG_SAMPLE_MAX = 10_000

SOURCE_SETTINGS = "segment:settings"
# The webhook feeds, each shown as one source: what they sent is deliveries, and
# their deliveries and events carry the name as a prefix ("esp:mailgun").
WEBHOOK_SOURCES = {
    SOURCE_SHOPIFY: "Shopify webhooks",
    SOURCE_ESP: "ESP tracking webhooks (bounces, complaints, opens, clicks)",
}
SOURCE_IMPORTS = "imports"

# RejectedEvent rows are of two kinds. Most say an item was refused and not stored
# (profiles/ingestion.py, ItemRejected). These codes instead report something about
# an event that WAS stored and applied: ingestion's warnings (an email trait that is
# no address, an order amount that will not add to lifetime value as sent) and
# processing's notices (profiles/processing_identities.py, processing_identify.py).
NOTICE_CODES = (
    "invalid_email_trait",
    "order_amount_unreadable",
    "order_amount_too_large",
    "order_amount_too_small",
    "order_amount_negative",
    "order_currency_other",
    "order_id_missing",
    "refund_currency_other",
    "refund_amount_unreadable",
    "refund_amount_too_small",
    "sent_at_unreadable",
    "timestamp_ahead",
    "merge_refused",
    "email_taken",
    "email_not_changed",
)
# A declared trait's value that was left out: "trait_invalid:<reason>".
NOTICE_CODE_PREFIXES = ("trait_invalid:",)

TRAIT_CHECK_CHUNK = 2000
TRAIT_CHECK_MAX_VALUES = 200_000
# The whole check's time, on top of each value's own pattern limit: a pattern that
# backtracks takes that limit on every value, and 400 of them held the page 20 s.
TRAIT_CHECK_BUDGET_SECONDS = 2
TRAIT_EXAMPLES_SHOWN = 5


class _Median(Aggregate):
    """PostgreSQL's continuous median of an ordered set."""

    function = "percentile_cont"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = DurationField()


# Each feed's unit, and what the page calls one of them ("1 event").
UNIT_ONE = {"events": "event", "deliveries": "delivery", "rows": "row"}


@dataclass(frozen=True)
class _Feed:
    """Where one source's rows live and which of their fields tell their story."""

    rows: QuerySet
    arrived: str
    done: str
    unit: str
    # Where the wait that lag measures starts, when not at arrival.
    waited_from: str = ""
    # Which processed rows went through: "last success" is the latest of them.
    succeeded: Q = field(default_factory=Q)
    # Which SourceHour rows count the feed's rows by the hour they arrived, once
    # done: read instead of the feed's table (profiles/source_counts.py).
    hours: Q = field(default_factory=Q)
    # Which unfinished rows wait for the workers: a refund that came before its
    # order waits for the shop, not for them.
    pending: Q = field(default_factory=Q)


# Sources ------------------------------------------------------------------------


def sources_health(*, now: datetime | None = None) -> list[dict[str, Any]]:
    """Return the health of every source: tracking write keys, the shop and imports."""
    now = now or timezone.now()
    sources = [
        _event_source_health(name=name, label=label, now=now)
        for name, label in _event_sources(now=now)
    ]
    sources.append(_import_health(now=now))
    return sources


def _event_sources(*, now: datetime) -> list[tuple[str, str]]:
    # The source name is what ingestion writes on each Event: "segment:<key name>".
    named: dict[str, str] = {}
    for key_name in WriteKey.objects.order_by("name").values_list("name", flat=True):
        named.setdefault(f"segment:{key_name}"[:100], f"Write key “{key_name}”")
    if settings.BESPOKE_WRITE_KEYS:
        named.setdefault(SOURCE_SETTINGS, "Write keys from settings")

    # Sources seen lately that no key names any more (a renamed or deleted key).
    since = now - timedelta(days=VOLUME_DAYS)
    counted = SourceHour.objects.filter(
        unit=SourceUnit.EVENTS, hour__gte=refusal_hour(since)
    )
    waiting = Event.objects.filter(processed_at__isnull=True, received_at__gte=since)
    refused = RejectedEvent.objects.filter(received_at__gte=since).values_list(
        "source", flat=True
    )
    refused_whole = RefusedRequest.objects.filter(hour__gte=since).values_list(
        "source", flat=True
    )
    sources = {
        *counted.values_list("source", flat=True).distinct(),
        *waiting.values_list("source", flat=True).distinct(),
        *refused.distinct(),
    }
    for source in sorted(sources | set(refused_whole.distinct())):
        if source == SOURCE_NO_KEY:
            named.setdefault(source, "Requests without a valid write key")
        elif not _webhook_source(source):
            named.setdefault(source, source or "(no source)")

    named.update(WEBHOOK_SOURCES)
    return list(named.items())


def _webhook_source(source: str) -> str | None:
    return next((name for name in WEBHOOK_SOURCES if source.startswith(name)), None)


def _source_filter(name: str) -> Q:
    # A webhook feed's rows carry its name as a prefix (the shop's domain, the ESP).
    if name in WEBHOOK_SOURCES:
        return Q(source__startswith=name)
    return Q(source=name)


def _event_source_health(*, name: str, label: str, now: datetime) -> dict[str, Any]:
    where = _source_filter(name)
    feed = _Feed(
        rows=Event.objects.filter(where),
        arrived="received_at",
        done="processed_at",
        unit="events",
        succeeded=Q(processing_error=""),
        hours=where & Q(unit=SourceUnit.EVENTS),
    )
    webhook = name in WEBHOOK_SOURCES
    if webhook:
        # What the shop or ESP sent is deliveries; the events made of them come after.
        feed = _Feed(
            rows=WebhookDelivery.objects.filter(where),
            arrived="received_at",
            done="processed_at",
            unit="deliveries",
            succeeded=~Q(error__startswith=PAYLOAD_REFUSED),
            hours=where & Q(unit=SourceUnit.DELIVERIES),
            pending=~Q(error__startswith=AWAITS_ORDER),
        )
    rows = RejectedEvent.objects.filter(where)
    refused, notices = rows.exclude(_is_notice()), rows.filter(_is_notice())

    health = _feed_health(feed=feed, now=now)
    events_waiting = None
    if webhook:
        events_waiting = _backlog(
            Event.objects.filter(where, processed_at__isnull=True),
            arrived="received_at",
            now=now,
        )
        # A delivery is done once its events are stored; their wait for the workers,
        # from the delivery's arrival, is the feed's too: with the workers stopped,
        # an order waits while every delivery reads as done in a second.
        health["longest_wait"] = _longest_wait(
            health["lag"], _older(health["unprocessed"], events_waiting)
        )
    health.update(
        name=name,
        label=label,
        # Requests that named no valid key: refused, so counted and nothing else.
        kind="no_key" if name == SOURCE_NO_KEY else "events",
        rejections=_rejections_by_code(refused, now=now),
        rejected_last_hour=_items_count(
            refused.filter(received_at__gte=now - timedelta(seconds=LAG_WINDOW_SECONDS))
        ),
        notices=_rejections_by_code(notices, now=now),
        failed=(
            _failed_deliveries(where) if webhook else _failed_events(feed.rows, where)
        ),
        events_failed=_events_failed_count(where) if webhook else None,
        # The events a shop's or ESP's deliveries made wait for the workers too.
        events_unprocessed=events_waiting,
        webhook_notes=_webhook_notes(where) if webhook else None,
        awaiting_orders=_awaiting_orders(where) if webhook else None,
        duplicates=None if webhook else _duplicates(where, now=now),
        refused_requests=_refused_requests(name, now=now),
        refused_recent=_refused_recent(name, now=now),
        refused_recent_since=_refused_recent_since(now),
        # Every delivery is refused before anything is stored: only this says so.
        unconfigured=(
            (name == SOURCE_SHOPIFY and not settings.BESPOKE_SHOPIFY_WEBHOOK_SECRETS)
            or (name == SOURCE_ESP and not settings.ANYMAIL.get("WEBHOOK_SECRET"))
        ),
    )
    return _with_warnings(health)


def _import_health(*, now: datetime) -> dict[str, Any]:
    feed = _Feed(
        rows=ContactImport.objects.all(),
        arrived="created_at",
        done="finished_at",
        unit="rows",
        # The worker's lag: not the time the marketer took to map the columns.
        waited_from="queued_at",
    )
    health = _feed_health(feed=feed, now=now, volume=Sum("records"))
    # Waiting counts from the hand-over to the worker: an upload mapped a day
    # later has not kept the worker waiting a day.
    queued = _imports_queued().annotate(
        waiting_since=Coalesce("queued_at", "created_at")
    )
    health["unprocessed"] = _backlog(queued, arrived="waiting_since", now=now)
    # So is the longest wait: an upload no one has started keeps nobody waiting.
    health["longest_wait"] = _longest_wait(health["lag"], health["unprocessed"])
    health.update(
        name=SOURCE_IMPORTS,
        label="Contact imports",
        kind="imports",
        rejections=_import_rejections_by_reason(now=now, fields=False),
        notices=_import_rejections_by_reason(now=now, fields=True),
        rejected_last_hour=_import_rejected_since(
            now - timedelta(seconds=LAG_WINDOW_SECONDS)
        ),
        failed=_failed_imports(),
        stalled=_imports_stalled(now=now),
        webhook_notes=None,
        events_failed=None,
        last_received_at=feed.rows.filter(status=ImportStatus.DONE).aggregate(
            at=Max("finished_at")
        )["at"],
    )
    return _with_warnings(health)


# A running import whose worker made no progress for this long is named, as its
# own page names it: a worker that died leaves it running until the beat sweep
# marks it failed (IMPORT_STUCK_AFTER_SECONDS later), and nothing else says so.
IMPORT_STALLED_SECONDS = 60


def _imports_stalled(*, now: datetime) -> list[dict[str, Any]]:
    stalled = []
    running = ContactImport.objects.filter(status=ImportStatus.RUNNING)
    for contact_import in running.order_by("started_at", "pk"):
        idle = contact_import_idle_seconds(contact_import, now=now)
        if idle is not None and idle >= IMPORT_STALLED_SECONDS:
            stalled.append({"contact_import": contact_import, "idle_seconds": idle})
    return stalled


def _imports_queued() -> QuerySet:
    """Return the imports waiting for the worker: mapped (or run again), not running.

    An upload whose columns are not mapped yet waits for the marketer, and a
    running import is the sweep's to watch; neither says the worker is down.
    """
    handed_over = ~Q(column_map={}) | Q(started_at__isnull=False)
    return ContactImport.objects.filter(handed_over, status=ImportStatus.PENDING)


def _with_warnings(health: dict[str, Any]) -> dict[str, Any]:
    # A shop's deliveries are applied as they arrive; the events made of them wait
    # for the workers, and are what a stopped worker leaves waiting.
    waiting = [("unprocessed", health["unit"], health["unit_one"])]
    if health.get("events_unprocessed"):
        waiting.append(
            ("events_unprocessed", "events made of them", "event made of them")
        )
    late = [
        (health[key]["count"], many, one)
        for key, many, one in waiting
        if (health[key]["oldest_age_seconds"] or 0) > BACKLOG_WARNING_SECONDS
    ]
    health["rejections_warning"] = health["rejected_last_hour"] > 0
    health["refused_warning"] = health.get("refused_recent", 0) > 0
    health["backlog_warning"] = bool(late)
    health["backlog_waiting"] = " and ".join(
        f"{count} {one if count == 1 else many}" for count, many, one in late
    )
    return health


# Volume, lag and backlog, shared by events and imports ------------------------------


def _feed_health(
    *, feed: _Feed, now: datetime, volume: Aggregate | None = None
) -> dict[str, Any]:
    volume = volume or Count("id")
    hour, day = timedelta(hours=1), timedelta(days=1)
    if feed.hours:
        by_hour = _hours(feed, since=_floor(now, day) - day * (VOLUME_DAYS - 1))
        hourly_counts, daily_counts = by_hour, _days(by_hour)
    else:
        hourly_counts = _counted(
            feed, trunc=TruncHour, step=hour, now=now, n=VOLUME_HOURS, volume=volume
        )
        daily_counts = _counted(
            feed, trunc=TruncDay, step=day, now=now, n=VOLUME_DAYS, volume=volume
        )
    hourly = _volume(hourly_counts, step=hour, now=now, n=VOLUME_HOURS)
    daily = _volume(daily_counts, step=day, now=now, n=VOLUME_DAYS)
    lag = _lag(feed, now=now)
    unprocessed = _backlog(
        feed.rows.filter(feed.pending, **{f"{feed.done}__isnull": True}),
        arrived=feed.arrived,
        now=now,
    )
    return {
        "unit": feed.unit,
        "unit_one": UNIT_ONE[feed.unit],
        "hourly": hourly,
        "daily": daily,
        "hourly_max": max(bucket["count"] for bucket in hourly),
        "daily_max": max(bucket["count"] for bucket in daily),
        "hourly_total": sum(bucket["count"] for bucket in hourly),
        "daily_total": sum(bucket["count"] for bucket in daily),
        "lag": lag,
        "unprocessed": unprocessed,
        "longest_wait": _longest_wait(lag, unprocessed),
        "last_received_at": _last_success(feed),
    }


def _longest_wait(lag: dict[str, Any], unprocessed: dict[str, Any]) -> dict[str, Any]:
    """Return the longest wait: of the last hour's done rows, or of one still waiting.

    With the worker stopped nothing is done, and the done rows' lag alone would
    read as a feed going well while events wait.
    """
    done, waiting = lag["max_seconds"], unprocessed["oldest_age_seconds"]
    if waiting is not None and (done is None or waiting > done):
        return {"seconds": waiting, "still_waiting": True}
    return {"seconds": done, "still_waiting": False}


def _older(*backlogs: dict[str, Any]) -> dict[str, Any]:
    """Return the backlog whose oldest row has waited longest."""
    return max(backlogs, key=lambda backlog: backlog["oldest_age_seconds"] or -1.0)


def _counted(
    feed: _Feed,
    *,
    trunc: type,
    step: timedelta,
    now: datetime,
    n: int,
    volume: Aggregate,
) -> dict[datetime, int]:
    """Return how much arrived in each of the last n buckets that saw anything."""
    first = _floor(now, step) - step * (n - 1)
    rows = (
        feed.rows.filter(**{f"{feed.arrived}__gte": first})
        .annotate(bucket=trunc(feed.arrived, tzinfo=UTC))
        .values("bucket")
        .annotate(n=volume)
        .order_by()
    )
    return {row["bucket"]: row["n"] or 0 for row in rows}


def _hours(feed: _Feed, *, since: datetime) -> dict[datetime, int]:
    """Return a feed's rows by the hour they arrived, done or still waiting."""
    counted = SourceHour.objects.filter(feed.hours, hour__gte=since)
    # The rows still waiting are few, and found by their own index. One query
    # reads both: a chunk committed between two would be counted twice, or not.
    waiting = (
        feed.rows.filter(processed_at__isnull=True, received_at__gte=since)
        .annotate(hour=TruncHour("received_at", tzinfo=UTC))
        .values("hour")
        .annotate(n=Count("id"))
        .values_list("hour", "n")
        .order_by()
    )
    hours: dict[datetime, int] = {}
    for hour, n in counted.values_list("hour", "done").union(waiting, all=True):
        hours[hour] = hours.get(hour, 0) + n
    return hours


def _days(hours: dict[datetime, int]) -> dict[datetime, int]:
    days: dict[datetime, int] = {}
    for hour, n in hours.items():
        day = hour.replace(hour=0)
        days[day] = days.get(day, 0) + n
    return days


def _volume(
    counts: dict[datetime, int], *, step: timedelta, now: datetime, n: int
) -> list[dict[str, Any]]:
    """Return n buckets, oldest first, each with its start and how much arrived."""
    first = _floor(now, step) - step * (n - 1)
    starts = [first + step * i for i in range(n)]
    return [{"at": start, "count": counts.get(start, 0)} for start in starts]


def _duplicates(where: Q, *, now: datetime) -> int:
    """Return the items of the last 48 hours not stored again: sent before."""
    since = _floor(now, timedelta(hours=1)) - timedelta(hours=VOLUME_HOURS - 1)
    counted = SourceHour.objects.filter(where, unit=SourceUnit.EVENTS, hour__gte=since)
    return counted.aggregate(n=Sum("duplicates"))["n"] or 0


def _last_success(feed: _Feed) -> datetime | None:
    # Arrival, not processing, of the latest item that went through: an item that
    # is still waiting, or failed, is no success.
    if feed.hours:
        counted = SourceHour.objects.filter(feed.hours)
        return counted.aggregate(at=Max("last_succeeded_at"))["at"]
    done = feed.rows.filter(feed.succeeded, **{f"{feed.done}__isnull": False})
    return done.aggregate(at=Max(feed.arrived))["at"]


def _floor(now: datetime, step: timedelta) -> datetime:
    now = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if step >= timedelta(days=1):
        now = now.replace(hour=0)
    return now


def _lag(feed: _Feed, *, now: datetime) -> dict[str, Any]:
    """Return the median and longest wait, arrival to done, of the last hour's rows."""
    since = now - timedelta(seconds=LAG_WINDOW_SECONDS)
    start = feed.waited_from or feed.arrived
    rows = feed.rows
    if feed.hours:
        # The hour's rows begin at its lowest id: a scan of the newest ids, not of
        # everything the source sent.
        counted = SourceHour.objects.filter(feed.hours, hour__gte=refusal_hour(since))
        first_id = counted.aggregate(id=Min("first_id"))["id"]
        rows = rows.filter(pk__gte=first_id) if first_id else rows.none()
    done = rows.filter(
        **{f"{start}__gte": since, f"{feed.done}__isnull": False}
    ).annotate(
        wait=ExpressionWrapper(F(feed.done) - F(start), output_field=DurationField())
    )

    figures = done.aggregate(n=Count("id"), longest=Max("wait"))
    figures["median"] = _median_wait(done) if figures["n"] else None
    return {
        "measured": figures["n"],
        "median_seconds": _seconds(figures["median"]),
        "max_seconds": _seconds(figures["longest"]),
    }


def _median_wait(done: QuerySet) -> timedelta:
    if connection.vendor == "postgresql":
        return done.aggregate(median=_Median("wait"))["median"]

    waits = list(done.values_list("wait", flat=True)[:LAG_SAMPLE_MAX])
    return statistics.median(waits)


def _backlog(rows: QuerySet, *, arrived: str, now: datetime) -> dict[str, Any]:
    figures = rows.aggregate(n=Count("id"), oldest=Min(arrived))
    oldest = figures["oldest"]
    return {
        "count": figures["n"],
        "oldest_age_seconds": _seconds(now - oldest) if oldest else None,
    }


def _seconds(duration: timedelta | None) -> float | None:
    return None if duration is None else round(duration.total_seconds(), 3)


# Rejections and failures ----------------------------------------------------------


def rejected_events_count() -> dict[str, int]:
    """Return how many items were refused, and how many stored events got a notice."""
    rows = RejectedEvent.objects.all()
    return {
        "refused": _items_count(rows.exclude(_is_notice())),
        "notices": _items_count(rows.filter(_is_notice())),
    }


def _is_notice() -> Q:
    """Match the rows that report on a stored event rather than a refused item."""
    notice = Q(code__in=NOTICE_CODES)
    for prefix in NOTICE_CODE_PREFIXES:
        notice |= Q(code__startswith=prefix)
    return notice


def _items_counted() -> Any:
    # Ingestion stores a row per attempt, so a retried batch repeats its refusals
    # and warnings. Each (source, messageId, code) is counted once instead of
    # skipping the insert: the rows stay as they came, evidence of every attempt,
    # and nothing is lost if two different items share a messageId under another
    # code. A row without a messageId cannot be matched to its retries and counts
    # on its own.
    return Count("message_id", distinct=True, filter=~Q(message_id="")) + Count(
        "id", filter=Q(message_id="")
    )


def _items_count(rows: QuerySet) -> int:
    grouped = rows.values("source", "code").annotate(n=_items_counted()).order_by()
    return sum(row["n"] for row in grouped)


def _rejections_by_code(rejected: QuerySet, *, now: datetime) -> list[dict[str, Any]]:
    """Return the last 30 days' rejections grouped by code, newest group first.

    A retried item is counted once per code (see _items_counted).
    """
    recent = rejected.filter(
        received_at__gte=now - timedelta(days=REJECTIONS_WINDOW_DAYS)
    )
    return _by_code(recent, at="received_at", count=_items_counted())


def _by_code(recent: QuerySet, *, at: str, count: Any) -> list[dict[str, Any]]:
    """Group rows by code, newest group first: each its count, latest time and message."""
    groups = (
        recent.values("code")
        .annotate(count=count, last_at=Max(at))
        .order_by("-last_at", "code")
    )
    # The newest message of each code, looked up once per group: as a subquery in
    # the grouping it ran once per row, and 50,000 refused items (one request
    # can send them) took the page minutes.
    result = []
    for row in groups:
        latest = (
            recent.filter(code=row["code"])
            .order_by(f"-{at}", "-pk")
            .values_list("message", flat=True)[:MESSAGES_READ]
        )
        # The newest few that differ: one identify can break two traits the same
        # way, and the page should name both.
        messages = list(dict.fromkeys(latest))[:MESSAGES_SHOWN]
        result.append({**row, "message": messages[0], "messages": messages})
    return result


# How many of a code's newest messages are read, and how many distinct ones shown.
MESSAGES_READ = 50
MESSAGES_SHOWN = 3


def _refused_requests(name: str, *, now: datetime) -> list[dict[str, Any]]:
    """Return the last 30 days' requests refused whole, grouped by code, newest first.

    Every attempt counts: a refused request stored nothing by which a retry of it
    could be known.
    """
    recent = RefusedRequest.objects.filter(
        source=name, hour__gte=now - timedelta(days=REJECTIONS_WINDOW_DAYS)
    )
    return _by_code(recent, at="last_at", count=Sum("count"))


def _refused_recent_since(now: datetime) -> datetime:
    # Counts are kept by the hour: "the last hour" is the hour before this one and
    # this one so far.
    return refusal_hour(now) - timedelta(hours=1)


def _refused_recent(name: str, *, now: datetime) -> int:
    recent = RefusedRequest.objects.filter(
        source=name, hour__gte=_refused_recent_since(now)
    )
    return recent.aggregate(n=Sum("count"))["n"] or 0


def _failed_events(events: QuerySet, where: Q) -> dict[str, Any]:
    failed = events.exclude(processing_error="")
    recent = failed.order_by("-received_at", "-pk").values(
        "message_id", "type", "event", "processing_error", "received_at"
    )[:FAILED_EVENTS_SHOWN]
    return {"count": _events_failed_count(where), "recent": list(recent)}


def _events_failed_count(where: Q) -> int:
    # Counted by the hour as they failed: a feed that breaks fails thousands, and
    # counting them from the table took the page hundreds of milliseconds. One
    # processed again is taken off.
    counted = SourceHour.objects.filter(where, unit=SourceUnit.EVENTS)
    return counted.aggregate(n=Sum("failed"))["n"] or 0


def _failed_deliveries(where: Q) -> dict[str, Any]:
    # Refused for good (a payload that cannot be read), or failing and tried again.
    # Only the few with an error are read, by their own index.
    with_error = WebhookDelivery.objects.filter(where).exclude(error="")
    failed = with_error.filter(
        Q(error__startswith=PAYLOAD_REFUSED)
        | (Q(processed_at__isnull=True) & ~Q(error__startswith=AWAITS_ORDER))
    )
    recent = failed.order_by("-received_at", "-pk").values(
        "delivery_id", "topic", "error", "received_at", "processed_at"
    )[:FAILED_EVENTS_SHOWN]
    return {"count": failed.count(), "recent": list(recent)}


def _awaiting_orders(where: Q) -> int:
    # Refunds that came before their order: not failed, applied when it arrives.
    waiting = WebhookDelivery.objects.filter(
        where, processed_at__isnull=True, error__startswith=AWAITS_ORDER
    )
    return waiting.count()


def _webhook_notes(where: Q) -> int:
    # Applied as far as they go, with a note: a topic Bespoke does not use, a
    # customer with no address, an ESP event that changes nothing.
    # Counted by the hour as applied: an ESP may send many.
    counted = SourceHour.objects.filter(where, unit=SourceUnit.DELIVERIES)
    return counted.aggregate(n=Sum("noted"))["n"] or 0


def _imports_since(since: datetime) -> QuerySet:
    return ContactImport.objects.filter(created_at__gte=since)


def _import_rejections_by_reason(
    *, now: datetime, fields: bool
) -> list[dict[str, Any]]:
    """Return the last 30 days' refused rows, or refused fields, grouped by reason.

    A refused field names its column; its row was stored without it. A file's
    rejections are one JSON list on its import, read here in Python: an import
    holds at most one file's rows, and there are few imports a month.
    """
    since = now - timedelta(days=REJECTIONS_WINDOW_DAYS)
    groups: dict[str, dict[str, Any]] = {}
    imports = _imports_since(since).order_by("created_at", "pk")
    for created_at, rejections in imports.values_list("created_at", "rejections"):
        for rejection in rejections or []:
            if bool(rejection.get("column")) != fields:
                continue
            reason = rejection.get("reason", "")
            group = groups.setdefault(
                reason,
                {"code": reason, "count": 0, "latest": deque(maxlen=MESSAGES_READ)},
            )
            group["last_at"] = created_at
            group["latest"].append(rejection.get("message", ""))
            group["count"] += 1

    for group in groups.values():
        # As for events: the newest few that differ, newest first.
        latest = group.pop("latest")
        group["messages"] = list(dict.fromkeys(reversed(latest)))[:MESSAGES_SHOWN]
        group["message"] = group["messages"][0]
    return sorted(groups.values(), key=lambda g: (-g["last_at"].timestamp(), g["code"]))


def _import_rejected_since(since: datetime) -> int:
    return _imports_since(since).aggregate(n=Sum("rejected"))["n"] or 0


def _failed_imports() -> dict[str, Any]:
    failed = ContactImport.objects.filter(status=ImportStatus.FAILED)
    recent = failed.order_by("-created_at", "-pk").values(
        "pk", "filename", "error", "created_at"
    )[:FAILED_EVENTS_SHOWN]
    return {"count": failed.count(), "recent": list(recent)}


# Trait schema -----------------------------------------------------------------------


def trait_names_undeclared() -> list[dict[str, Any]]:
    """Return each custom trait name on profiles that has no definition, with its count."""
    declared = set(TraitDefinition.objects.values_list("name", flat=True))
    counts = _trait_name_counts()
    return [
        {"name": name, "profiles": count}
        for name, count in sorted(counts.items())
        if name not in declared and name not in BESPOKE_FLAGS
    ]


def _trait_name_counts() -> dict[str, int]:
    table = connection.ops.quote_name(Profile._meta.db_table)
    if connection.vendor == "postgresql":
        # The table name is ours, not input: S608 does not apply.
        sql = (
            f"SELECT key, COUNT(*) FROM {table}, jsonb_object_keys(traits) AS key "  # noqa: S608
            "WHERE jsonb_typeof(traits) = 'object' GROUP BY key"
        )
    else:
        # SQLite (the embedded default): json_each walks the object's members.
        members = f"json_each({table}.traits) AS member"
        sql = (
            f"SELECT member.key, COUNT(*) FROM {table}, {members} "  # noqa: S608
            f"WHERE json_type({table}.traits) = 'object' GROUP BY member.key"
        )

    with connection.cursor() as cursor:
        cursor.execute(sql)
        return dict(cursor.fetchall())


def trait_rule_breaches(*, rule: TraitRule) -> dict[str, Any]:
    """Return how many stored values of the trait break its rule, with a few examples.

    A value that is not stored as its type stores it ("yes" for a boolean) breaks it.

    Values are read in chunks of 2,000 and coerced in Python, at most 200,000 of
    them and for at most TRAIT_CHECK_BUDGET_SECONDS; `complete` is False when the
    check stopped before the last value, and `stopped_by` then says why ("values"
    or "time"): the counts are of the `checked` values only.
    """
    deadline = monotonic() + TRAIT_CHECK_BUDGET_SECONDS
    result: dict[str, Any] = {"checked": 0, "breaking": 0, "examples": []}
    for pk, value in trait_values_stored(rule.name):
        if result["checked"] == TRAIT_CHECK_MAX_VALUES:
            return {**result, "complete": False, "stopped_by": "values"}
        if monotonic() >= deadline:
            return {**result, "complete": False, "stopped_by": "time"}

        result["checked"] += 1
        _breach_count(rule=rule, pk=pk, value=value, result=result)

    result["complete"] = True
    return result


def trait_values_stored(
    name: str, *, using: str = DEFAULT_DB_ALIAS
) -> Iterator[tuple[int, Any]]:
    """Yield each profile's pk and stored value of the trait `name`, as stored."""
    holding = Profile.objects.using(using).filter(traits__has_key=name).order_by("pk")
    if connections[using].vendor == "postgresql":
        values = holding.annotate(value=KeyTransform(name, "traits"))
        yield from values.values_list("pk", "value").iterator(
            chunk_size=TRAIT_CHECK_CHUNK
        )
        return
    # SQLite's JSON_EXTRACT hands the text "7" back as the number 7, and "true" as
    # true: a value stored as text would read as stored as its type. The column is
    # decoded whole instead.
    rows = holding.values_list("pk", "traits").iterator(chunk_size=TRAIT_CHECK_CHUNK)
    for pk, traits in rows:
        yield pk, traits.get(name)


def _breach_count(
    *, rule: TraitRule, pk: int, value: Any, result: dict[str, Any]
) -> None:
    # A value stored before its trait was declared, or before its type changed,
    # and not yet converted breaks it too: segments compare the stored JSON.
    try:
        typed = trait_coerce(rule, value)
        if not trait_value_same(typed, value):
            raise trait_untyped(rule, value, typed)
    except TraitInvalid as exc:
        result["breaking"] += 1
        if len(result["examples"]) < TRAIT_EXAMPLES_SHOWN:
            result["examples"].append({"profile_id": pk, "message": exc.message})
