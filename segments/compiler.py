"""Compiling a validated rule (see segments/language.py) into one Q over Profile.

The whole tree becomes a single SQL query: groups are AND/OR/NOT, behaviour is
EXISTS over the event log, and JSON traits and properties are read through the
expressions in segments/expressions.py so that a value stored as text or as a
number gives the same answer on PostgreSQL and SQLite. A segment is never
evaluated by looping over profiles in Python.

Meanings a marketer relies on:
- "not equal", "not in" and "is empty" include profiles that lack the field;
- "did not" and counts of zero include profiles with no events at all;
- a count of `Order Completed` events counts orders: the site's and the shop's
  report of one order (the same `order_id`) are one, as in the order metrics;
  `Checkout Started` counts checkouts by `checkout_id` the same way;
- windows are measured on the event's own time, boundaries included;
- text comparisons ignore case; dates in traits are 'YYYY-MM-DD' text, and "today"
  is the account's day (BESPOKE_ACCOUNT_TIME_ZONE).
"""

import calendar
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Count, Exists, F, OuterRef, Q, Value
from django.db.models.functions import ExtractDay, ExtractMonth, Substr
from django.db.models.lookups import (
    Contains,
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    IsNull,
    LessThan,
    LessThanOrEqual,
    Regex,
    StartsWith,
)
from django.utils import timezone

from profiles.emails import InvalidEmail, email_normalize
from profiles.models import Event, Profile, ProfileTag, TraitType
from profiles.traits import allowed_spelling, country_code_read
from segments.expressions import (
    ArrayItemEquals,
    ArrayItemMatches,
    Caseless,
    JsonNumber,
    OrderKey,
    json_text,
)
from segments.geo import CONTINENTS
from segments.language import (
    METRICS,
    PROFILE_DATE_FIELDS,
    RuleInvalid,
    SegmentLookup,
    rule_number,
    rule_validate,
)

# Events one thing may be reported by twice (the site's tracking and the shop's
# webhook), and the property that names that thing: each counts once.
COUNTED_BY = {"Order Completed": "order_id", "Checkout Started": "checkout_id"}
_ONCE = {("gte", 1), ("gt", 0)}
_NEVER = {("lt", 1), ("lte", 0), ("eq", 0)}
ENGAGEMENT_EVENTS = {"opened": "Email Opened", "clicked": "Email Link Clicked"}

# A calendar day: an ISO date, alone or before a time ('2024-01-05T10:00:00Z',
# '2024-01-05 10:00'),
# or a month and day with no year ('--07-14', a birthday, the 29th of February
# included). Written for PostgreSQL's regular expressions and Python's (SQLite).
_MONTH_DAY = (
    "((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])"
    "|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
    "|02-(0[1-9]|1[0-9]|2[0-8]))"
)
_LEAP_YEAR = "([0-9]{2}(0[48]|[2468][048]|[13579][26])|([02468][048]|[13579][26])00)"
ISO_DAY = (
    rf"\A(?!0000)([0-9]{{4}}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
    r"([T ][0-9]{2}:[0-9]{2}|\Z)"
)
YEARLESS_DAY = rf"\A--({_MONTH_DAY}|02-29)\Z"

_NUMBER_LOOKUPS = {
    "gt": GreaterThan,
    "gte": GreaterThanOrEqual,
    "lt": LessThan,
    "lte": LessThanOrEqual,
}


def rule_compile(
    rule: Any,
    *,
    now: datetime | None = None,
    lookup: SegmentLookup | None = None,
    slug: str | None = None,
    one_profile: bool = False,
    check_schema: bool = False,
) -> Q:
    """Compile a rule into a Q over Profile; raise RuleInvalid if it is not valid.

    `one_profile` shapes the SQL for a query about one profile (a membership
    refresh): every behaviour test stays a lookup correlated to that profile,
    instead of grouping the qualifying profiles once, which suits a whole segment.
    `check_schema` also refuses conditions that break a declared trait's type, as
    saving does (see rule_validate).
    """
    lookup = lookup or SegmentLookup()
    errors = rule_validate(rule, lookup=lookup, slug=slug, check_schema=check_schema)
    if errors:
        raise RuleInvalid(errors)

    seen = (slug,) if slug else ()
    compiler = _Compiler(
        now=now or timezone.now(), lookup=lookup, seen=seen, one_profile=one_profile
    )
    return compiler.node(rule)


def profiles_matching(rule: dict, *, now: datetime | None = None) -> Any:
    """Return the queryset of profiles a rule selects (one SQL query when evaluated)."""
    return Profile.objects.filter(rule_compile(rule, now=now))


class _Compiler:
    def __init__(
        self, *, now: datetime, lookup: SegmentLookup, seen: tuple, one_profile: bool
    ) -> None:
        self.one_profile = one_profile
        self.now = now
        self.today = now.astimezone(ZoneInfo(settings.BESPOKE_ACCOUNT_TIME_ZONE)).date()
        self.lookup = lookup
        self.seen = seen

    # Groups -------------------------------------------------------------------

    def node(self, node: dict) -> Q:
        if "all" in node:
            return self.group(node["all"], all_of=True)
        if "any" in node:
            return self.group(node["any"], all_of=False)
        if "not" in node:
            return ~self.node(node["not"])
        for kind in ("attribute", "metric", "event", "engagement", "trend", "consent"):
            if kind in node:
                return getattr(self, kind)(node)
        if "suppressed" in node:
            return Q(suppressed_at__isnull=not node["suppressed"])
        return self.segment(node["segment"])

    def group(self, children: list, *, all_of: bool) -> Q:
        if not children:
            # An empty 'all' matches everyone; an empty 'any' matches no one.
            return Q(pk__isnull=False) if all_of else Q(pk__in=[])
        result = self.node(children[0])
        for child in children[1:]:
            result = (
                (result & self.node(child)) if all_of else (result | self.node(child))
            )
        return result

    # Profile fields, traits and metrics -------------------------------------------

    def attribute(self, node: dict) -> Q:
        name = node["attribute"]
        if name == "continent":
            return self.continent(node)
        if name == "tags":
            return self.tags(node)
        if name in PROFILE_DATE_FIELDS:
            return self.date_column(name, node)
        if name == "email":
            return self.text(F(name), _email_values_normalized(node))
        if name == "country_code":
            return self.text(F(name), _country_values_normalized(node))
        if name.startswith("traits."):
            key = name[len("traits.") :]
            declared = self.lookup.traits().get(key)
            # A declared number compares as a number even when the rule wrote "12".
            numeric = declared is not None and declared.type == TraitType.NUMBER
            if declared is not None and declared.allowed_values and not numeric:
                node = _allowed_spellings(declared, node)
            return self.json_value("traits", key, node, numeric=numeric)
        return self.text(F(name), node)

    def metric(self, node: dict) -> Q:
        name, kind = node["metric"], METRICS[node["metric"]]
        if kind == "date":
            return self.date_column(name, node)
        if kind == "text":
            return self.text(F(name), node)
        return self.number(F(name), node)

    def continent(self, node: dict) -> Q:
        values = node["value"] if isinstance(node["value"], list) else [node["value"]]
        codes = sorted(set().union(*(CONTINENTS[value] for value in values)))
        matched = Q(country_code__in=codes)
        return ~matched if node["op"] in ("neq", "not_in") else matched

    def tags(self, node: dict) -> Q:
        tags = ProfileTag.objects.filter(profile=OuterRef("pk"))
        if node["op"] == "contains":
            tags = tags.filter(Exact(Caseless("name"), Caseless(Value(node["value"]))))
        has = Q(Exists(tags))
        return ~has if node["op"] == "is_empty" else has

    def json_value(
        self, column: str, key: str, node: dict, *, numeric: bool = False
    ) -> Q:
        """A trait or property: numbers compare as numbers, text as text, dates as days."""
        op, value = node["op"], node.get("value")
        text = json_text(column, key)
        if op in ("within_last_days", "more_than_days_ago", "anniversary_in_days"):
            return self.date_text(text, op, value)
        if isinstance(value, bool):
            matched = Q(IsNull(text, False)) & Q(
                **{f"{column}__{key.replace('.', '__')}": value}
            )
            return matched if op == "eq" else ~matched
        if _is_numeric_comparison(op, value) or (
            numeric and op in ("eq", "neq", "in", "not_in")
        ):
            return self.number(JsonNumber(text), node)
        return self.text(text, node)

    # Each comparison is ANDed with IS NOT NULL so that it is plainly true or false:
    # SQL's third value would otherwise make NOT (missing = 'x') exclude the profile.

    def text(self, expression: Any, node: dict) -> Q:
        op, value = node["op"], node.get("value")
        known = Q(IsNull(expression, False))
        present = known & ~Q(Exact(expression, Value("")))
        if op == "exists":
            return present
        if op == "is_empty":
            return ~present
        # Both sides are lower-cased by the database (see Caseless).
        if op == "contains":
            return known & Q(Contains(Caseless(expression), Caseless(Value(value))))
        if op == "starts_with":
            return known & Q(StartsWith(Caseless(expression), Caseless(Value(value))))

        values = value if op in ("in", "not_in") else [value]
        matched = known & Q(
            In(Caseless(expression), [Caseless(Value(str(v))) for v in values])
        )
        return matched if op in ("eq", "in") else ~matched

    def number(self, expression: Any, node: dict) -> Q:
        op, value = node["op"], node.get("value")
        known = Q(IsNull(expression, False))
        if op == "exists":
            return known
        if op == "is_empty":
            return ~known
        if op == "between":
            # Validation refuses swapped bounds; a rule saved before it did is read
            # as the range it names.
            low, high = sorted(rule_number(v) for v in value)
            return (
                known
                & Q(GreaterThanOrEqual(expression, low))
                & Q(LessThanOrEqual(expression, high))
            )
        if op in _NUMBER_LOOKUPS:
            return known & Q(_NUMBER_LOOKUPS[op](expression, rule_number(value)))

        values = [
            rule_number(v) for v in (value if isinstance(value, list) else [value])
        ]
        matched = known & Q(In(expression, values))
        return matched if op in ("eq", "in") else ~matched

    def date_column(self, name: str, node: dict) -> Q:
        op, days = node["op"], node.get("value")
        if op == "exists":
            return Q(**{f"{name}__isnull": False})
        if op == "is_empty":
            return Q(**{f"{name}__isnull": True})
        if op == "within_last_days":
            return Q(**{f"{name}__gte": self.now - timedelta(days=days)})
        if op == "more_than_days_ago":
            return Q(**{f"{name}__lt": self.now - timedelta(days=days)})

        zone = ZoneInfo(settings.BESPOKE_ACCOUNT_TIME_ZONE)
        month, day = ExtractMonth(name, tzinfo=zone), ExtractDay(name, tzinfo=zone)
        matched = Q(pk__in=[])
        for month_day in _anniversaries(self.today + timedelta(days=days)):
            wanted_month, wanted_day = (int(part) for part in month_day.split("-"))
            matched |= Q(Exact(month, wanted_month)) & Q(Exact(day, wanted_day))
        return Q(**{f"{name}__isnull": False}) & matched

    def date_text(self, text: Any, op: str, days: int) -> Q:
        # Dates in traits are ISO text ('YYYY-MM-DD', or a datetime starting so): the
        # first ten characters compare in calendar order. A day with no year
        # ('--MM-DD', a birthday) has an anniversary but is no number of days ago.
        # Text that names no day ('2024-13-45', an undeclared trait's) is no date.
        day_part = Substr(text, 1, 10)
        known = Q(IsNull(text, False)) & (
            Q(Regex(text, ISO_DAY)) | Q(Regex(text, YEARLESS_DAY))
        )
        yearless = Q(StartsWith(text, "--"))
        if op == "within_last_days":
            since = (self.today - timedelta(days=days)).isoformat()
            return (
                known
                & ~yearless
                & Q(GreaterThanOrEqual(day_part, since))
                & Q(LessThanOrEqual(day_part, self.today.isoformat()))
            )
        if op == "more_than_days_ago":
            until = (self.today - timedelta(days=days)).isoformat()
            return known & ~yearless & Q(LessThan(day_part, until))

        month_days = _anniversaries(self.today + timedelta(days=days))
        dated = ~yearless & Q(In(Substr(text, 6, 5), month_days))
        return known & (dated | (yearless & Q(In(Substr(text, 3, 5), month_days))))

    # Behaviour ------------------------------------------------------------------

    def event(self, node: dict) -> Q:
        count = node.get("count") or {"op": "gte", "value": 1}
        op, value, did = count["op"], count["value"], node.get("did", True)

        # "At least once" and "never" need no count: a bare (NOT) EXISTS, which
        # PostgreSQL plans as a semi- or anti-join instead of a lookup per profile.
        if (op, value) in _ONCE or (op, value) in _NEVER:
            found = Q(Exists(self.events_matching(node, profile=OuterRef("pk"))))
            return found if did == ((op, value) in _ONCE) else ~found

        # "At least N": the qualifying profiles grouped once, uncorrelated; narrowed
        # to one profile (a membership refresh) the planner pushes the id down.
        if did and op in ("gte", "gt", "eq") and value > 0 and not self.one_profile:
            events = self.events_matching(node, profile=None)
            lookup = "exact" if op == "eq" else op
            passing = (
                events.values("profile")
                .annotate(n=_occurrences(node["event"]))
                .filter(**{f"n__{lookup}": value})
                .values("profile")
            )
            return Q(pk__in=passing)

        # "At most N" and the negations keep NOT EXISTS, which counts a profile with
        # no events as zero (a NOT IN over a big set would also degrade past work_mem).
        events = self.events_matching(node, profile=OuterRef("pk"))
        matched = _count_matches(events, node["event"], op, value)
        return matched if did else ~matched

    def events_matching(self, node: dict, *, profile: Any) -> Any:
        events = self.event_rows(node, profile=profile)
        follow = node.get("followed_by")
        return events.filter(self.followed_by(follow)) if follow else events

    def event_rows(self, node: dict, *, profile: Any) -> Any:
        events = Event.objects.filter(event=node["event"])
        if profile is None:
            events = events.filter(profile__isnull=False)
        else:
            events = events.filter(profile=profile)
        if node.get("within_days"):
            events = events.filter(
                timestamp__gte=self.now - timedelta(days=node["within_days"])
            )
        for condition in node.get("where", []):
            events = events.filter(self.property(condition))
        return events

    def followed_by(self, follow: dict) -> Q:
        later = Event.objects.filter(
            profile=OuterRef("profile"),
            event=follow["event"],
            timestamp__gte=OuterRef("timestamp"),
        )
        if follow.get("within_days"):
            later = later.filter(
                timestamp__lte=OuterRef("timestamp")
                + timedelta(days=follow["within_days"])
            )
        for condition in follow.get("where", []):
            later = later.filter(self.property(condition))
        if follow.get("same"):
            later = later.filter(_same_property(follow["same"]))

        found = Q(Exists(later))
        if follow.get("did", True):
            return found
        if follow.get("within_days"):
            # "Not followed within N days" holds once N days have passed: someone
            # checking out now has not abandoned the cart yet.
            closed = self.now - timedelta(days=follow["within_days"])
            return ~found & Q(timestamp__lte=closed)
        return ~found

    def property(self, condition: dict) -> Q:
        name, op = condition["property"], condition["op"]
        if name.startswith("products."):
            return Q(
                ArrayItemMatches(
                    "properties",
                    "products",
                    name[len("products.") :],
                    op,
                    condition["value"],
                )
            )
        return self.json_value("properties", name, condition)

    def engagement(self, node: dict) -> Q:
        where: list[dict] = []
        if node.get("campaign"):
            where.append(
                {
                    "property": "campaign_id",
                    "op": "eq",
                    "value": _campaign_id(node["campaign"]),
                }
            )
        events = self.event_rows(
            {
                "event": ENGAGEMENT_EVENTS[node["engagement"]],
                "within_days": node.get("within_days"),
                "where": where,
            },
            profile=OuterRef("pk"),
        ).exclude(
            # has_key first: a bare JSON comparison on a missing key is NULL, and
            # NOT NULL would drop every ordinary open.
            Q(properties__has_key="machine_open") & Q(properties__machine_open=True)
        )
        found = Q(Exists(events))
        return found if node.get("did", True) else ~found

    def trend(self, node: dict) -> Q:
        start = self.now - timedelta(days=node["over_days"])
        middle = self.now - timedelta(days=node["over_days"] / 2)
        counted = (
            Event.objects.filter(
                profile__isnull=False, event=node["trend"], timestamp__gte=start
            )
            .values("profile")
            .annotate(
                recent=_occurrences(node["trend"], Q(timestamp__gte=middle)),
                earlier=_occurrences(node["trend"], Q(timestamp__lt=middle)),
            )
        )
        compare = "recent__lt" if node["direction"] == "declining" else "recent__gt"
        if self.one_profile:
            # About one profile: count that profile's events only.
            mine = counted.filter(profile=OuterRef("pk"), **{compare: F("earlier")})
            return Q(Exists(mine))
        passing = counted.filter(**{compare: F("earlier")}).values("profile")
        return Q(pk__in=passing)

    def consent(self, node: dict) -> Q:
        return Q(subscription_status=node["consent"])

    def segment(self, slug: str) -> Q:
        inner = _Compiler(
            now=self.now,
            lookup=self.lookup,
            seen=(*self.seen, slug),
            one_profile=self.one_profile,
        )
        return inner.node(self.lookup.rule_of(slug))


def _is_numeric_comparison(op: str, value: Any) -> bool:
    if op in ("gt", "gte", "lt", "lte", "between"):
        return True
    values = value if isinstance(value, list) else [value]
    return op in ("eq", "neq", "in", "not_in") and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )


def _same_property(name: str) -> Q:
    """The later event is about the same thing: same top-level property, or in products."""
    earlier = json_text(OuterRef("properties"), name)
    return Q(Exact(json_text("properties", name), earlier)) | Q(
        ArrayItemEquals("properties", "products", name, earlier)
    )


def _campaign_id(slug: str) -> str:
    from campaigns.models import Campaign

    campaign_id = (
        Campaign.objects.filter(slug=slug).values_list("pk", flat=True).first()
    )
    return str(campaign_id) if campaign_id is not None else f"missing:{slug}"


def _occurrences(event_name: str, only: Q | None = None) -> Any:
    """Count a profile's events of one name; orders by `order_id`, each once.

    An order the site tracks and the shop's webhook reports too is two `Order
    Completed` events; they count as one order, as lifetime value and the order count
    do ("1057", 1057 and 1057.0 are one id). An order event with no order id (or a
    falsy one: 0, false, "") counts alone. A checkout counts once by its
    `checkout_id` the same way.
    """
    key = COUNTED_BY.get(event_name)
    if key is None:
        return Count("id", filter=only)
    thing = OrderKey("properties", key)
    without_id = Q(IsNull(thing, True))
    return Count(thing, distinct=True, filter=only) + Count(
        "id", filter=without_id & only if only is not None else without_id
    )


def _count_matches(events: Any, event_name: str, op: str, value: int) -> Q:
    """Compare a profile's number of matching events, zero included, as an EXISTS."""
    counted = events.values("profile").annotate(n=_occurrences(event_name))

    def having(lookup: str, n: int) -> Q:
        return Q(Exists(counted.filter(**{f"n__{lookup}": n})))

    # 'At least 1' and its kin are EXISTS; 'at most N' is NOT EXISTS of 'more than N',
    # so that profiles with no events at all are counted with zero.
    if op == "gte":
        return having("gte", value) if value > 0 else Q(pk__isnull=False)
    if op == "gt":
        return having("gt", value)
    if op == "lte":
        return ~having("gt", value)
    if op == "lt":
        return ~having("gte", value) if value > 0 else Q(pk__in=[])
    if value == 0:
        return ~having("gte", 1)
    return having("exact", value)


def _anniversaries(day: date) -> list[str]:
    """Return the "MM-DD" of the dates whose anniversary falls on `day`.

    Someone born on the 29th of February has it on the 28th when the year has no
    29th, as most people who were born on it keep it.
    """
    found = [day.strftime("%m-%d")]
    if (day.month, day.day) == (2, 28) and not calendar.isleap(day.year):
        found.append("02-29")
    return found


def _allowed_spellings(rule: Any, node: dict) -> dict:
    # A declared trait holds its allowed values as declared ("Straße" for a sent
    # "STRASSE"), and a value stored before it was declared as it came: a rule's
    # value is compared both as written and as the declared spelling it stands for.
    op = node["op"]
    if op not in ("eq", "neq", "in", "not_in"):
        return node
    written = node["value"] if isinstance(node["value"], list) else [node["value"]]
    values = list(
        dict.fromkeys([*written, *(allowed_spelling(rule, v) for v in written)])
    )
    return {**node, "op": "in" if op in ("eq", "in") else "not_in", "value": values}


def _email_values_normalized(node: dict) -> dict:
    """Compare whole addresses as stored: punycode, case and spaces as any input."""
    if node["op"] not in ("eq", "neq", "in", "not_in"):
        return node
    value = node.get("value")
    values = value if isinstance(value, list) else [value]
    keys = [_email_key(str(v)) for v in values]
    return {**node, "value": keys if isinstance(value, list) else keys[0]}


def _country_values_normalized(node: dict) -> dict:
    """Compare countries as profiles keep them: "UK" and "United Kingdom" are GB."""
    if node["op"] not in ("eq", "neq", "in", "not_in"):
        return node
    value = node.get("value")
    values = value if isinstance(value, list) else [value]
    codes = [
        (country_code_read(v) or v.strip()) if isinstance(v, str) else v for v in values
    ]
    return {**node, "value": codes if isinstance(value, list) else codes[0]}


def _email_key(written: str) -> str:
    # Not an address (a rule may name one that no profile has): compared as written.
    try:
        return email_normalize(written).key
    except InvalidEmail:
        return written.strip()
