"""Computed traits: what a profile's events say about the person, kept on the profile.

- lifetime_value, order_count, first_order_at, last_order_at: from `Order Completed`
  track events, each order counted once by `order_id` (the site and the shop may both
  report it). Only orders in BESPOKE_CURRENCY, or with no currency, add to the value;
  the amount is `total`, else `revenue`, as a JSON number or a string holding one
  ("29.50"). An amount of a billion or more is taken as a feed error and left out.
- average_order_value: lifetime value over the orders that counted in it; empty when
  none did.
- last_seen_at: the latest event. last_opened_at: the latest `Email Opened` that is not
  a machine open (`machine_open` or `sg_machine_open` true in properties, or
  `machine_open` in context). last_clicked_at: the latest `Email Link Clicked`.
- engagement_score, 0 to 100: over the last 90 days, 3 points per human email open,
  5 per click, 2 per day with a site visit (a page or screen call, which carries no
  event name) and 10 per order, each halved for every 30 days of age (an open 30
  days ago is worth 1.5, 60 days ago 0.75); the sum is rounded and capped at 100.
  It is computed when the profile's events are processed, so it describes the
  profile as of its latest processed event.
- favourite_category: the category most often viewed, added or bought (`category`
  and `products[].category` of `Product Viewed`, `Product Added` and
  `Order Completed`); a tie goes to the category seen most recently.

On PostgreSQL all of it is one aggregate query for a whole batch of profiles; other
databases (the embedded SQLite) compute the same figures in Python.
"""

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from profiles.models import Event, EventType, Profile
from profiles.processing_writes import int_array
from profiles.traits import number_in_range, number_text

logger = logging.getLogger(__name__)

ORDER_COMPLETED = "Order Completed"
EMAIL_OPENED = "Email Opened"
EMAIL_LINK_CLICKED = "Email Link Clicked"
PRODUCT_EVENTS = ("Product Viewed", "Product Added", ORDER_COMPLETED)
VISIT_TYPES = (EventType.PAGE, EventType.SCREEN)

ENGAGEMENT_WINDOW_DAYS = 90
ENGAGEMENT_HALF_LIFE_DAYS = 30
ENGAGEMENT_POINTS = {"open": 3, "click": 5, "visit_day": 2, "order": 10}
ENGAGEMENT_MAX = 100
# Larger amounts are feed errors (cents sent as units, ids sent as totals).
ORDER_AMOUNT_LIMIT = Decimal("1000000000")
CATEGORY_MAX_CHARS = 200
# The most Profile.lifetime_value can hold (14 digits, 2 of them decimals).
LIFETIME_VALUE_MAX = Decimal("999999999999.99")

# A number as text: what `number_coerce` and the SQL below both accept.
NUMBER_TEXT = r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?"
NUMBER_BLANKS = " \t\n\r"
# JSON values that mean "no order id" / "no currency", as Python's falsy values do.
JSON_FALSY = ("null", "false", "0", '""', "[]", "{}")

COMPUTED_FIELDS = (
    "lifetime_value",
    "order_count",
    "first_order_at",
    "last_order_at",
    "average_order_value",
    "last_seen_at",
    "last_opened_at",
    "last_clicked_at",
    "engagement_score",
    "favourite_category",
)
ORDER_FIELDS = COMPUTED_FIELDS[:5]
LATEST_FIELDS = ("last_seen_at", "last_opened_at", "last_clicked_at")


@dataclass
class TraitsRefresh:
    """Which profiles to refresh, and how much of each to recompute."""

    profile_ids: set[int]
    # Latest-event times come from these events only (None: from all events).
    event_ids: list[int] | None = None
    # Orders and categories are recomputed only where something new may change them.
    order_profile_ids: set[int] = field(default_factory=set)
    category_profile_ids: set[int] = field(default_factory=set)


def number_coerce(value: Any) -> Decimal | None:
    """Return a property as a Decimal ("29.50" and 29.5 alike), or None if not one.

    Read with the grammar and range of every other number (profiles.traits), so
    1e-999 or a 4,001-digit total is no amount.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    if isinstance(value, str) and not re.fullmatch(
        NUMBER_TEXT, value.strip(NUMBER_BLANKS)
    ):
        return None

    text = number_text(str(value).strip(NUMBER_BLANKS))
    if text is None:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number_in_range(number) else None


def profile_traits_compute(*, profile: Profile) -> None:
    """Recompute every computed trait of one profile from all of its events."""
    profiles_traits_refresh(
        refresh=TraitsRefresh(
            profile_ids={profile.pk},
            order_profile_ids={profile.pk},
            category_profile_ids={profile.pk},
        )
    )


def profiles_traits_refresh(*, refresh: TraitsRefresh) -> int:
    """Bring the computed traits of a batch of profiles up to date; return how many.

    Must run inside a transaction; the profile rows stay locked until it commits.
    """
    if not refresh.profile_ids:
        return 0

    now = timezone.now()
    if connection.vendor != "postgresql":
        return _refresh_in_python(refresh, now=now)

    # One statement computes and writes every figure of the whole batch.
    params = {**_figures_params(refresh, now=now), "value_max": LIFETIME_VALUE_MAX}
    sql = _FIGURES_UPDATE if refresh.event_ids is None else _FIGURES_UPDATE_CHUNK
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _refresh_in_python(refresh: TraitsRefresh, *, now: datetime) -> int:
    profiles = list(
        Profile.objects.select_for_update()
        .filter(pk__in=refresh.profile_ids)
        .order_by("pk")
        .only("pk", *COMPUTED_FIELDS)
    )
    figures = _figures_python(refresh, now=now)
    for profile in profiles:
        _figures_set(profile, figures.get(profile.pk, {}), refresh=refresh)
        profile.updated_at = now
    Profile.objects.bulk_update(profiles, [*COMPUTED_FIELDS, "updated_at"])
    return len(profiles)


def _figures_set(
    profile: Profile, figures: dict[str, Any], *, refresh: TraitsRefresh
) -> None:
    for name in LATEST_FIELDS:
        setattr(profile, name, _latest(getattr(profile, name), figures.get(name)))
    profile.engagement_score = figures.get("engagement_score", 0)

    if profile.pk in refresh.order_profile_ids:
        value = figures.get("lifetime_value", Decimal("0"))
        counted = figures.get("orders_counted", 0)
        profile.lifetime_value = min(value, LIFETIME_VALUE_MAX)
        profile.order_count = figures.get("order_count", 0)
        profile.first_order_at = figures.get("first_order_at")
        profile.last_order_at = figures.get("last_order_at")
        profile.average_order_value = (
            (value / counted).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
            if counted
            else None
        )
        if figures.get("orders_skipped"):
            logger.info(
                "Orders left out of lifetime value: other currency or no amount",
                extra={"profile": profile.pk, "orders": figures["orders_skipped"]},
            )
    if profile.pk in refresh.category_profile_ids:
        profile.favourite_category = figures.get("favourite_category", "")


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


# PostgreSQL --------------------------------------------------------------------------

_MACHINE_OPEN = """coalesce(
    e.properties->>'machine_open' = 'true'
    OR e.properties->>'sg_machine_open' = 'true'
    OR e.context->>'machine_open' = 'true', false)"""

_ORDER_KEY = f"""CASE
    WHEN e.properties->'order_id' IS NULL
      OR e.properties->'order_id' IN ({", ".join(f"'{v}'" for v in JSON_FALSY)})
    THEN 'event:' || e.id
    ELSE e.properties->>'order_id' END"""

_ORDER_RAW = """CASE
    WHEN coalesce(jsonb_typeof(e.properties->'total'), 'null') = 'null'
    THEN e.properties->'revenue' ELSE e.properties->'total' END"""

_ORDER_IN_CURRENCY = f"""CASE
    WHEN e.properties->'currency' IS NULL
      OR e.properties->'currency' IN ({", ".join(f"'{v}'" for v in JSON_FALSY)})
    THEN true
    ELSE upper(e.properties->>'currency') = %(currency)s END"""

_LATEST_ANY = "(%(all_events)s OR e.id = ANY(%(events)s::bigint[]))"
# Rows from the array, so the chunk's events are read by primary key: with `= ANY`
# the planner reads the whole event table once the chunk has a few thousand events.
_LATEST_CHUNK = "e.id IN (SELECT unnest(%(events)s::bigint[]))"
_LATEST_FILTER = _LATEST_ANY

# The fragments above are constants of this module; every value is a parameter.
_FIGURES_CTES = f"""
WITH latest AS (
    SELECT e.profile_id,
        max(e.timestamp) AS last_seen_at,
        max(e.timestamp) FILTER (
            WHERE e.type = 'track' AND e.event = %(opened)s AND NOT {_MACHINE_OPEN}
        ) AS last_opened_at,
        max(e.timestamp) FILTER (
            WHERE e.type = 'track' AND e.event = %(clicked)s
        ) AS last_clicked_at
    FROM profiles_event e
    WHERE e.profile_id = ANY(%(profiles)s::bigint[]) AND {_LATEST_FILTER}
    GROUP BY e.profile_id
),
orders AS (
    SELECT DISTINCT ON (e.profile_id, {_ORDER_KEY})
        e.profile_id, e.timestamp, {_ORDER_RAW} AS raw, {_ORDER_IN_CURRENCY} AS ours
    FROM profiles_event e
    WHERE e.profile_id = ANY(%(order_profiles)s::bigint[])
      AND e.type = 'track' AND e.event = %(order_event)s
    ORDER BY e.profile_id, {_ORDER_KEY}, e.timestamp, e.id
),
order_amounts AS (
    SELECT o.profile_id, o.timestamp,
        CASE
            WHEN NOT o.ours THEN NULL
            WHEN jsonb_typeof(o.raw) = 'number' THEN (o.raw)::numeric
            WHEN jsonb_typeof(o.raw) = 'string'
              AND (o.raw #>> '{{}}') ~ %(number_re)s
            THEN btrim(o.raw #>> '{{}}', %(blanks)s)::numeric
        END AS amount
    FROM orders o
),
order_totals AS (
    SELECT a.profile_id,
        count(*) AS order_count,
        min(a.timestamp) AS first_order_at,
        max(a.timestamp) AS last_order_at,
        coalesce(sum(a.amount) FILTER (WHERE abs(a.amount) < %(amount_limit)s), 0)
            AS lifetime_value,
        count(*) FILTER (WHERE abs(a.amount) < %(amount_limit)s) AS orders_counted
    FROM order_amounts a
    GROUP BY a.profile_id
),
engagement_points AS (
    SELECT e.profile_id, e.timestamp,
        CASE WHEN e.event = %(clicked)s THEN %(click_points)s ELSE %(open_points)s END
            AS points
    FROM profiles_event e
    WHERE e.profile_id = ANY(%(profiles)s::bigint[]) AND e.timestamp > %(since)s
      -- The IN repeats the test below so the (profile, event, timestamp) index serves.
      AND e.type = 'track' AND e.event IN (%(clicked)s, %(opened)s)
      AND (e.event = %(clicked)s OR (e.event = %(opened)s AND NOT {_MACHINE_OPEN}))
    UNION ALL
    SELECT e.profile_id, max(e.timestamp), %(visit_points)s
    FROM profiles_event e
    WHERE e.profile_id = ANY(%(profiles)s::bigint[]) AND e.timestamp > %(since)s
      AND e.type IN ('page', 'screen') AND e.event = ''
    GROUP BY e.profile_id, date_trunc('day', e.timestamp AT TIME ZONE 'UTC')
    UNION ALL
    (SELECT DISTINCT ON (e.profile_id, {_ORDER_KEY})
        e.profile_id, e.timestamp, %(order_points)s
    FROM profiles_event e
    WHERE e.profile_id = ANY(%(profiles)s::bigint[]) AND e.timestamp > %(since)s
      AND e.type = 'track' AND e.event = %(order_event)s
    ORDER BY e.profile_id, {_ORDER_KEY}, e.timestamp, e.id)
),
engagement AS (
    SELECT p.profile_id,
        least(%(engagement_max)s, round(sum(
            p.points * power(0.5::float8, greatest(0,
                extract(epoch FROM %(now)s - p.timestamp)::float8) / %(half_life)s)
        )))::int AS engagement_score
    FROM engagement_points p
    GROUP BY p.profile_id
),
categories AS (
    SELECT e.profile_id, left(btrim(c.category), %(category_chars)s) AS category,
        e.timestamp
    FROM profiles_event e
    CROSS JOIN LATERAL (
        SELECT e.properties->>'category' AS category
        WHERE jsonb_typeof(e.properties->'category') = 'string'
        UNION ALL
        SELECT item->>'category'
        FROM jsonb_array_elements(CASE
            WHEN jsonb_typeof(e.properties->'products') = 'array'
            THEN e.properties->'products' ELSE '[]'::jsonb END) AS item
        WHERE jsonb_typeof(item->'category') = 'string'
    ) c
    WHERE e.profile_id = ANY(%(category_profiles)s::bigint[])
      AND e.type = 'track' AND e.event = ANY(%(product_events)s::text[])
      AND btrim(c.category) <> ''
),
favourites AS (
    SELECT DISTINCT ON (c.profile_id) c.profile_id, c.category AS favourite_category
    FROM (
        SELECT profile_id, category, count(*) AS n, max(timestamp) AS last_at
        FROM categories GROUP BY profile_id, category
    ) c
    ORDER BY c.profile_id, c.n DESC, c.last_at DESC, c.category
)
"""  # noqa: S608 - only this module's constant fragments are formatted in

_SELECT_TAIL = """
SELECT ids.id, l.last_seen_at, l.last_opened_at, l.last_clicked_at,
    o.order_count, o.first_order_at, o.last_order_at, o.lifetime_value,
    o.orders_counted, g.engagement_score, f.favourite_category
FROM unnest(%(profiles)s::bigint[]) AS ids(id)
LEFT JOIN latest l ON l.profile_id = ids.id
LEFT JOIN order_totals o ON o.profile_id = ids.id
LEFT JOIN engagement g ON g.profile_id = ids.id
LEFT JOIN favourites f ON f.profile_id = ids.id
"""

_UPDATE_TAIL = """
UPDATE profiles_profile p SET
    last_seen_at = greatest(p.last_seen_at, l.last_seen_at),
    last_opened_at = greatest(p.last_opened_at, l.last_opened_at),
    last_clicked_at = greatest(p.last_clicked_at, l.last_clicked_at),
    engagement_score = coalesce(g.engagement_score, 0),
    lifetime_value = CASE WHEN ids.orders
        THEN least(coalesce(o.lifetime_value, 0), %(value_max)s)
        ELSE p.lifetime_value END,
    order_count = CASE WHEN ids.orders
        THEN coalesce(o.order_count, 0) ELSE p.order_count END,
    first_order_at = CASE WHEN ids.orders
        THEN o.first_order_at ELSE p.first_order_at END,
    last_order_at = CASE WHEN ids.orders
        THEN o.last_order_at ELSE p.last_order_at END,
    average_order_value = CASE WHEN ids.orders
        THEN round(o.lifetime_value / nullif(o.orders_counted, 0), 2)
        ELSE p.average_order_value END,
    favourite_category = CASE WHEN ids.categories
        THEN coalesce(f.favourite_category, '') ELSE p.favourite_category END,
    updated_at = %(now)s
FROM (
    SELECT id, id = ANY(%(order_profiles)s::bigint[]) AS orders,
        id = ANY(%(category_profiles)s::bigint[]) AS categories
    FROM unnest(%(profiles)s::bigint[]) AS id
) AS ids
LEFT JOIN latest l ON l.profile_id = ids.id
LEFT JOIN order_totals o ON o.profile_id = ids.id
LEFT JOIN engagement g ON g.profile_id = ids.id
LEFT JOIN favourites f ON f.profile_id = ids.id
WHERE p.id = ids.id AND p.id = ANY(%(profiles)s::bigint[])
"""
_FIGURES_SELECT = "".join((_FIGURES_CTES, _SELECT_TAIL))
_FIGURES_UPDATE = "".join((_FIGURES_CTES, _UPDATE_TAIL))
# Two texts rather than one with an OR: each gets the plan its filter needs (the
# chunk's events by primary key, or every event of the profiles).
_FIGURES_UPDATE_CHUNK = _FIGURES_UPDATE.replace(_LATEST_ANY, _LATEST_CHUNK)

_SQL_COLUMNS = (
    "last_seen_at",
    "last_opened_at",
    "last_clicked_at",
    "order_count",
    "first_order_at",
    "last_order_at",
    "lifetime_value",
    "orders_counted",
    "engagement_score",
    "favourite_category",
)


def _figures_params(refresh: TraitsRefresh, *, now: datetime) -> dict[str, Any]:
    return {
        "all_events": refresh.event_ids is None,
        "profiles": int_array(sorted(refresh.profile_ids)),
        "events": int_array(refresh.event_ids or []),
        "order_profiles": int_array(sorted(refresh.order_profile_ids)),
        "category_profiles": int_array(sorted(refresh.category_profile_ids)),
        "currency": settings.BESPOKE_CURRENCY.upper(),
        "opened": EMAIL_OPENED,
        "clicked": EMAIL_LINK_CLICKED,
        "order_event": ORDER_COMPLETED,
        "product_events": list(PRODUCT_EVENTS),
        "number_re": f"^[{NUMBER_BLANKS}]*{NUMBER_TEXT}[{NUMBER_BLANKS}]*$",
        "blanks": NUMBER_BLANKS,
        "amount_limit": ORDER_AMOUNT_LIMIT,
        "now": now,
        "since": now - timedelta(days=ENGAGEMENT_WINDOW_DAYS),
        "half_life": ENGAGEMENT_HALF_LIFE_DAYS * 86400,
        "open_points": ENGAGEMENT_POINTS["open"],
        "click_points": ENGAGEMENT_POINTS["click"],
        "visit_points": ENGAGEMENT_POINTS["visit_day"],
        "order_points": ENGAGEMENT_POINTS["order"],
        "engagement_max": ENGAGEMENT_MAX,
        "category_chars": CATEGORY_MAX_CHARS,
    }


def _figures_sql(refresh: TraitsRefresh, *, now: datetime) -> dict[int, dict[str, Any]]:
    with connection.cursor() as cursor:
        cursor.execute(_FIGURES_SELECT, _figures_params(refresh, now=now))
        rows = cursor.fetchall()

    figures: dict[int, dict[str, Any]] = {}
    for profile_id, *values in rows:
        row = {k: v for k, v in zip(_SQL_COLUMNS, values, strict=True) if v is not None}
        if "order_count" in row:
            row["orders_skipped"] = row["order_count"] - row["orders_counted"]
        figures[profile_id] = row
    return figures


# Other databases ---------------------------------------------------------------------


def _figures_python(
    refresh: TraitsRefresh, *, now: datetime
) -> dict[int, dict[str, Any]]:
    events = Event.objects.filter(profile_id__in=refresh.profile_ids).order_by(
        "timestamp", "id"
    )
    rows = events.values_list(
        "id", "profile_id", "type", "event", "timestamp", "properties", "context"
    )
    per_profile: dict[int, list[tuple]] = {}
    for row in rows.iterator():
        per_profile.setdefault(row[1], []).append(row)

    return {
        profile_id: _profile_figures(profile_rows, refresh=refresh, now=now)
        for profile_id, profile_rows in per_profile.items()
    }


def _profile_figures(
    rows: list[tuple], *, refresh: TraitsRefresh, now: datetime
) -> dict[str, Any]:
    profile_id = rows[0][1]
    wanted = set(refresh.event_ids) if refresh.event_ids is not None else None
    latest_rows = [row for row in rows if wanted is None or row[0] in wanted]
    figures: dict[str, Any] = {
        "last_seen_at": max((row[4] for row in latest_rows), default=None),
        "last_opened_at": max(
            (row[4] for row in latest_rows if _is_human_open(row)), default=None
        ),
        "last_clicked_at": max(
            (row[4] for row in latest_rows if _is_click(row)), default=None
        ),
        "engagement_score": _engagement(rows, now=now),
    }
    if profile_id in refresh.order_profile_ids:
        figures.update(_orders_total(rows))
    if profile_id in refresh.category_profile_ids:
        figures["favourite_category"] = _favourite_category(rows)
    # As the SQL path gives them: a figure with nothing behind it is left out.
    return {name: value for name, value in figures.items() if value not in (None, "")}


def _is_human_open(row: tuple) -> bool:
    _, _, kind, name, _, properties, context = row
    if kind != EventType.TRACK or name != EMAIL_OPENED:
        return False
    flags = (
        _dict(properties).get("machine_open"),
        _dict(properties).get("sg_machine_open"),
        _dict(context).get("machine_open"),
    )
    return not any(flag is True or flag == "true" for flag in flags)


def _is_click(row: tuple) -> bool:
    return row[2] == EventType.TRACK and row[3] == EMAIL_LINK_CLICKED


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _first_orders(rows: Iterable[tuple]) -> list[tuple]:
    seen: set[str] = set()
    firsts = []
    for row in rows:
        if row[2] != EventType.TRACK or row[3] != ORDER_COMPLETED:
            continue

        # The same order may arrive from the site and from the shop's webhook.
        key = _order_key(row)
        if key not in seen:
            seen.add(key)
            firsts.append(row)
    return firsts


def _order_key(row: tuple) -> str:
    order_id = _dict(row[5]).get("order_id")
    if not order_id:
        return f"event:{row[0]}"
    # Written as the SQL path reads it, so "1057" and 1057 are one order in both.
    return order_id if isinstance(order_id, str) else json.dumps(order_id)


def _orders_total(rows: list[tuple]) -> dict[str, Any]:
    currency = settings.BESPOKE_CURRENCY.upper()
    orders = _first_orders(rows)
    amounts = [_order_amount(_dict(row[5]), currency=currency) for row in orders]
    counted = [amount for amount in amounts if amount is not None]
    return {
        "order_count": len(orders),
        "first_order_at": orders[0][4] if orders else None,
        "last_order_at": max((row[4] for row in orders), default=None),
        "lifetime_value": sum(counted, Decimal("0")),
        "orders_counted": len(counted),
        "orders_skipped": len(orders) - len(counted),
    }


def _order_amount(properties: dict[str, Any], *, currency: str) -> Decimal | None:
    order_currency = properties.get("currency")
    if order_currency and str(order_currency).upper() != currency:
        return None

    raw = properties.get("total")
    if raw is None:
        raw = properties.get("revenue")
    amount = number_coerce(raw)
    if amount is None or abs(amount) >= ORDER_AMOUNT_LIMIT:
        return None
    return amount


def _engagement(rows: list[tuple], *, now: datetime) -> int:
    since = now - timedelta(days=ENGAGEMENT_WINDOW_DAYS)
    recent = [row for row in rows if row[4] > since]
    points: list[tuple[int, datetime]] = []
    for row in recent:
        if _is_click(row):
            points.append((ENGAGEMENT_POINTS["click"], row[4]))
        elif _is_human_open(row):
            points.append((ENGAGEMENT_POINTS["open"], row[4]))

    visit_days: dict[Any, datetime] = {}
    for row in recent:
        if row[2] in VISIT_TYPES and not row[3]:
            day = row[4].astimezone(UTC).date()
            visit_days[day] = max(visit_days.get(day, row[4]), row[4])
    points += [(ENGAGEMENT_POINTS["visit_day"], at) for at in visit_days.values()]
    points += [(ENGAGEMENT_POINTS["order"], row[4]) for row in _first_orders(recent)]

    half_life = ENGAGEMENT_HALF_LIFE_DAYS * 86400
    total = sum(
        value * 0.5 ** (max(0.0, (now - at).total_seconds()) / half_life)
        for value, at in points
    )
    return min(ENGAGEMENT_MAX, round(total))


def _favourite_category(rows: list[tuple]) -> str:
    counts: Counter[str] = Counter()
    last_seen: dict[str, datetime] = {}
    for row in rows:
        if row[2] != EventType.TRACK or row[3] not in PRODUCT_EVENTS:
            continue
        for category in _categories(_dict(row[5])):
            counts[category] += 1
            last_seen[category] = max(last_seen.get(category, row[4]), row[4])

    if not counts:
        return ""
    return min(
        counts, key=lambda name: (-counts[name], -last_seen[name].timestamp(), name)
    )


def _categories(properties: dict[str, Any]) -> list[str]:
    found = [properties.get("category")]
    products = properties.get("products")
    if isinstance(products, list):
        found += [_dict(item).get("category") for item in products]
    return [
        value.strip()[:CATEGORY_MAX_CHARS]
        for value in found
        if isinstance(value, str) and value.strip()
    ]
