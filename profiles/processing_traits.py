"""Computed traits: what a profile's events say about the person, kept on the profile.

- lifetime_value, order_count, first_order_at, last_order_at: from `Order Completed`
  track events, each order counted once by `order_id` (1057, "1057" and 1057.0 are
  one id; the site and the shop may both report it). Only orders in
  BESPOKE_CURRENCY, or with no currency, add to the value; the amount is `total`,
  else `revenue`, as a JSON number or a string holding one ("29.50"). An amount
  of a billion or more is taken as a feed error and left out. The shop's latest
  `Order Updated` of an order (an edit in the shop that changed what it is worth)
  gives the order its amount instead; its time, count and categories stay the
  first report's.
  An order with an `Order Cancelled` of its `order_id` is left out of all four. An
  `Order Refunded` of its `order_id` takes its amount (`total`, else `revenue`, in
  BESPOKE_CURRENCY or none; a negative one read as positive) off the order's value,
  down to nothing, and one with no amount at all refunds the whole order; a
  refund's `refund_id` counts it once (the site and the shop may both report it).
  A refunded order still counts as an order; an unreadable refund amount, or one in
  another currency, changes nothing.
- average_order_value: lifetime value over the orders that counted in it; empty when
  none did.
- last_seen_at: the latest event, except an ESP's report of a message reaching or
  bouncing off the mailbox (`Email Delivered`, `Email Bounced`) and a machine open
  (a mail client or privacy proxy fetching images, not the person).
- last_opened_at: the latest `Email Opened` that is not a machine open
  (`machine_open` or `sg_machine_open` true in properties, or `machine_open` in
  context). last_clicked_at: the latest `Email Link Clicked`.
- engagement_score, 0 to 100: 3 points per human email open, 5 per click, 2 per day
  with a site visit (a page or screen call, which carries no event name; the day is
  the UTC day, and it counts at its first visit) and 10 per order, each halved for
  every 30 days of age (an open 30 days ago is worth 1.5, 60 days ago 0.75, a year
  ago 0.0007; after 1,800 days nothing); the sum is rounded and capped at 100. It is
  computed when the profile's events are processed, so it describes the profile as
  of its latest processed event.
- favourite_category: the category most often viewed, added or bought (`category`
  and `products[].category` of `Product Viewed`, `Product Added` and
  `Order Completed`, an order counted once, by its first processed report); a tie
  goes to the category seen most recently. A category is one whatever its case
  ("Shoes", "shoes"), named by its spelling that sorts first by code point.

Kept, not recomputed: a chunk of new events adds to what the profile keeps
(`engagement_value` as of `engagement_at`, and `category_counts`), so a refresh
reads the chunk's events, the profile's orders when it has a new one, and for each
day with a new visit that day's earlier visits; never the profile's whole history.
The points of a visit day or an order that arrives out of order move to its
earlier time. A profile that keeps nothing yet (new, or just merged) is computed
from all of its events, with the same figures.

On PostgreSQL all of it is one statement for a whole chunk of profiles; other
databases (the embedded SQLite) compute the same figures in Python from all of a
profile's events.
"""

import json
import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from profiles.models import SHOP_SOURCE, Event, EventType, Profile, ShopOrder
from profiles.processing_writes import int_array
from profiles.traits import number_in_range, number_text

logger = logging.getLogger(__name__)

ORDER_COMPLETED = "Order Completed"
# The shop's report of an edit that changed what an order is worth
# (profiles/shopify.py); the site's own `Order Updated` changes no figure.
ORDER_UPDATED = "Order Updated"
ORDER_REFUNDED = "Order Refunded"
ORDER_CANCELLED = "Order Cancelled"
# The events that change what a profile's orders add up to.
ORDER_EVENTS = (ORDER_COMPLETED, ORDER_UPDATED, ORDER_REFUNDED, ORDER_CANCELLED)
EMAIL_OPENED = "Email Opened"
EMAIL_LINK_CLICKED = "Email Link Clicked"
# What the ESP reports of a message, or the merchant does to an order, not something
# the person did: no sign of them, so not "last seen" (campaigns/tracking.py and
# profiles/shopify.py write these).
NOT_SEEN_EVENTS = ("Email Delivered", "Email Bounced", ORDER_REFUNDED, ORDER_CANCELLED)
PRODUCT_EVENTS = ("Product Viewed", "Product Added", ORDER_COMPLETED)
VISIT_TYPES = (EventType.PAGE, EventType.SCREEN)

ENGAGEMENT_HALF_LIFE_DAYS = 30
# Points older than this many half-lives (some 1,800 days) count for nothing: their
# weight would be below a billionth, and PostgreSQL refuses a float that underflows.
ENGAGEMENT_HALF_LIVES_MAX = 60
ENGAGEMENT_HALF_LIFE_SECONDS = ENGAGEMENT_HALF_LIFE_DAYS * 86400
# Kept points below this are nothing (and would only underflow as they decay).
ENGAGEMENT_VALUE_MIN = 1e-9
ENGAGEMENT_POINTS = {"open": 3, "click": 5, "visit_day": 2, "order": 10}
ENGAGEMENT_MAX = 100
# Larger amounts are feed errors (cents sent as units, ids sent as totals).
ORDER_AMOUNT_LIMIT = Decimal("1000000000")
CATEGORY_MAX_CHARS = 200
# What is trimmed off a category: ASCII white space, the same in SQL and Python.
CATEGORY_BLANKS = " \t\n\r\x0b\x0c"
# The smallest amount that counts, as number_in_range reads numbers.
AMOUNT_SMALLEST = Decimal("1e-15")
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
LATEST_FIELDS = ("last_seen_at", "last_opened_at", "last_clicked_at")
# What the figures are kept from between refreshes (Profile's fields of the name).
KEPT_FIELDS = ("engagement_value", "engagement_at", "category_counts")


@dataclass
class TraitsRefresh:
    """Which profiles to refresh, and how much of each to recompute."""

    profile_ids: set[int]
    # The events new to these profiles since their last refresh: the chunk's.
    event_ids: list[int] = field(default_factory=list)
    # Orders and categories are recomputed only where something new may change them.
    order_profile_ids: set[int] = field(default_factory=set)
    category_profile_ids: set[int] = field(default_factory=set)
    # Visit days are looked up only for profiles with a new visit.
    visit_profile_ids: set[int] = field(default_factory=set)
    # Computed from all of their events, whatever they keep (see KEPT_FIELDS).
    full_profile_ids: set[int] = field(default_factory=set)


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
        refresh=TraitsRefresh(profile_ids={profile.pk}, full_profile_ids={profile.pk})
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

    full = refresh.full_profile_ids | _keeping_nothing(refresh.profile_ids)
    params = {
        **_figures_params(refresh, full=full, now=now),
        "value_max": LIFETIME_VALUE_MAX,
    }
    # One statement computes and writes every figure of the whole chunk.
    with connection.cursor() as cursor:
        cursor.execute(_FIGURES_UPDATE, params)
        return cursor.rowcount


def _keeping_nothing(profile_ids: set[int]) -> set[int]:
    # A profile that keeps nothing yet, or something no refresh wrote (edited by
    # hand), is computed from all of its events.
    with connection.cursor() as cursor:
        cursor.execute(_KEEPING_NOTHING, [int_array(profile_ids)])
        return {pk for (pk,) in cursor.fetchall()}


_KEEPING_NOTHING = """
SELECT id FROM profiles_profile
WHERE id = ANY(%s::bigint[])
  AND (engagement_at IS NULL OR engagement_value IS NULL
    OR category_counts IS NULL OR jsonb_typeof(category_counts) <> 'object'
    OR category_counts @? 'strict $.* ? (@.type() != "array" || @.size() != 2
        || @[0].type() != "number" || @[1].type() != "number")')
"""


def _refresh_in_python(refresh: TraitsRefresh, *, now: datetime) -> int:
    # Every figure of every profile from all of its events: the embedded database
    # holds a demo's worth, and the figures are those the kept ones add up to.
    profiles = list(
        Profile.objects.select_for_update()
        .filter(pk__in=refresh.profile_ids)
        .order_by("pk")
        .only("pk", *COMPUTED_FIELDS, *KEPT_FIELDS)
    )
    figures = _figures_python(refresh.profile_ids, now=now)
    for profile in profiles:
        full = profile.pk in refresh.full_profile_ids
        _figures_set(profile, figures.get(profile.pk, {}), now=now, full=full)
        profile.updated_at = now
    Profile.objects.bulk_update(
        profiles, [*COMPUTED_FIELDS, *KEPT_FIELDS, "updated_at"]
    )
    return len(profiles)


def _figures_set(
    profile: Profile, figures: dict[str, Any], *, now: datetime, full: bool
) -> None:
    for name in LATEST_FIELDS:
        # As in SQL: a profile counted in full is seen when its events say.
        found = figures.get(name)
        setattr(
            profile, name, found if full else _latest(getattr(profile, name), found)
        )
    engagement = figures.get("engagement_value", 0.0)
    profile.engagement_value = engagement
    profile.engagement_at = now
    profile.engagement_score = min(ENGAGEMENT_MAX, round(engagement))

    value = figures.get("lifetime_value", Decimal("0"))
    counted = figures.get("orders_counted", 0)
    profile.lifetime_value = max(-LIFETIME_VALUE_MAX, min(value, LIFETIME_VALUE_MAX))
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
    counts = figures.get("category_counts", {})
    profile.category_counts = counts
    profile.favourite_category = _favourite(counts)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


# PostgreSQL --------------------------------------------------------------------------

_MACHINE_OPEN = """coalesce(
    e.properties->>'machine_open' = 'true'
    OR e.properties->>'sg_machine_open' = 'true'
    OR e.context->>'machine_open' = 'true', false)"""


def _id_key(name: str) -> str:
    # An id property as one text (1057, "1057" and 1057.0 alike); a falsy one is
    # the event's own.
    return f"""CASE
    WHEN e.properties->'{name}' IS NULL
      OR e.properties->'{name}' IN ({", ".join(f"'{v}'" for v in JSON_FALSY)})
    THEN 'event:' || e.id
    WHEN jsonb_typeof(e.properties->'{name}') = 'number'
    THEN trim_scale((e.properties->'{name}')::numeric)::text
    ELSE e.properties->>'{name}' END"""


_ORDER_KEY = _id_key("order_id")

_ORDER_RAW = """CASE
    WHEN coalesce(jsonb_typeof(e.properties->'total'), 'null') = 'null'
    THEN e.properties->'revenue' ELSE e.properties->'total' END"""

# A JSON amount, a number or a string holding one ("29.50"), as a numeric; else NULL.
_AMOUNT = """CASE
            WHEN jsonb_typeof({raw}) = 'number' THEN ({raw})::numeric
            WHEN jsonb_typeof({raw}) = 'string'
              AND ({raw} #>> '{{}}') ~ %(number_re)s
            THEN btrim({raw} #>> '{{}}', %(blanks)s)::numeric
        END"""

_ORDER_IN_CURRENCY = f"""CASE
    WHEN e.properties->'currency' IS NULL
      OR e.properties->'currency' IN ({", ".join(f"'{v}'" for v in JSON_FALSY)})
    THEN true
    ELSE upper(e.properties->>'currency') = %(currency)s END"""


def _weight(at: str) -> str:
    # The share of its points an event weighed at `at` (its time, or when it was
    # processed if that was earlier: see WEIGHED_AT) still counts for at %(now)s.
    age = f"extract(epoch FROM %(now)s - {at})"
    return (
        f"CASE WHEN {age} > %(weight_horizon)s THEN 0::float8 "
        f"ELSE power(0.5::float8, greatest(0, {age})::float8 / %(half_life)s) END"
    )


# Below a billion, and no smaller than any number Bespoke keeps (number_in_range).
_COUNTS = "abs({a}) < %(amount_limit)s AND ({a} = 0 OR abs({a}) >= %(amount_smallest)s)"
_AMOUNT_COUNTS = _COUNTS.format(a="a.amount")
# Whether an event names a product category, as chunk_categories reads them.
_HAS_CATEGORY = """(
    coalesce(jsonb_typeof(e.properties->'category') = 'string'
        AND btrim(e.properties->>'category', %(category_blanks)s) <> '', false)
    OR EXISTS (
        SELECT 1 FROM jsonb_array_elements(CASE
            WHEN jsonb_typeof(e.properties->'products') = 'array'
            THEN e.properties->'products' ELSE '[]'::jsonb END) AS item
        WHERE jsonb_typeof(item->'category') = 'string'
          AND btrim(item->>'category', %(category_blanks)s) <> ''))"""
_FRESH = "(e.id = ANY(%(events)s::bigint[]) OR e.profile_id = ANY(%(full)s::bigint[]))"
# An order the shop marked as placed in its test mode: whoever reports it (the
# site's analytics report it too), it is counted in no figure.
_TEST_ORDER = f"""EXISTS (
        SELECT 1 FROM profiles_shoporder t
        WHERE t.is_test AND t.shop_id = {_ORDER_KEY})"""  # noqa: S608 - constants
# The events figures count: processed, and not failed (a failed one is in no chunk's
# figures either).
_COUNTED = "e.processed_at IS NOT NULL AND e.processing_error = ''"
# An event counts from its time, or from when it was processed if its time was
# still to come then: the points a chunk adds decay from that moment, and a profile
# computed in full later gives them the same weight.
_WEIGHED_AT = "least(e.timestamp, coalesce(e.processed_at, %(now)s))"

_CHUNK_COLUMNS = f"""e.id, e.profile_id, e.timestamp, {_WEIGHED_AT} AS weighed_at,
        CASE
            WHEN e.type = 'track' AND e.event = %(opened)s
            THEN CASE WHEN {_MACHINE_OPEN} THEN 'not_seen' ELSE 'open' END
            WHEN e.type = 'track' AND e.event = %(clicked)s THEN 'click'
            WHEN e.type IN ('page', 'screen') AND e.event = '' THEN 'visit'
            WHEN e.type = 'track' AND e.event = ANY(%(not_seen)s::text[])
            THEN 'not_seen'
            WHEN e.type = 'track' AND e.event = %(order_updated)s
              AND e.source = %(shop_source)s
            THEN 'not_seen'
        END AS kind,
        CASE WHEN e.type = 'track' AND e.event = ANY(%(product_events)s::text[])
            THEN e.properties END AS product_properties,
        e.type = 'track' AND e.event = %(order_event)s AS is_order"""

# The fragments above are constants of this module; every value is a parameter.
_FIGURES_UPDATE = f"""
WITH chunk_events AS MATERIALIZED (
    -- The chunk's events, read by primary key from the array's rows. Nothing else
    -- is asked of them here: with a filter beside it, a plan made from stale
    -- statistics joined the array to the whole event table row by row.
    SELECT {_CHUNK_COLUMNS}
    FROM profiles_event e
    WHERE e.id IN (SELECT unnest(%(events)s::bigint[]))
),
chunk AS MATERIALIZED (
    -- The events new to each profile: the chunk's, or all of them for a profile
    -- computed in full.
    SELECT c.*
    FROM chunk_events c
    WHERE c.profile_id = ANY(%(profiles)s::bigint[])
      AND NOT c.profile_id = ANY(%(full)s::bigint[])
    UNION ALL
    SELECT {_CHUNK_COLUMNS}
    FROM profiles_event e
    -- Processed: an event stored with its profile already (a shop's order) is
    -- counted by the chunk that processes it, not before.
    WHERE e.profile_id = ANY(%(full)s::bigint[]) AND {_COUNTED}
),
latest AS (
    SELECT c.profile_id,
        max(c.timestamp) FILTER (WHERE c.kind IS DISTINCT FROM 'not_seen')
            AS last_seen_at,
        max(c.timestamp) FILTER (WHERE c.kind = 'open') AS last_opened_at,
        max(c.timestamp) FILTER (WHERE c.kind = 'click') AS last_clicked_at
    FROM chunk c
    GROUP BY c.profile_id
),
visit_days AS (
    -- Each day's first new visit (by time, then id) and when it is weighed from.
    SELECT DISTINCT ON (c.profile_id, day) c.profile_id,
        date_trunc('day', c.timestamp AT TIME ZONE 'UTC') AS day,
        c.timestamp AS first_at, c.id AS first_id, c.weighed_at
    FROM chunk c
    WHERE c.kind = 'visit'
    ORDER BY c.profile_id, day, c.timestamp, c.id
),
visit_before AS (
    -- The days' first visits processed before the chunk: one scan of the recent
    -- visits of the profiles with a new one (the chunk's are mostly from today).
    SELECT DISTINCT ON (e.profile_id, day) e.profile_id,
        date_trunc('day', e.timestamp AT TIME ZONE 'UTC') AS day,
        e.timestamp AS first_at, e.id AS first_id, {_WEIGHED_AT} AS weighed_at
    FROM profiles_event e
    WHERE e.profile_id = ANY(%(visit_profiles)s::bigint[])
      AND e.event = '' AND e.type IN ('page', 'screen')
      AND e.timestamp >= (SELECT min(d.day) FROM visit_days d) AT TIME ZONE 'UTC'
      AND {_COUNTED} AND NOT {_FRESH}
    ORDER BY e.profile_id, day, e.timestamp, e.id
),
visit_moves AS (
    -- A day counts once, at its first visit: a new day adds its points, and a
    -- visit before the day's earlier first one moves them to its time. Grouped,
    -- not joined: guessing a few days from the chunk's estimate, the planner once
    -- nested the join, reading every earlier visit again for each new day.
    SELECT v.profile_id,
        (array_agg(v.weighed_at ORDER BY v.first_at, v.first_id))[1] AS weighed_at,
        (array_agg(v.weighed_at) FILTER (WHERE NOT v.fresh))[1] AS was_weighed_at
    FROM (
        SELECT d.profile_id, d.day, d.first_at, d.first_id, d.weighed_at,
            true AS fresh
        FROM visit_days d
        UNION ALL
        SELECT b.profile_id, b.day, b.first_at, b.first_id, b.weighed_at, false
        FROM visit_before b
    ) v
    GROUP BY v.profile_id, v.day
    HAVING (array_agg(v.fresh ORDER BY v.first_at, v.first_id))[1]
),
order_events AS MATERIALIZED (
    -- Processed orders only (the chunk's are by now), as for a full count.
    SELECT e.profile_id, e.id, e.timestamp, e.processed_at,
        {_WEIGHED_AT} AS weighed_at, {_ORDER_KEY} AS order_key, {_ORDER_RAW} AS raw,
        {_ORDER_IN_CURRENCY} AS ours, {_FRESH} AS fresh,
        {_AMOUNT.format(raw=_ORDER_RAW)} AS amount,
        e.source = %(shop_source)s AS from_shop, {_HAS_CATEGORY} AS has_category,
        e.event = %(order_updated)s AS is_update
    FROM profiles_event e
    WHERE e.profile_id = ANY(%(order_profiles)s::bigint[])
      AND e.type = 'track' AND {_COUNTED} AND NOT {_TEST_ORDER}
      AND (e.event = %(order_event)s
        OR (e.event = %(order_updated)s AND e.source = %(shop_source)s))
),
order_reports AS (
    -- The report of each order whose products count towards categories: the first
    -- processed that names a category (the site and the shop may both report it,
    -- and the shop's name none). A chunk adds the categories of those it processed.
    SELECT DISTINCT ON (o.profile_id, o.order_key) o.id, o.fresh
    FROM order_events o
    WHERE NOT o.is_update
    ORDER BY o.profile_id, o.order_key, o.has_category DESC, o.processed_at, o.id
),
orders AS (
    -- An order counts once, from the time of its first report, with the amount of
    -- the report that has one in our currency: the shop's latest edit, else the
    -- shop's first report (what was paid), else the first by time. An edit alone,
    -- with no report of the order, is no order.
    SELECT DISTINCT ON (o.profile_id, o.order_key) o.profile_id, o.order_key,
        min(o.timestamp) FILTER (WHERE NOT o.is_update) OVER reports AS timestamp,
        bool_or(NOT o.is_update) OVER reports AS reported, o.raw, o.ours
    FROM order_events o
    WINDOW reports AS (PARTITION BY o.profile_id, o.order_key)
    ORDER BY o.profile_id, o.order_key,
        coalesce(o.ours AND {_COUNTS.format(a="o.amount")}, false) DESC,
        o.from_shop DESC, o.is_update DESC,
        CASE WHEN o.is_update THEN o.timestamp END DESC NULLS LAST,
        CASE WHEN o.is_update THEN o.id END DESC NULLS LAST, o.timestamp, o.id
),
order_changes AS (
    -- Refunds and cancellations of the orders, each refund once by its refund_id
    -- (the shop's report of it first).
    SELECT DISTINCT ON (e.profile_id, e.event, order_key, change_key)
        e.profile_id, e.event, {_ORDER_KEY} AS order_key,
        {_id_key("refund_id")} AS change_key,
        coalesce(jsonb_typeof({_ORDER_RAW}), 'null') = 'null' AS whole,
        {_AMOUNT.format(raw=_ORDER_RAW)} AS amount, {_ORDER_IN_CURRENCY} AS ours,
        e.source = %(shop_source)s AS from_shop
    FROM profiles_event e
    WHERE e.profile_id = ANY(%(order_profiles)s::bigint[])
      AND e.type = 'track' AND e.event = ANY(%(order_change_events)s::text[])
      AND {_COUNTED} AND NOT {_TEST_ORDER}
    ORDER BY e.profile_id, e.event, order_key, change_key,
        e.source = %(shop_source)s DESC, e.timestamp, e.id
),
refunds AS (
    -- Where the shop reported refunds of an order, they are what was paid back:
    -- the site's of the same order (the spec's carry no refund_id) are the same
    -- money told again.
    SELECT c.profile_id, c.order_key, bool_or(c.whole) AS whole,
        sum(abs(c.amount)) FILTER (WHERE abs(c.amount) < %(amount_limit)s)
            AS refunded
    FROM order_changes c
    WHERE c.event = %(refunded_event)s AND c.ours
      AND (c.from_shop OR NOT EXISTS (
          SELECT 1 FROM order_changes s
          WHERE s.profile_id = c.profile_id AND s.order_key = c.order_key
            AND s.event = %(refunded_event)s AND s.from_shop))
    GROUP BY c.profile_id, c.order_key
),
order_amounts AS (
    SELECT o.profile_id, o.timestamp,
        CASE WHEN o.ours THEN {_AMOUNT.format(raw="o.raw")} END AS amount,
        r.whole, r.refunded
    FROM orders o
    LEFT JOIN refunds r ON r.profile_id = o.profile_id AND r.order_key = o.order_key
    WHERE o.reported AND NOT EXISTS (
        SELECT 1 FROM order_changes c
        WHERE c.profile_id = o.profile_id AND c.order_key = o.order_key
          AND c.event = %(cancelled_event)s
    )
),
order_totals AS (
    SELECT a.profile_id,
        count(*) AS order_count,
        min(a.timestamp) AS first_order_at,
        max(a.timestamp) AS last_order_at,
        coalesce(sum(CASE
            WHEN a.whole THEN 0
            WHEN a.refunded IS NULL THEN a.amount
            ELSE greatest(0, a.amount - a.refunded) END
        ) FILTER (WHERE {_AMOUNT_COUNTS}), 0) AS lifetime_value,
        -- The average's orders: a refund that took all of one leaves it out.
        count(*) FILTER (WHERE {_AMOUNT_COUNTS} AND NOT coalesce(a.amount > 0
            AND (a.whole OR a.refunded >= a.amount), false)) AS orders_counted
    FROM order_amounts a
    GROUP BY a.profile_id
),
order_moves AS (
    -- An order counts once, at its first event (by time, then id): as a day does.
    SELECT o.profile_id,
        (array_agg(o.fresh ORDER BY o.timestamp, o.id))[1] AS first_fresh,
        (array_agg(o.weighed_at ORDER BY o.timestamp, o.id))[1] AS weighed_at,
        (array_agg(o.weighed_at ORDER BY o.timestamp, o.id)
            FILTER (WHERE NOT o.fresh))[1] AS was_weighed_at
    FROM order_events o
    WHERE NOT o.is_update
    GROUP BY o.profile_id, o.order_key
    HAVING bool_or(o.fresh)
),
points AS (
    SELECT c.profile_id, c.weighed_at AS at,
        CASE c.kind WHEN 'open' THEN %(open_points)s ELSE %(click_points)s END
            AS points
    FROM chunk c
    WHERE c.kind IN ('open', 'click')
    UNION ALL
    SELECT v.profile_id, v.weighed_at, %(visit_points)s FROM visit_moves v
    UNION ALL
    SELECT v.profile_id, v.was_weighed_at, 0 - %(visit_points)s
    FROM visit_moves v WHERE v.was_weighed_at IS NOT NULL
    UNION ALL
    SELECT o.profile_id, o.weighed_at, %(order_points)s
    FROM order_moves o WHERE o.first_fresh
    UNION ALL
    SELECT o.profile_id, o.was_weighed_at, 0 - %(order_points)s
    FROM order_moves o WHERE o.first_fresh AND o.was_weighed_at IS NOT NULL
),
added AS (
    SELECT p.profile_id, sum(p.points * {_weight("p.at")}) AS value
    FROM points p
    GROUP BY p.profile_id
),
engagement AS (
    SELECT p.id AS profile_id, greatest(0::float8,
        CASE
            WHEN p.id = ANY(%(full)s::bigint[]) OR p.engagement_at IS NULL
              OR coalesce(p.engagement_value, 0) < %(value_min)s
            THEN 0::float8
            ELSE p.engagement_value * {_weight("p.engagement_at")}
        END + coalesce(a.value, 0)) AS value
    FROM profiles_profile p
    LEFT JOIN added a ON a.profile_id = p.id
    WHERE p.id = ANY(%(profiles)s::bigint[])
),
chunk_categories AS (
    -- A category whatever its case ("Shoes", "shoes"), spelt the way that sorts
    -- first by code point, so that chunk by chunk or all at once it is one name.
    SELECT c.profile_id,
        min(left(btrim(found.category, %(category_blanks)s), %(category_chars)s)
            COLLATE "C") AS category,
        count(*) AS n, max(c.timestamp) AS last_at
    FROM chunk c
    CROSS JOIN LATERAL (
        -- Composed: "Café" typed with a combining accent is the same category.
        SELECT normalize(c.product_properties->>'category', NFC) AS category
        WHERE jsonb_typeof(c.product_properties->'category') = 'string'
        UNION ALL
        SELECT normalize(item->>'category', NFC)
        FROM jsonb_array_elements(CASE
            WHEN jsonb_typeof(c.product_properties->'products') = 'array'
            THEN c.product_properties->'products' ELSE '[]'::jsonb END) AS item
        WHERE jsonb_typeof(item->'category') = 'string'
    ) found
    WHERE c.product_properties IS NOT NULL
      AND (NOT c.is_order OR c.id IN (SELECT r.id FROM order_reports r WHERE r.fresh))
      AND c.profile_id = ANY(%(category_profiles)s::bigint[])
      AND btrim(found.category, %(category_blanks)s) <> ''
    GROUP BY c.profile_id,
        lower(left(btrim(found.category, %(category_blanks)s), %(category_chars)s))
),
category_totals AS (
    -- What each profile kept, plus what the chunk saw.
    SELECT t.profile_id, min(t.category COLLATE "C") AS category, sum(t.n) AS n,
        max(t.last_at) AS last_at
    FROM (
        SELECT p.id AS profile_id, normalize(kept.key, NFC) AS category,
            (kept.value->>0)::numeric AS n,
            (kept.value->>1)::numeric AS last_at
        FROM profiles_profile p
        CROSS JOIN LATERAL jsonb_each(CASE
            WHEN jsonb_typeof(p.category_counts) = 'object'
            THEN p.category_counts ELSE '{{}}'::jsonb END) AS kept
        WHERE p.id = ANY(%(category_profiles)s::bigint[])
          AND NOT p.id = ANY(%(full)s::bigint[])
        UNION ALL
        SELECT k.profile_id, k.category, k.n, extract(epoch FROM k.last_at)
        FROM chunk_categories k
    ) t
    GROUP BY t.profile_id, lower(t.category)
),
categories AS (
    SELECT t.profile_id,
        jsonb_object_agg(t.category, jsonb_build_array(t.n, t.last_at)) AS counts,
        (array_agg(t.category ORDER BY t.n DESC, t.last_at DESC, t.category))[1]
            AS favourite
    FROM category_totals t
    GROUP BY t.profile_id
),
figures AS MATERIALIZED (
    -- Every figure of each profile, gathered before any profile row is joined: each
    -- aggregate above is computed once. Joined straight to the updated rows, a plan
    -- that guessed one profile (a profile table grown by updates, or simply large)
    -- put the aggregates inside a nested loop and recomputed the chunk's categories
    -- for every profile: ten minutes for 2,000 profiles.
    SELECT g.profile_id, g.value AS engagement_value,
        g.profile_id = ANY(%(order_profiles)s::bigint[]) AS orders,
        g.profile_id = ANY(%(category_profiles)s::bigint[]) AS categories,
        g.profile_id = ANY(%(full)s::bigint[]) AS full_count,
        l.last_seen_at, l.last_opened_at, l.last_clicked_at,
        o.lifetime_value, o.order_count, o.orders_counted, o.first_order_at,
        o.last_order_at, f.counts AS category_counts, f.favourite
    FROM engagement g
    LEFT JOIN latest l ON l.profile_id = g.profile_id
    LEFT JOIN order_totals o ON o.profile_id = g.profile_id
    LEFT JOIN categories f ON f.profile_id = g.profile_id
)
UPDATE profiles_profile p SET
    -- A profile counted in full reads them from its events alone: one whose
    -- order moved to another customer is no longer seen at its time.
    last_seen_at = CASE WHEN x.full_count
        THEN x.last_seen_at ELSE greatest(p.last_seen_at, x.last_seen_at) END,
    last_opened_at = CASE WHEN x.full_count
        THEN x.last_opened_at ELSE greatest(p.last_opened_at, x.last_opened_at) END,
    last_clicked_at = CASE WHEN x.full_count
        THEN x.last_clicked_at
        ELSE greatest(p.last_clicked_at, x.last_clicked_at) END,
    engagement_value = x.engagement_value,
    engagement_at = %(now)s,
    engagement_score = least(%(engagement_max)s, round(x.engagement_value))::int,
    lifetime_value = CASE WHEN x.orders
        THEN greatest(0 - %(value_max)s,
            least(coalesce(x.lifetime_value, 0), %(value_max)s))
        ELSE p.lifetime_value END,
    order_count = CASE WHEN x.orders
        THEN coalesce(x.order_count, 0) ELSE p.order_count END,
    first_order_at = CASE WHEN x.orders
        THEN x.first_order_at ELSE p.first_order_at END,
    last_order_at = CASE WHEN x.orders
        THEN x.last_order_at ELSE p.last_order_at END,
    average_order_value = CASE WHEN x.orders
        THEN round(x.lifetime_value / nullif(x.orders_counted, 0), 2)
        ELSE p.average_order_value END,
    category_counts = CASE WHEN x.categories
        THEN coalesce(x.category_counts, '{{}}'::jsonb) ELSE p.category_counts END,
    favourite_category = CASE WHEN x.categories
        THEN coalesce(x.favourite, '') ELSE p.favourite_category END,
    updated_at = %(now)s
FROM figures x
WHERE p.id = x.profile_id AND p.id = ANY(%(profiles)s::bigint[])
"""  # noqa: S608 - only this module's constant fragments are formatted in


def _figures_params(
    refresh: TraitsRefresh, *, full: set[int], now: datetime
) -> dict[str, Any]:
    return {
        "profiles": int_array(sorted(refresh.profile_ids)),
        "events": int_array(refresh.event_ids),
        "full": int_array(sorted(full)),
        "order_profiles": int_array(sorted(refresh.order_profile_ids | full)),
        "visit_profiles": int_array(sorted(refresh.visit_profile_ids - full)),
        "category_profiles": int_array(sorted(refresh.category_profile_ids | full)),
        "currency": settings.BESPOKE_CURRENCY.upper(),
        "opened": EMAIL_OPENED,
        "clicked": EMAIL_LINK_CLICKED,
        "order_event": ORDER_COMPLETED,
        "order_updated": ORDER_UPDATED,
        "shop_source": SHOP_SOURCE,
        "not_seen": list(NOT_SEEN_EVENTS),
        "order_change_events": [ORDER_REFUNDED, ORDER_CANCELLED],
        "refunded_event": ORDER_REFUNDED,
        "cancelled_event": ORDER_CANCELLED,
        "product_events": list(PRODUCT_EVENTS),
        "number_re": f"^[{NUMBER_BLANKS}]*{NUMBER_TEXT}[{NUMBER_BLANKS}]*$",
        "blanks": NUMBER_BLANKS,
        "amount_limit": ORDER_AMOUNT_LIMIT,
        "now": now,
        "half_life": ENGAGEMENT_HALF_LIFE_SECONDS,
        "weight_horizon": ENGAGEMENT_HALF_LIFE_SECONDS * ENGAGEMENT_HALF_LIVES_MAX,
        "value_min": ENGAGEMENT_VALUE_MIN,
        "open_points": ENGAGEMENT_POINTS["open"],
        "click_points": ENGAGEMENT_POINTS["click"],
        "visit_points": ENGAGEMENT_POINTS["visit_day"],
        "order_points": ENGAGEMENT_POINTS["order"],
        "engagement_max": ENGAGEMENT_MAX,
        "category_chars": CATEGORY_MAX_CHARS,
        "category_blanks": CATEGORY_BLANKS,
        "amount_smallest": AMOUNT_SMALLEST,
    }


# Other databases ---------------------------------------------------------------------


def _figures_python(profile_ids: set[int], *, now: datetime) -> dict[int, dict]:
    # Processed events only (one stored with its profile already, a shop's order,
    # counts once its chunk processes it), and none that failed.
    events = Event.objects.filter(
        profile_id__in=profile_ids, processed_at__isnull=False, processing_error=""
    ).order_by("timestamp", "id")
    rows = events.values_list(
        "id",
        "profile_id",
        "type",
        "event",
        "timestamp",
        "properties",
        "context",
        "processed_at",
        "source",
    )
    per_profile: dict[int, list[tuple]] = {}
    for row in rows.iterator():
        per_profile.setdefault(row[1], []).append(row)
    tests = _test_orders(row for rows in per_profile.values() for row in rows)

    return {
        profile_id: _profile_figures(profile_rows, now=now, test_orders=tests)
        for profile_id, profile_rows in per_profile.items()
    }


def _test_orders(rows: Iterable[tuple]) -> set[str]:
    """The keys of the orders reported in `rows` that the shop marked as tests."""
    keys = {_order_key(row) for row in rows if _is_order_event(row)}
    found = ShopOrder.objects.filter(is_test=True, shop_id__in=keys)
    return set(found.values_list("shop_id", flat=True))


def _is_order_event(row: tuple) -> bool:
    return row[2] == EventType.TRACK and row[3] in ORDER_EVENTS


def _profile_figures(
    rows: list[tuple], *, now: datetime, test_orders: set[str]
) -> dict[str, Any]:
    # A test order counts in no figure (as _TEST_ORDER), but the person placing it
    # was seen then.
    counted = [
        row
        for row in rows
        if not (_is_order_event(row) and _order_key(row) in test_orders)
    ]
    figures: dict[str, Any] = {
        "last_seen_at": max(
            (row[4] for row in rows if not _is_not_seen(row)), default=None
        ),
        "last_opened_at": max(
            (row[4] for row in rows if _is_human_open(row)), default=None
        ),
        "last_clicked_at": max(
            (row[4] for row in rows if _is_click(row)), default=None
        ),
        "engagement_value": _engagement(counted, now=now),
        "category_counts": _category_counts(counted),
        **_orders_total(counted),
    }
    return {name: value for name, value in figures.items() if value is not None}


def _is_human_open(row: tuple) -> bool:
    kind, name, properties, context = row[2], row[3], row[5], row[6]
    if kind != EventType.TRACK or name != EMAIL_OPENED:
        return False
    flags = (
        _dict(properties).get("machine_open"),
        _dict(properties).get("sg_machine_open"),
        _dict(context).get("machine_open"),
    )
    return not any(flag is True or flag == "true" for flag in flags)


def _is_not_seen(row: tuple) -> bool:
    if row[2] != EventType.TRACK:
        return False
    machine_open = row[3] == EMAIL_OPENED and not _is_human_open(row)
    shop_edit = row[3] == ORDER_UPDATED and _from_shop(row)
    return row[3] in NOT_SEEN_EVENTS or machine_open or shop_edit


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


def _order_key(row: tuple, name: str = "order_id") -> str:
    return order_key(_dict(row[5]), event_id=row[0], name=name)


def order_key(
    properties: dict[str, Any], *, event_id: int, name: str = "order_id"
) -> str:
    """The order an event reports, as figures count orders: one key per order id."""
    order_id = properties.get(name)
    if not order_id:
        return f"event:{event_id}"
    # Written as the SQL path reads it, so "1057", 1057 and 1057.0 are one order.
    if isinstance(order_id, int) and not isinstance(order_id, bool):
        return str(order_id)
    if isinstance(order_id, float):
        # A float has at most 17 digits, well inside Decimal's 28.
        return format(Decimal(str(order_id)).normalize(), "f")
    return order_id if isinstance(order_id, str) else json.dumps(order_id)


def _from_shop(row: tuple) -> bool:
    return row[8] == SHOP_SOURCE


def _orders_total(rows: list[tuple]) -> dict[str, Any]:
    currency = settings.BESPOKE_CURRENCY.upper()
    cancelled, refunds = _order_changes(rows, currency=currency)
    orders = [row for row in _first_orders(rows) if _order_key(row) not in cancelled]
    reports: dict[str, list[tuple]] = {}
    edits: dict[str, list[tuple]] = {}
    for row in rows:
        if row[2] == EventType.TRACK and row[3] == ORDER_COMPLETED:
            reports.setdefault(_order_key(row), []).append(row)
        elif row[2] == EventType.TRACK and row[3] == ORDER_UPDATED and _from_shop(row):
            edits.setdefault(_order_key(row), []).append(row)
    counted, refunded_whole = [], 0
    for row in orders:
        # Its amount is the shop's latest edit's, else the shop's, else the first
        # report's that has one (as the SQL's orders read it); its time stays the
        # first report's. Rows come in time order.
        key = _order_key(row)
        readable = [
            (amount, report)
            for report in [*reversed(edits.get(key, [])), *reports[key]]
            if (amount := _order_amount(_dict(report[5]), currency=currency))
            is not None
        ]
        if not readable:
            continue
        amount = min(readable, key=lambda pair: not _from_shop(pair[1]))[0]
        refunded = refunds.get(_order_key(row))
        if refunded is not None:
            # Refunded whole, it was placed (the order count keeps it) but kept
            # nothing: the average is of the orders that kept something.
            refunded_whole += amount > 0 and refunded >= amount
            amount = max(Decimal("0"), amount - refunded)
        counted.append(amount)
    return {
        "order_count": len(orders),
        "first_order_at": orders[0][4] if orders else None,
        "last_order_at": max((row[4] for row in orders), default=None),
        "lifetime_value": sum(counted, Decimal("0")),
        "orders_counted": len(counted) - refunded_whole,
        "orders_skipped": len(orders) - len(counted),
    }


def _order_changes(
    rows: list[tuple], *, currency: str
) -> tuple[set[str], dict[str, Decimal]]:
    """Return the keys of the cancelled orders, and what was refunded of each order.

    A refund with no amount refunds the whole order (an infinite amount here).
    """
    cancelled: set[str] = set()
    refunds: dict[str, Decimal] = {}
    # Each refund once by its refund_id, the shop's report of it first; where the
    # shop reported refunds of an order, the site's of it are the same money.
    reported: dict[tuple[str, str], tuple] = {}
    for row in sorted(rows, key=lambda row: not _from_shop(row)):
        if row[2] != EventType.TRACK or row[3] not in (ORDER_REFUNDED, ORDER_CANCELLED):
            continue

        key = _order_key(row)
        if row[3] == ORDER_CANCELLED:
            cancelled.add(key)
            continue
        reported.setdefault((key, _order_key(row, "refund_id")), row)
    shop_refunded = {key for (key, _), row in reported.items() if _from_shop(row)}
    for (key, _), row in reported.items():
        if key in shop_refunded and not _from_shop(row):
            continue
        properties = _dict(row[5])
        if not _in_currency(properties, currency=currency):
            continue
        if _order_raw(properties) is None:
            refunds[key] = Decimal("Infinity")
            continue
        amount = _order_amount(properties, currency=currency)
        if amount is not None:
            refunds[key] = refunds.get(key, Decimal("0")) + abs(amount)
    return cancelled, refunds


def _in_currency(properties: dict[str, Any], *, currency: str) -> bool:
    order_currency = properties.get("currency")
    return not order_currency or str(order_currency).upper() == currency


def _order_raw(properties: dict[str, Any]) -> Any:
    raw = properties.get("total")
    return properties.get("revenue") if raw is None else raw


def _order_amount(properties: dict[str, Any], *, currency: str) -> Decimal | None:
    if not _in_currency(properties, currency=currency):
        return None

    amount = number_coerce(_order_raw(properties))
    if amount is None or abs(amount) >= ORDER_AMOUNT_LIMIT:
        return None
    return amount


def _engagement(rows: list[tuple], *, now: datetime) -> float:
    points: list[tuple[int, datetime]] = []
    for row in rows:
        if _is_click(row):
            points.append((ENGAGEMENT_POINTS["click"], _weighed_at(row)))
        elif _is_human_open(row):
            points.append((ENGAGEMENT_POINTS["open"], _weighed_at(row)))

    # Rows come in time order: the first visit of each day is the day's.
    visit_days: dict[Any, datetime] = {}
    for row in rows:
        if row[2] in VISIT_TYPES and not row[3]:
            visit_days.setdefault(row[4].astimezone(UTC).date(), _weighed_at(row))
    points += [(ENGAGEMENT_POINTS["visit_day"], at) for at in visit_days.values()]
    points += [
        (ENGAGEMENT_POINTS["order"], _weighed_at(row)) for row in _first_orders(rows)
    ]

    return sum(value * _weight_python(at, now=now) for value, at in points)


def _weighed_at(row: tuple) -> datetime:
    # As _WEIGHED_AT: its time, or when it was processed if that came first.
    return min(row[4], row[7]) if row[7] is not None else row[4]


def _weight_python(at: datetime, *, now: datetime) -> float:
    age = (now - at).total_seconds() / ENGAGEMENT_HALF_LIFE_SECONDS
    return 0.0 if age > ENGAGEMENT_HALF_LIVES_MAX else 0.5 ** max(0.0, age)


def _category_counts(rows: list[tuple]) -> dict[str, list]:
    # An order counts by its first processed report that names a category, as
    # _FIGURES_UPDATE reads it.
    def rank(row: tuple) -> tuple:
        return (not _categories(_dict(row[5])), row[7], row[0])

    reports: dict[str, tuple] = {}
    for row in rows:
        if row[2] == EventType.TRACK and row[3] == ORDER_COMPLETED:
            key = _order_key(row)
            if key not in reports or rank(row) < rank(reports[key]):
                reports[key] = row
    counted_orders = {row[0] for row in reports.values()}

    # By lower case: one category whatever its case, spelt as _FIGURES_UPDATE
    # spells it (the spelling first by code point).
    groups: dict[str, list] = {}
    for row in rows:
        if row[2] != EventType.TRACK or row[3] not in PRODUCT_EVENTS:
            continue
        if row[3] == ORDER_COMPLETED and row[0] not in counted_orders:
            continue
        for category in _categories(_dict(row[5])):
            seen = row[4].timestamp()
            name, count, last = groups.get(category.lower(), (category, 0, seen))
            groups[category.lower()] = [
                min(name, category),
                count + 1,
                max(last, seen),
            ]
    return {name: [count, last] for name, count, last in groups.values()}


def _favourite(counts: dict[str, Any]) -> str:
    """The category seen most often; a tie goes to the latest seen, then by name."""
    if not counts:
        return ""
    return min(
        counts,
        key=lambda name: (-counts[name][0], -float(counts[name][1]), name),
    )


def _categories(properties: dict[str, Any]) -> list[str]:
    found = [properties.get("category")]
    products = properties.get("products")
    if isinstance(products, list):
        found += [_dict(item).get("category") for item in products]
    # Composed, as _FIGURES_UPDATE reads them: one "Café" however its accent was typed.
    texts = [unicodedata.normalize("NFC", v) for v in found if isinstance(v, str)]
    return [
        text.strip(CATEGORY_BLANKS)[:CATEGORY_MAX_CHARS]
        for text in texts
        if text.strip(CATEGORY_BLANKS)
    ]
