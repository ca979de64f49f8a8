"""A plain-Python evaluator of segment rules: the meaning the compiled SQL must have.

It lives only in the tests. It reads profiles and events as dicts and states each
rule's meaning as directly as possible, so that a property-based test can compare
it with the compiler's single SQL query on random rules and random data.
"""

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from segments.geo import CONTINENTS

NUMBER = re.compile(r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,2})?\s*$")
NUMBER_MAX_CHARS = 200
DATE_METRICS = {
    "first_order_at",
    "last_order_at",
    "last_seen_at",
    "last_opened_at",
    "last_clicked_at",
}
ENGAGEMENT_EVENTS = {"opened": "Email Opened", "clicked": "Email Link Clicked"}


@dataclass
class Person:
    pk: int
    fields: dict[str, Any]
    traits: dict[str, Any]
    tags: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Reference:
    now: datetime
    zone: str
    segments: dict[str, dict]
    campaigns: dict[str, int]

    @property
    def today(self) -> date:
        return self.now.astimezone(ZoneInfo(self.zone)).date()

    def matches(self, rule: dict, person: Person) -> bool:
        if "all" in rule:
            return all(self.matches(child, person) for child in rule["all"])
        if "any" in rule:
            return any(self.matches(child, person) for child in rule["any"])
        if "not" in rule:
            return not self.matches(rule["not"], person)
        if "attribute" in rule:
            return self.attribute(rule, person)
        if "metric" in rule:
            return self.metric(rule, person)
        if "event" in rule:
            return self.event(rule, person)
        if "engagement" in rule:
            return self.engagement(rule, person)
        if "trend" in rule:
            return self.trend(rule, person)
        if "consent" in rule:
            return person.fields["subscription_status"] == rule["consent"]
        if "suppressed" in rule:
            return (person.fields.get("suppressed_at") is not None) == rule[
                "suppressed"
            ]
        return self.matches(self.segments[rule["segment"]], person)

    # Leaves ---------------------------------------------------------------------

    def attribute(self, rule: dict, person: Person) -> bool:
        name, op = rule["attribute"], rule["op"]
        if name == "continent":
            values = (
                rule["value"] if isinstance(rule["value"], list) else [rule["value"]]
            )
            inside = any(person.fields["country_code"] in CONTINENTS[v] for v in values)
            return inside if op in ("eq", "in") else not inside
        if name == "tags":
            if op == "contains":
                return any(
                    caseless(tag) == caseless(rule["value"]) for tag in person.tags
                )
            return bool(person.tags) if op == "exists" else not person.tags
        if name == "created_at":
            return self.date_value(person.fields.get(name), rule)
        if name.startswith("traits."):
            return self.json_value(person.traits, name[len("traits.") :], rule)
        return text_matches(person.fields.get(name), rule)

    def metric(self, rule: dict, person: Person) -> bool:
        name = rule["metric"]
        value = person.fields.get(name)
        if name in DATE_METRICS:
            return self.date_value(value, rule)
        if name == "favourite_category":
            return text_matches(value, rule)
        return number_matches(None if value is None else float(value), rule)

    def json_value(self, data: dict, key: str, rule: dict) -> bool:
        op, value = rule["op"], rule.get("value")
        raw = data.get(key)
        text = json_as_text(raw)
        if op in ("within_last_days", "more_than_days_ago", "anniversary_in_days"):
            return self.date_text(text, op, value)
        if isinstance(value, bool):
            equal = raw is value
            return equal if op == "eq" else (not equal or text is None)
        if numeric_comparison(op, value):
            return number_matches(as_number(text), rule)
        return text_matches(text, rule)

    def date_value(self, when: datetime | None, rule: dict) -> bool:
        op, days = rule["op"], rule.get("value")
        if op == "exists":
            return when is not None
        if op == "is_empty":
            return when is None
        if when is None:
            return False
        if op == "within_last_days":
            return when >= self.now - timedelta(days=days)
        if op == "more_than_days_ago":
            return when < self.now - timedelta(days=days)
        local = when.astimezone(ZoneInfo(self.zone))
        return local.strftime("%m-%d") in self.anniversaries(days)

    def anniversaries(self, days: int) -> set[str]:
        # A 29th of February falls on the 28th in a year without one.
        day = self.today + timedelta(days=days)
        found = {day.strftime("%m-%d")}
        if day.strftime("%m-%d") == "02-28" and (day + timedelta(days=1)).day == 1:
            found.add("02-29")
        return found

    def date_text(self, text: str | None, op: str, days: int) -> bool:
        if text is None or not names_a_day(text):
            return False
        month_days = self.anniversaries(days)
        if text.startswith("--"):
            # A day with no year: an anniversary, and no number of days ago.
            return op == "anniversary_in_days" and text[2:] in month_days
        day_part = text[:10]
        if op == "within_last_days":
            since = (self.today - timedelta(days=days)).isoformat()
            return since <= day_part <= self.today.isoformat()
        if op == "more_than_days_ago":
            return day_part < (self.today - timedelta(days=days)).isoformat()
        return text[5:10] in month_days

    # Behaviour ------------------------------------------------------------------

    def event(self, rule: dict, person: Person) -> bool:
        found = [
            e for e in self.event_rows(rule, person) if self.followed(rule, e, person)
        ]
        count = rule.get("count") or {"op": "gte", "value": 1}
        matched = compare(occurrences(found), count["op"], count["value"])
        return matched if rule.get("did", True) else not matched

    def event_rows(self, rule: dict, person: Person) -> list[dict]:
        rows = [e for e in person.events if e["event"] == rule["event"]]
        if rule.get("within_days"):
            since = self.now - timedelta(days=rule["within_days"])
            rows = [e for e in rows if e["timestamp"] >= since]
        for condition in rule.get("where", []):
            rows = [e for e in rows if self.property(condition, e["properties"])]
        return rows

    def followed(self, rule: dict, earlier: dict, person: Person) -> bool:
        follow = rule.get("followed_by")
        if not follow:
            return True
        later = [
            e
            for e in self.event_rows({**follow, "within_days": None}, person)
            if e["timestamp"] >= earlier["timestamp"]
        ]
        if follow.get("within_days"):
            until = earlier["timestamp"] + timedelta(days=follow["within_days"])
            later = [e for e in later if e["timestamp"] <= until]
        if follow.get("same"):
            later = [e for e in later if same_thing(follow["same"], earlier, e)]
        if follow.get("did", True):
            return bool(later)
        if follow.get("within_days"):
            # Not followed within N days: and the N days have passed.
            closed = self.now - timedelta(days=follow["within_days"])
            return not later and earlier["timestamp"] <= closed
        return not later

    def property(self, condition: dict, properties: dict) -> bool:
        name = condition["property"]
        if name.startswith("products."):
            items = properties.get("products")
            items = items if isinstance(items, list) else []
            key = name[len("products.") :]
            return any(
                product_item_matches(item.get(key), condition)
                for item in items
                if isinstance(item, dict)
            )
        return self.json_value(properties, name, condition)

    def trend(self, rule: dict, person: Person) -> bool:
        start = self.now - timedelta(days=rule["over_days"])
        middle = self.now - timedelta(days=rule["over_days"] / 2)
        found = [
            e
            for e in person.events
            if e["event"] == rule["trend"] and e["timestamp"] >= start
        ]
        recent = occurrences([e for e in found if e["timestamp"] >= middle])
        earlier = occurrences([e for e in found if e["timestamp"] < middle])
        if not found:
            return False
        return (
            recent < earlier if rule["direction"] == "declining" else recent > earlier
        )

    def engagement(self, rule: dict, person: Person) -> bool:
        where = []
        if rule.get("campaign"):
            campaign_id = self.campaigns.get(rule["campaign"])
            where.append(
                {"property": "campaign_id", "op": "eq", "value": str(campaign_id)}
            )
        rows = self.event_rows(
            {
                "event": ENGAGEMENT_EVENTS[rule["engagement"]],
                "within_days": rule.get("within_days"),
                "where": where,
            },
            person,
        )
        rows = [e for e in rows if e["properties"].get("machine_open") is not True]
        return bool(rows) if rule.get("did", True) else not rows


# Values ---------------------------------------------------------------------------


def occurrences(events: list[dict]) -> int:
    """How many times: orders by their order id, each once; other events each."""
    ids, alone = set(), 0
    for event in events:
        key = COUNTED_BY.get(event["event"])
        thing = event["properties"].get(key) if key else None
        if thing:
            ids.add((key, order_key(thing)))
        else:
            alone += 1
    return len(ids) + alone


# One thing the site and the shop may each report: counted once by this property.
COUNTED_BY = {"Order Completed": "order_id", "Checkout Started": "checkout_id"}


def order_key(order_id: Any) -> str:
    """The text one order is known by, however its id was written."""
    if isinstance(order_id, bool) or not isinstance(order_id, int | float | str):
        return json.dumps(order_id)
    if isinstance(order_id, str):
        return order_id
    return format(Decimal(str(order_id)).normalize(), "f")


def json_as_text(raw: Any) -> str | None:
    """The text a JSON value reads as in SQL (->> on PostgreSQL)."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float | Decimal):
        number = float(raw)
        return (
            str(int(number))
            if number == int(number) and isinstance(raw, int)
            else str(raw)
        )
    return str(raw)


def as_number(text: str | None) -> float | None:
    if text is None or not NUMBER.match(text) or len(text) > NUMBER_MAX_CHARS:
        return None
    return float(text.strip())


def numeric_comparison(op: str, value: Any) -> bool:
    if op in ("gt", "gte", "lt", "lte", "between"):
        return True
    values = value if isinstance(value, list) else [value]
    return op in ("eq", "neq", "in", "not_in") and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )


def caseless(text: str) -> str:
    """Text as rules compare it: a dotted capital I is i, then each letter lowered."""
    return "".join(map(str.lower, text.replace("\u0130", "i")))


def text_matches(text: str | None, rule: dict) -> bool:
    op, value = rule["op"], rule.get("value")
    present = text is not None and text != ""
    if op == "exists":
        return present
    if op == "is_empty":
        return not present
    if op == "contains":
        return text is not None and caseless(str(value)) in caseless(text)
    if op == "starts_with":
        return text is not None and caseless(text).startswith(caseless(str(value)))
    values = [caseless(str(v)) for v in (value if isinstance(value, list) else [value])]
    inside = text is not None and caseless(text) in values
    return inside if op in ("eq", "in") else not inside


def number_matches(number: float | None, rule: dict) -> bool:
    op, value = rule["op"], rule.get("value")
    if op == "exists":
        return number is not None
    if op == "is_empty":
        return number is None
    if op == "between":
        low, high = sorted(float(v) for v in value)
        return number is not None and low <= number <= high
    if op in ("gt", "gte", "lt", "lte"):
        return number is not None and compare(number, op, float(value))
    values = [float(v) for v in (value if isinstance(value, list) else [value])]
    inside = number is not None and number in values
    return inside if op in ("eq", "in") else not inside


def product_item_matches(raw: Any, condition: dict) -> bool:
    op, value = condition["op"], condition["value"]
    if op in ("gt", "gte", "lt", "lte"):
        number = as_number(json_as_text(raw)) if not isinstance(raw, bool) else None
        return number is not None and compare(number, op, float(value))
    text = json_as_text(raw)
    if text is None:
        return False
    if op == "neq":
        return caseless(text) != caseless(str(value))
    return text_matches(text, condition)


def same_thing(name: str, earlier: dict, later: dict) -> bool:
    wanted = json_as_text(earlier["properties"].get(name))
    if wanted is None:
        return False
    if json_as_text(later["properties"].get(name)) == wanted:
        return True
    items = later["properties"].get("products")
    items = items if isinstance(items, list) else []
    return any(
        isinstance(i, dict) and json_as_text(i.get(name)) == wanted for i in items
    )


def compare(left: float, op: str, right: float) -> bool:
    return {
        "gt": left > right,
        "gte": left >= right,
        "lt": left < right,
        "lte": left <= right,
        "eq": left == right,
    }[op]


def names_a_day(text: str) -> bool:
    """Whether trait text is a date: a calendar day, or a month and day with no year.

    An ISO day may go on with a time ('T' or a space, hours and minutes, then
    anything). With no year, the 29th of February counts (read in a leap year).
    """
    if text.startswith("--"):
        year, month_day = "2000", text[2:]
        if len(text) != 7:
            return False
    else:
        year, month_day = text[:4], text[5:10]
        if text[4:5] != "-" or (len(text) > 10 and not _time_follows(text[10:])):
            return False
    parts = [year, *month_day.split("-")]
    sizes = [len(part) for part in parts]
    if sizes != [4, 2, 2] or not all(p.isascii() and p.isdigit() for p in parts):
        return False
    try:
        date(*(int(part) for part in parts))
    except ValueError:
        return False
    return True


def _time_follows(rest: str) -> bool:
    hours, minutes = rest[1:3], rest[4:6]
    digits = all(p.isascii() and p.isdigit() and len(p) == 2 for p in (hours, minutes))
    return rest[:1] in ("T", " ") and rest[3:4] == ":" and digits
