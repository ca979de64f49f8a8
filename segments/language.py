"""The segment rule language: its vocabulary, and validation that names the bad node.

A rule is a JSON tree. Groups: ``{"all": [...]}``, ``{"any": [...]}``, ``{"not": node}``.
Conditions (leaves):

- ``{"attribute": "country_code", "op": "in", "value": ["FR", "DE"]}``: a profile
  field, ``continent``, ``tags``, or a custom trait as ``traits.<name>``; a trait
  declared in the trait schema takes only the ops of its type and values that fit
  it (a number, true or false, one of its allowed values), and a declared number
  compares as a number;
- ``{"metric": "lifetime_value", "op": "gt", "value": 500}``: a computed trait;
- ``{"event": "Order Completed", "did": true, "within_days": 30,
  "count": {"op": "gte", "value": 3}, "where": [{"property": "currency", "op": "eq",
  "value": "USD"}]}``: behaviour, where a property may be ``products.<name>`` (any
  item of the event's products);
- ``{"event": "Product Viewed", "followed_by": {"event": "Order Completed",
  "did": false, "within_days": 7, "same": "product_id"}}``: a sequence;
- ``{"engagement": "opened" | "clicked", "campaign": "<slug>", "within_days": 30}``;
- ``{"trend": "Email Opened", "over_days": 60, "direction": "declining"}``: fewer such
  events in the recent half of the window than in the earlier half ("rising": more);
- ``{"consent": "subscribed"}`` and ``{"suppressed": true}``;
- ``{"segment": "<slug>"}``: membership of another segment (cycles are refused).
"""

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import DEFAULT_DB_ALIAS

from profiles.models import PERSON_FIELDS, SubscriptionStatus, TraitType
from profiles.traits import (
    NUMBER_MAX_DIGITS,
    NUMBER_MIN_EXPONENT,
    TraitRule,
    allowed_spelling,
    country_code_read,
    number_in_range,
    number_text,
    trait_schema_load,
)
from segments.geo import CONTINENTS

PROFILE_TEXT_FIELDS = {"email", *PERSON_FIELDS}
PROFILE_DATE_FIELDS = {"created_at"}
METRICS = {
    "lifetime_value": "number",
    "order_count": "number",
    "average_order_value": "number",
    "engagement_score": "number",
    "favourite_category": "text",
    "first_order_at": "date",
    "last_order_at": "date",
    "last_seen_at": "date",
    "last_opened_at": "date",
    "last_clicked_at": "date",
}

TEXT_OPS = {
    "eq",
    "neq",
    "in",
    "not_in",
    "contains",
    "starts_with",
    "exists",
    "is_empty",
}
NUMBER_OPS = {"eq", "neq", "gt", "gte", "lt", "lte", "between", "exists", "is_empty"}
DATE_OPS = {
    "within_last_days",
    "more_than_days_ago",
    "anniversary_in_days",
    "exists",
    "is_empty",
}
TRAIT_OPS = TEXT_OPS | NUMBER_OPS | DATE_OPS
PROPERTY_OPS = TEXT_OPS | NUMBER_OPS
PRODUCT_OPS = {"eq", "neq", "in", "contains", "starts_with", "gt", "gte", "lt", "lte"}
COUNT_OPS = {"gte", "gt", "lte", "lt", "eq"}
VALUELESS_OPS = {"exists", "is_empty"}
DAY_OPS = {"within_last_days", "more_than_days_ago", "anniversary_in_days"}
LEAF_KEYS = (
    "attribute",
    "metric",
    "event",
    "engagement",
    "trend",
    "consent",
    "suppressed",
    "segment",
)
MAX_DEPTH = 20
MAX_DAYS = 36_500
# A trait's name, or a path into a trait that holds an object: word characters only,
# so that no name can break the JSON path a database reads it with.
TRAIT_PATH = re.compile(r"\w{1,100}(?:\.\w{1,100}){0,4}")


@dataclass(frozen=True)
class RuleError:
    path: str  # where in the tree, e.g. "rule.all[1].any[0]"
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class RuleInvalid(ValueError):
    """The rule cannot be compiled; `errors` says which nodes are wrong and why."""

    def __init__(self, errors: list[RuleError]) -> None:
        super().__init__("; ".join(str(error) for error in errors))
        self.errors = errors


class SegmentLookup:
    """How rules find another segment's rule by slug, and the declared traits.

    Kept apart so that tests can swap it.
    """

    def __init__(self) -> None:
        self._traits: dict[str, TraitRule] | None = None

    def rule_of(self, slug: str) -> dict | None:
        from segments.models import Segment

        return Segment.objects.filter(slug=slug).values_list("rule", flat=True).first()

    def traits(self) -> dict[str, TraitRule]:
        """Return the trait schema, read once per lookup and only if a rule asks."""
        if self._traits is None:
            self._traits = trait_schema_load(using=self.database())
        return self._traits

    def database(self) -> str:
        return DEFAULT_DB_ALIAS


def rule_validate(
    rule: Any,
    *,
    lookup: SegmentLookup | None = None,
    slug: str | None = None,
    check_schema: bool = True,
) -> list[RuleError]:
    """Return every problem in the rule, each naming the node it is at.

    With `check_schema`, a condition on a declared trait must fit the trait's type,
    and one on country_code must name ISO 3166 codes. Saving and previewing check
    it; refreshing a saved rule does not, so that declaring a trait later (or this
    check, added later) never stops a segment that already sends.
    """
    checker = _Checker(lookup or SegmentLookup(), check_schema=check_schema)
    checker.node(rule, "rule", depth=0, seen=(slug,) if slug else ())
    return checker.errors


class _Checker:
    def __init__(self, lookup: SegmentLookup, *, check_schema: bool) -> None:
        self.lookup = lookup
        self.check_schema = check_schema
        self.errors: list[RuleError] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(RuleError(path, message))

    def node(self, node: Any, path: str, *, depth: int, seen: tuple) -> None:
        if depth > MAX_DEPTH:
            self.fail(path, f"groups are nested deeper than {MAX_DEPTH}")
            return
        if not isinstance(node, dict) or not node:
            self.fail(path, "expected an object such as {'all': [...]}")
            return

        for key in ("all", "any"):
            if key in node:
                self.group(node[key], f"{path}.{key}", depth=depth, seen=seen)
                return
        if "not" in node:
            self.node(node["not"], f"{path}.not", depth=depth + 1, seen=seen)
            return

        kinds = [key for key in LEAF_KEYS if key in node]
        if len(kinds) != 1:
            self.fail(path, f"a condition needs exactly one of {', '.join(LEAF_KEYS)}")
            return
        getattr(self, kinds[0])(node, path, seen=seen)

    def group(self, children: Any, path: str, *, depth: int, seen: tuple) -> None:
        if not isinstance(children, list):
            self.fail(
                path.rsplit(".", 1)[0], f"'{path.rsplit('.', 1)[1]}' must hold a list"
            )
            return
        for index, child in enumerate(children):
            self.node(child, f"{path}[{index}]", depth=depth + 1, seen=seen)

    def attribute(self, node: dict, path: str, **_) -> None:
        name = node.get("attribute")
        allowed = _attribute_ops(name)
        if allowed is None:
            known = ", ".join(sorted(PROFILE_TEXT_FIELDS | PROFILE_DATE_FIELDS))
            self.fail(
                path,
                f"unknown attribute {name!r}: use {known}, continent, tags or traits.<name>",
            )
            return

        if self.check_schema and name.startswith("traits."):
            rule = self.lookup.traits().get(name[len("traits.") :])
            if rule is not None:
                self.declared_trait(node, path, rule)
                return

        self.op_and_value(node, path, allowed)
        if self.check_schema and self.blank_compared(node, path):
            return
        if name == "country_code" and "value" in node and self.check_schema:
            self.country_codes(node, path)
        if name == "continent" and "value" in node:
            values = (
                node["value"] if isinstance(node["value"], list) else [node["value"]]
            )
            unknown = [value for value in values if value not in CONTINENTS]
            if unknown:
                self.fail(
                    path, f"unknown continent {unknown[0]!r}: use {sorted(CONTINENTS)}"
                )

    def blank_compared(self, node: dict, path: str) -> bool:
        # "is ''" is what the builder's new condition holds until a value is
        # chosen: saved so, it would match everyone whose field is empty, silently.
        op, value = node.get("op"), node.get("value")
        if op not in ("eq", "neq") or not isinstance(value, str) or value.strip():
            return False
        name = node["attribute"]
        self.fail(
            path,
            f"{name} is compared with empty text: choose a value, or use is_empty "
            f"for profiles with no {name} (exists for those with one)",
        )
        return True

    def country_codes(self, node: dict, path: str) -> None:
        # A country is read as imports and identifies read it ("UK" and "United
        # Kingdom" are GB): one Bespoke cannot read would match nobody, silently.
        op = node.get("op")
        if op in ("contains", "starts_with"):
            self.fail(
                path,
                "country_code holds two-letter codes: compare whole countries with "
                "eq or in (a country's name is read as its code)",
            )
            return
        if op not in ("eq", "neq", "in", "not_in"):
            return
        values = node["value"] if op in ("in", "not_in") else [node["value"]]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            self.fail(path, "a country is text: a code such as GB, or a country's name")
            return
        for value in values:
            if value.strip() and not country_code_read(value):
                self.fail(
                    path,
                    f"{value!r} is no country Bespoke knows, so no profile has it: "
                    "write a two-letter ISO 3166 code such as GB, or a country's "
                    "name in English or its own language",
                )
                return

    def declared_trait(self, node: dict, path: str, rule: TraitRule) -> None:
        """Hold a declared trait's condition to its type and allowed values."""
        allowed = declared_trait_ops(rule)
        errors_before = len(self.errors)
        self.op_and_value(node, path, allowed)
        op, value = node.get("op"), node.get("value")
        if len(self.errors) > errors_before or op in VALUELESS_OPS:
            return

        values = value if op in ("in", "not_in") else [value]
        if op not in ("eq", "neq", "in", "not_in"):
            return
        described = f"traits.{rule.name} is declared {TRAIT_TYPE_WORDS[rule.type]}"
        if rule.type == TraitType.NUMBER:
            wrong = [v for v in values if not _is_number(v)]
            if wrong:
                self.fail(path, f"{described}: {_not_a_number(wrong[0])}")
        elif rule.type == TraitType.BOOLEAN:
            wrong = [v for v in values if not isinstance(v, bool)]
            if wrong:
                self.fail(path, f"{described}: use true or false, not {wrong[0]!r}")
        elif rule.allowed_values:
            # Allowed as a value is, whatever its case (profiles.traits).
            wrong = [
                v
                for v in values
                if allowed_spelling(rule, str(v)) not in rule.allowed_values
            ]
            if wrong:
                listed = ", ".join(str(v) for v in rule.allowed_values)
                self.fail(
                    path,
                    f"{wrong[0]!r} is not an allowed value of traits.{rule.name} "
                    f"({listed})",
                )

    def metric(self, node: dict, path: str, **_) -> None:
        name = node.get("metric")
        if name not in METRICS:
            self.fail(
                path, f"unknown metric {name!r}: use {', '.join(sorted(METRICS))}"
            )
            return
        kind = METRICS[name]
        allowed = {"number": NUMBER_OPS, "date": DATE_OPS, "text": TEXT_OPS}[kind]
        self.op_and_value(node, path, allowed)

    def event(self, node: dict, path: str, **_) -> None:
        self.event_body(node, path)
        follow = node.get("followed_by")
        if follow is None:
            return
        if not isinstance(follow, dict):
            self.fail(path, "'followed_by' must be an event condition")
            return
        self.event_body(follow, f"{path}.followed_by")
        same = follow.get("same")
        if same is not None and (not isinstance(same, str) or not same):
            self.fail(
                f"{path}.followed_by", "'same' must name a property, e.g. 'product_id'"
            )
        if "count" in follow:
            self.fail(f"{path}.followed_by", "'count' is not allowed in 'followed_by'")

    def event_body(self, node: dict, path: str) -> None:
        if not isinstance(node.get("event"), str) or not node["event"].strip():
            self.fail(path, "'event' must name an event, e.g. 'Order Completed'")
        if not isinstance(node.get("did", True), bool):
            self.fail(path, "'did' must be true or false")
        self.days(node, path)

        count = node.get("count")
        if count is not None:
            if not isinstance(count, dict) or count.get("op") not in COUNT_OPS:
                self.fail(
                    path, f"'count' needs an op among {sorted(COUNT_OPS)} and a value"
                )
            elif not _is_count(count.get("value")):
                self.fail(path, "'count.value' must be a whole number, 0 or more")

        where = node.get("where", [])
        if not isinstance(where, list):
            self.fail(path, "'where' must be a list of property conditions")
            return
        for index, condition in enumerate(where):
            self.property_condition(condition, f"{path}.where[{index}]")

    def property_condition(self, condition: Any, path: str) -> None:
        if not isinstance(condition, dict) or not isinstance(
            condition.get("property"), str
        ):
            self.fail(path, "a property condition needs 'property', 'op' and 'value'")
            return
        name = condition["property"]
        if name.startswith("products.") and len(name) > len("products."):
            self.op_and_value(condition, path, PRODUCT_OPS)
        else:
            self.op_and_value(condition, path, PROPERTY_OPS)

    def engagement(self, node: dict, path: str, **_) -> None:
        if node.get("engagement") not in ("opened", "clicked"):
            self.fail(path, "'engagement' must be 'opened' or 'clicked'")
        campaign = node.get("campaign")
        if campaign is not None and (not isinstance(campaign, str) or not campaign):
            self.fail(path, "'campaign' must be a campaign's slug")
        elif campaign is not None and not _campaign_exists(campaign):
            self.fail(path, f"there is no campaign {campaign!r}")
        self.days(node, path)
        if not isinstance(node.get("did", True), bool):
            self.fail(path, "'did' must be true or false")

    def trend(self, node: dict, path: str, **_) -> None:
        if not isinstance(node.get("trend"), str) or not node["trend"].strip():
            self.fail(path, "'trend' must name an event, e.g. 'Email Opened'")
        days = node.get("over_days")
        if not (_is_count(days) and 2 <= days <= MAX_DAYS):
            self.fail(path, f"'over_days' must be a whole number from 2 to {MAX_DAYS}")
        if node.get("direction") not in ("declining", "rising"):
            self.fail(path, "'direction' must be 'declining' or 'rising'")

    def consent(self, node: dict, path: str, **_) -> None:
        if node.get("consent") not in SubscriptionStatus.values:
            self.fail(
                path, f"'consent' must be one of {', '.join(SubscriptionStatus.values)}"
            )

    def suppressed(self, node: dict, path: str, **_) -> None:
        if not isinstance(node.get("suppressed"), bool):
            self.fail(path, "'suppressed' must be true or false")

    def segment(self, node: dict, path: str, *, seen: tuple) -> None:
        slug = node.get("segment")
        if not isinstance(slug, str) or not slug:
            self.fail(path, "'segment' must be another segment's slug")
            return
        if slug in seen:
            self.fail(path, f"segment {slug!r} refers back to itself (a cycle)")
            return

        rule = self.lookup.rule_of(slug)
        if rule is None:
            self.fail(path, f"there is no segment {slug!r}")
            return
        # A saved rule is checked as its refresh checks it: a check added or a
        # trait declared since never stops a segment built on it.
        checking, self.check_schema = self.check_schema, False
        try:
            self.node(rule, f"{path}<{slug}>", depth=0, seen=(*seen, slug))
        finally:
            self.check_schema = checking

    def days(self, node: dict, path: str) -> None:
        days = node.get("within_days")
        if days is not None and not (_is_count(days) and 1 <= days <= MAX_DAYS):
            self.fail(
                path, f"'within_days' must be a whole number from 1 to {MAX_DAYS}"
            )

    def op_and_value(self, node: dict, path: str, allowed: set[str]) -> None:
        op = node.get("op")
        if op not in allowed:
            self.fail(path, f"unknown op {op!r}: use one of {sorted(allowed)}")
            return
        if op in VALUELESS_OPS:
            return
        if "value" not in node:
            self.fail(path, f"op {op!r} needs a 'value'")
            return

        value = node["value"]
        if op in ("in", "not_in") and not (isinstance(value, list) and value):
            self.fail(path, f"op {op!r} needs a non-empty list")
        elif op == "between" and not (isinstance(value, list) and len(value) == 2):
            self.fail(path, "'is between' needs two numbers, the smaller first")
        elif op == "between" and not all(map(_is_number, value)):
            wrong = next(v for v in value if not _is_number(v))
            self.fail(path, f"'is between': {_not_a_number(wrong)}")
        elif op == "between" and rule_number(value[0]) > rule_number(value[1]):
            # Worded for the builder's two boxes as much as for the JSON.
            low, high = value
            self.fail(
                path,
                f"'is between' takes the smaller number first: {low} is above "
                f"{high}; swap them ({high} and {low})",
            )
        elif op in ("gt", "gte", "lt", "lte") and _is_out_of_range(value):
            self.fail(path, f"op {op!r}: {_not_a_number(value)}")
        elif op in ("gt", "gte", "lt", "lte") and not _is_number(value):
            self.fail(path, f"op {op!r} needs a number, not {value!r}")
        elif op in DAY_OPS and not (_is_count(value) and value <= MAX_DAYS):
            self.fail(
                path, f"op {op!r} needs a whole number of days from 0 to {MAX_DAYS}"
            )
        elif op in ("contains", "starts_with") and not isinstance(value, str):
            self.fail(path, f"op {op!r} needs text, not {value!r}")


def _attribute_ops(name: Any) -> set[str] | None:
    if not isinstance(name, str):
        return None
    if name in PROFILE_TEXT_FIELDS:
        return TEXT_OPS
    if name in PROFILE_DATE_FIELDS:
        return DATE_OPS
    if name == "continent":
        return {"eq", "neq", "in", "not_in"}
    if name == "tags":
        return {"contains", "exists", "is_empty"}
    if name.startswith("traits.") and TRAIT_PATH.fullmatch(name[len("traits.") :]):
        return TRAIT_OPS
    return None


TRAIT_TYPE_WORDS = {
    TraitType.TEXT: "text",
    TraitType.NUMBER: "a number",
    TraitType.BOOLEAN: "true or false",
    TraitType.DATE: "a date",
    TraitType.DATETIME: "a date and time",
}
BOOLEAN_OPS = {"eq", "neq", "exists", "is_empty"}
ENUM_OPS = {"eq", "neq", "in", "not_in", "exists", "is_empty"}


def declared_trait_ops(rule: TraitRule) -> set[str]:
    """Return the ops a condition on a declared trait may use, by its type."""
    if rule.type == TraitType.NUMBER:
        return NUMBER_OPS | {"in", "not_in"}
    if rule.type == TraitType.BOOLEAN:
        return BOOLEAN_OPS
    if rule.type in (TraitType.DATE, TraitType.DATETIME):
        return DATE_OPS
    if rule.allowed_values:
        return ENUM_OPS
    return TEXT_OPS


def _campaign_exists(slug: str) -> bool:
    from campaigns.models import Campaign

    return Campaign.objects.filter(slug=slug).exists()


NUMBER_RANGE = (
    f"a number must be under 1e{NUMBER_MAX_DIGITS} in size (at most "
    f"{NUMBER_MAX_DIGITS} digits before the decimal point) and, unless it is 0, "
    f"at least 1e{NUMBER_MIN_EXPONENT}"
)


def _is_number(value: Any) -> bool:
    number = _decimal(value)
    return number is not None and number_in_range(number)


def _is_out_of_range(value: Any) -> bool:
    number = _decimal(value)
    return number is not None and not number_in_range(number)


def _not_a_number(value: Any) -> str:
    """Say why a value is not a number a rule may compare with."""
    if _is_out_of_range(value):
        return f"{value!r} is out of range: {NUMBER_RANGE}"
    return f"{value!r} is not a number"


def _decimal(value: Any) -> Decimal | None:
    # The grammar every other path reads numbers with (profiles.traits).
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = number_text(value)
    if text is None:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def rule_number(value: Any) -> float:
    """Return a rule's number value ("1 000", "12.5" or 12.5) as the SQL compares it."""
    if isinstance(value, str):
        return float(Decimal(number_text(value) or "NaN"))
    return float(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_OP_WORDS = {
    "eq": "is",
    "neq": "is not",
    "in": "is one of",
    "not_in": "is none of",
    "contains": "contains",
    "starts_with": "starts with",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "between": "is between",
    "exists": "is set",
    "is_empty": "is empty",
    "within_last_days": "in the last",
    "more_than_days_ago": "more than",
    "anniversary_in_days": "has its anniversary in exactly",
}


def rule_describe(rule: dict) -> str:
    """Return the rule in words, every group in brackets exactly as it is evaluated."""
    if "all" in rule or "any" in rule:
        key = "all" if "all" in rule else "any"
        parts = [rule_describe(child) for child in rule[key]]
        if not parts:
            return "everyone" if key == "all" else "no one"
        joined = (" AND " if key == "all" else " OR ").join(parts)
        return joined if len(parts) == 1 else f"({joined})"
    if "not" in rule:
        return f"NOT {rule_describe(rule['not'])}"
    return _describe_leaf(rule)


def _describe_leaf(rule: dict) -> str:
    if "event" in rule:
        return _describe_event(rule)
    if "engagement" in rule:
        what = f"{rule['engagement']} " + (
            f"campaign {rule['campaign']}" if rule.get("campaign") else "any email"
        )
        return f"{'' if rule.get('did', True) else 'never '}{what}{_window(rule)}"
    if "trend" in rule:
        return f"{rule['trend']} {rule['direction']} over {rule['over_days']} days"
    if "consent" in rule:
        return f"subscription is {rule['consent']}"
    if "suppressed" in rule:
        return "is suppressed" if rule["suppressed"] else "is not suppressed"
    if "segment" in rule:
        return f"in segment {rule['segment']}"
    name = rule.get("attribute") or rule.get("metric")
    return f"{name} {_describe_op(rule)}"


def _describe_op(rule: dict) -> str:
    op, value = rule["op"], rule.get("value")
    words = _OP_WORDS.get(op, op)
    if op in VALUELESS_OPS:
        return words
    if op in ("within_last_days", "more_than_days_ago"):
        return f"{words} {value} days" + (" ago" if op == "more_than_days_ago" else "")
    if op == "anniversary_in_days":
        # That day exactly: 0 is today, 7 a week from today.
        return "has its anniversary today" if value == 0 else f"{words} {value} days"
    if op == "between":
        return f"{words} {value[0]} and {value[1]}"
    if isinstance(value, bool):
        # As a marketer writes it, and the rule's JSON: not Python's True.
        return f"{words} {'true' if value else 'false'}"
    return f"{words} {value!r}" if not isinstance(value, list) else f"{words} {value}"


def _describe_event(rule: dict) -> str:
    did = rule.get("did", True)
    count = rule.get("count")
    times = (
        f" {_COUNT_WORDS[count['op']]} {count['value']} "
        f"{'time' if count['value'] == 1 else 'times'}"
        if count
        else ""
    )
    where = "".join(
        f" where {c['property']} {_describe_op(c)}" for c in rule.get("where", [])
    )
    text = (
        f"{'did' if did else 'did not do'} {rule['event']}{times}{where}{_window(rule)}"
    )
    follow = rule.get("followed_by")
    if follow:
        same = f" for the same {follow['same']}" if follow.get("same") else ""
        then = "followed by" if follow.get("did", True) else "not followed by"
        text += f", {then} {follow['event']}{same}{_window(follow, 'within')}"
        if not follow.get("did", True) and follow.get("within_days"):
            text += " (once those days have passed)"
    return text


_COUNT_WORDS = {
    "gt": "more than",
    "gte": "at least",
    "lt": "fewer than",
    "lte": "at most",
    "eq": "exactly",
}


def _window(rule: dict, word: str = "in the last") -> str:
    days = rule.get("within_days")
    if not days:
        return ""
    return f" {word} {days} day{'' if days == 1 else 's'}"


def rule_dependencies(
    rule: dict, *, lookup: SegmentLookup | None = None
) -> tuple[set[str], bool]:
    """Return what a valid rule reads, and whether the clock alone can change its answer.

    Dependencies are words such as 'event:Order Completed', 'field:country_code',
    'trait:tier', 'metric:lifetime_value', 'tags', 'consent', 'suppressed' and
    'segment:<slug>'; another segment's own dependencies are included.
    """
    found: set[str] = set()
    timed = _collect(rule, found, lookup or SegmentLookup(), seen=())
    return found, timed


def _collect(node: dict, found: set[str], lookup: SegmentLookup, seen: tuple) -> bool:
    if "all" in node or "any" in node:
        timed = False
        for child in node.get("all", node.get("any")):
            # Every child is visited (no short-circuit): each adds its dependencies.
            timed = _collect(child, found, lookup, seen) or timed
        return timed
    if "not" in node:
        return _collect(node["not"], found, lookup, seen)
    if "segment" in node:
        slug = node["segment"]
        found.add(f"segment:{slug}")
        inner = lookup.rule_of(slug) if slug not in seen else None
        return _collect(inner, found, lookup, (*seen, slug)) if inner else False
    if "event" in node:
        found.add(f"event:{node['event']}")
        follow = node.get("followed_by") or {}
        if follow:
            found.add(f"event:{follow['event']}")
        return bool(node.get("within_days") or follow.get("within_days"))
    if "engagement" in node:
        found.add(
            f"event:{'Email Opened' if node['engagement'] == 'opened' else 'Email Link Clicked'}"
        )
        return bool(node.get("within_days"))
    if "trend" in node:
        found.add(f"event:{node['trend']}")
        return True
    if "consent" in node or "suppressed" in node:
        found.add("consent" if "consent" in node else "suppressed")
        return False
    if "metric" in node:
        found.add(f"metric:{node['metric']}")
    else:
        found.add(_attribute_dependency(node["attribute"]))
    return node.get("op") in DAY_OPS


def _attribute_dependency(name: str) -> str:
    if name == "tags":
        return "tags"
    if name == "continent":
        return "field:country_code"
    if name.startswith("traits."):
        return f"trait:{name[len('traits.') :]}"
    return f"field:{name}"


def caseless(text: str | None) -> str | None:
    """Return text as rules compare it: each letter lower-cased on its own.

    This is PostgreSQL's lower(): a capital dotted İ becomes a plain i (Python's own
    lower() makes it i and a combining dot, which no stored "istanbul" matches),
    and a final capital sigma becomes σ wherever it stands.
    """
    if text is None:
        return None
    return "".join("i" if letter == "\u0130" else letter.lower() for letter in text)
