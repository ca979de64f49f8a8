"""Segment rules: validation with errors that point at the node, and compilation to SQL.

A rule is a JSON tree. Groups are ``{"all": [...]}``, ``{"any": [...]}`` and
``{"not": node}``; leaves are one of:

- ``{"attribute": "country_code", "op": "in", "value": ["FR", "DE"]}``: a profile
  field, ``continent``, ``tags``, or a custom trait as ``traits.<name>``;
- ``{"metric": "lifetime_value", "op": "gt", "value": 500}``: a computed trait;
- ``{"event": "Order Completed", "did": true, "within_days": 30,
  "count": {"op": "gte", "value": 3}, "where": [{"property": "currency",
  "op": "eq", "value": "USD"}]}``: behaviour from the event log;
- ``{"consent": "subscribed"}``: the profile's email subscription status;
- ``{"segment": "<slug>"}``: membership of another segment.

The whole tree compiles to one ``Q`` over Profile, so a segment is a single SQL query
and never a loop over profiles in Python.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from profiles.models import Event, Profile, ProfileTag, SubscriptionStatus
from segments.geo import CONTINENTS

PROFILE_FIELDS = {
    "email",
    "first_name",
    "last_name",
    "phone",
    "city",
    "region",
    "country_code",
    "timezone",
}
METRICS = {
    "lifetime_value": "number",
    "order_count": "number",
    "first_order_at": "date",
    "last_order_at": "date",
    "last_seen_at": "date",
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
DATE_OPS = {"within_last_days", "more_than_days_ago", "exists", "is_empty"}
COUNT_OPS = {"gte", "gt", "lte", "lt", "eq"}
VALUELESS_OPS = {"exists", "is_empty"}
LEAF_KEYS = ("attribute", "metric", "event", "consent", "segment")
MAX_DEPTH = 20


@dataclass(frozen=True)
class RuleError:
    path: str  # where in the tree, e.g. "all[1].any[0]"
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class RuleInvalid(ValueError):
    """The rule cannot be compiled; `errors` says which nodes are wrong and why."""

    def __init__(self, errors: list[RuleError]) -> None:
        super().__init__("; ".join(str(error) for error in errors))
        self.errors = errors


class SegmentLookup:
    """How the compiler finds another segment's rule by slug (kept apart for tests)."""

    def rule_of(self, slug: str) -> dict | None:
        from segments.models import Segment

        return Segment.objects.filter(slug=slug).values_list("rule", flat=True).first()


def rule_validate(
    rule: Any, *, lookup: SegmentLookup | None = None, slug: str | None = None
) -> list[RuleError]:
    """Return every problem in the rule, each naming the node it is at."""
    errors: list[RuleError] = []
    seen = (slug,) if slug else ()
    _validate(
        rule, "rule", errors, depth=0, lookup=lookup or SegmentLookup(), seen=seen
    )
    return errors


def rule_compile(
    rule: Any,
    *,
    now: datetime | None = None,
    lookup: SegmentLookup | None = None,
    slug: str | None = None,
) -> Q:
    """Compile a rule into a Q over Profile; raise RuleInvalid if it is not valid."""
    lookup = lookup or SegmentLookup()
    errors = rule_validate(rule, lookup=lookup, slug=slug)
    if errors:
        raise RuleInvalid(errors)

    seen = (slug,) if slug else ()
    return _Compiler(now=now or timezone.now(), lookup=lookup, seen=seen).node(rule)


# Validation ---------------------------------------------------------------------


def _validate(node, path, errors, *, depth, lookup, seen) -> None:
    if depth > MAX_DEPTH:
        errors.append(RuleError(path, f"groups are nested deeper than {MAX_DEPTH}"))
        return
    if not isinstance(node, dict) or len(node) == 0:
        errors.append(RuleError(path, "expected an object such as {'all': [...]}"))
        return

    if "all" in node or "any" in node:
        key = "all" if "all" in node else "any"
        children = node[key]
        if not isinstance(children, list):
            errors.append(RuleError(path, f"'{key}' must hold a list of conditions"))
            return
        for index, child in enumerate(children):
            _validate(
                child,
                f"{path}.{key}[{index}]",
                errors,
                depth=depth + 1,
                lookup=lookup,
                seen=seen,
            )
        return

    if "not" in node:
        _validate(
            node["not"],
            f"{path}.not",
            errors,
            depth=depth + 1,
            lookup=lookup,
            seen=seen,
        )
        return

    kinds = [key for key in LEAF_KEYS if key in node]
    if len(kinds) != 1:
        errors.append(
            RuleError(path, f"a condition needs exactly one of {', '.join(LEAF_KEYS)}")
        )
        return
    validator = _LEAF_VALIDATORS[kinds[0]]
    validator(node, path, errors, lookup=lookup, seen=seen)


def _attribute_type(name: str) -> str | None:
    if name in PROFILE_FIELDS or name in ("continent", "tags"):
        return "text"
    if name.startswith("traits.") and len(name) > len("traits."):
        return "any"
    return None


def _validate_attribute(node, path, errors, **_) -> None:
    name = node.get("attribute")
    kind = _attribute_type(name) if isinstance(name, str) else None
    if kind is None:
        known = ", ".join(sorted(PROFILE_FIELDS | {"continent", "tags"}))
        errors.append(
            RuleError(path, f"unknown attribute {name!r}: use {known} or traits.<name>")
        )
        return

    allowed = TEXT_OPS if kind == "text" else TEXT_OPS | NUMBER_OPS
    if name == "continent":
        allowed = {"eq", "neq", "in", "not_in"}
    if name == "tags":
        allowed = {"contains", "exists", "is_empty"}
    _validate_op_and_value(node, path, errors, allowed)
    if name == "continent" and "value" in node:
        values = node["value"] if isinstance(node["value"], list) else [node["value"]]
        unknown = [v for v in values if v not in CONTINENTS]
        if unknown:
            errors.append(
                RuleError(
                    path, f"unknown continent {unknown[0]!r}: use {sorted(CONTINENTS)}"
                )
            )


def _validate_metric(node, path, errors, **_) -> None:
    name = node.get("metric")
    if name not in METRICS:
        errors.append(
            RuleError(
                path, f"unknown metric {name!r}: use {', '.join(sorted(METRICS))}"
            )
        )
        return
    allowed = NUMBER_OPS if METRICS[name] == "number" else DATE_OPS
    _validate_op_and_value(node, path, errors, allowed)


def _validate_event(node, path, errors, **_) -> None:
    if not isinstance(node.get("event"), str) or not node["event"].strip():
        errors.append(
            RuleError(path, "'event' must name an event, e.g. 'Order Completed'")
        )
    if not isinstance(node.get("did", True), bool):
        errors.append(RuleError(path, "'did' must be true or false"))

    days = node.get("within_days")
    if days is not None and (
        not isinstance(days, int) or isinstance(days, bool) or days < 1
    ):
        errors.append(
            RuleError(path, "'within_days' must be a whole number of days, 1 or more")
        )

    count = node.get("count")
    if count is not None:
        if not isinstance(count, dict) or count.get("op") not in COUNT_OPS:
            errors.append(
                RuleError(
                    path, f"'count' needs an op among {sorted(COUNT_OPS)} and a value"
                )
            )
        elif not _is_count(count.get("value")):
            errors.append(
                RuleError(path, "'count.value' must be a whole number, 0 or more")
            )

    where = node.get("where", [])
    if not isinstance(where, list):
        errors.append(RuleError(path, "'where' must be a list of property conditions"))
        return
    for index, condition in enumerate(where):
        sub = f"{path}.where[{index}]"
        if not isinstance(condition, dict) or not isinstance(
            condition.get("property"), str
        ):
            errors.append(
                RuleError(sub, "a property condition needs 'property', 'op', 'value'")
            )
            continue
        _validate_op_and_value(condition, sub, errors, TEXT_OPS | NUMBER_OPS)


def _validate_consent(node, path, errors, **_) -> None:
    if node.get("consent") not in SubscriptionStatus.values:
        errors.append(
            RuleError(
                path, f"'consent' must be one of {', '.join(SubscriptionStatus.values)}"
            )
        )


def _validate_segment(node, path, errors, *, lookup, seen) -> None:
    slug = node.get("segment")
    if not isinstance(slug, str) or not slug:
        errors.append(RuleError(path, "'segment' must be another segment's slug"))
        return
    if slug in seen:
        errors.append(
            RuleError(path, f"segment {slug!r} refers back to itself (a cycle)")
        )
        return

    rule = lookup.rule_of(slug)
    if rule is None:
        errors.append(RuleError(path, f"there is no segment {slug!r}"))
        return
    inner: list[RuleError] = []
    _validate(
        rule, f"{path}<{slug}>", inner, depth=0, lookup=lookup, seen=(*seen, slug)
    )
    errors.extend(inner)


_LEAF_VALIDATORS = {
    "attribute": _validate_attribute,
    "metric": _validate_metric,
    "event": _validate_event,
    "consent": _validate_consent,
    "segment": _validate_segment,
}


def _validate_op_and_value(node, path, errors, allowed: set[str]) -> None:
    op = node.get("op")
    if op not in allowed:
        errors.append(
            RuleError(path, f"unknown op {op!r}: use one of {sorted(allowed)}")
        )
        return
    if op in VALUELESS_OPS:
        return
    if "value" not in node:
        errors.append(RuleError(path, f"op {op!r} needs a 'value'"))
        return

    value = node["value"]
    if op in ("in", "not_in") and not (isinstance(value, list) and value):
        errors.append(RuleError(path, f"op {op!r} needs a non-empty list"))
    elif op == "between" and not (
        isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))
    ):
        errors.append(RuleError(path, "op 'between' needs [low, high] numbers"))
    elif op in ("gt", "gte", "lt", "lte") and not _is_number(value):
        errors.append(RuleError(path, f"op {op!r} needs a number, not {value!r}"))
    elif op in ("within_last_days", "more_than_days_ago") and not _is_count(value):
        errors.append(RuleError(path, f"op {op!r} needs a whole number of days"))


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        Decimal(str(value))
    except InvalidOperation:
        return False
    return True


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# Compilation --------------------------------------------------------------------


class _Compiler:
    def __init__(self, *, now: datetime, lookup: SegmentLookup, seen: tuple) -> None:
        self.now = now
        self.lookup = lookup
        self.seen = seen

    def node(self, node: dict) -> Q:
        if "all" in node:
            return self._group(node["all"], all_of=True)
        if "any" in node:
            return self._group(node["any"], all_of=False)
        if "not" in node:
            return ~self.node(node["not"])
        if "attribute" in node:
            return self.attribute(node)
        if "metric" in node:
            return self.compare(
                node["metric"], node, is_date=METRICS[node["metric"]] == "date"
            )
        if "event" in node:
            return self.event(node)
        if "consent" in node:
            return Q(subscription_status=node["consent"])
        return self.segment(node["segment"])

    def _group(self, children: list, *, all_of: bool) -> Q:
        if not children:
            # An empty 'all' matches everyone; an empty 'any' matches no one.
            return Q() if all_of else Q(pk__in=[])
        compiled = [self.node(child) for child in children]
        result = compiled[0]
        for q in compiled[1:]:
            result = (result & q) if all_of else (result | q)
        return result

    def attribute(self, node: dict) -> Q:
        name, op, value = node["attribute"], node["op"], node.get("value")
        if name == "continent":
            values = value if isinstance(value, list) else [value]
            codes = sorted(set().union(*(CONTINENTS[v] for v in values)))
            matched = Q(country_code__in=codes)
            return ~matched if op in ("neq", "not_in") else matched
        if name == "tags":
            return self.tags(op, value)
        lookup = name.replace(".", "__")
        return self.compare(lookup, node, is_date=False)

    def tags(self, op: str, value: Any) -> Q:
        tags = ProfileTag.objects.filter(profile=OuterRef("pk"))
        if op == "contains":
            tags = tags.filter(name__iexact=value)
        has = Q(Exists(tags))
        return ~has if op == "is_empty" else has

    def compare(self, lookup: str, node: dict, *, is_date: bool) -> Q:
        op, value = node["op"], node.get("value")
        if op == "exists":
            return _present(lookup)
        if op == "is_empty":
            return ~_present(lookup)
        if is_date:
            since = self.now - timedelta(days=value)
            if op == "within_last_days":
                return Q(**{f"{lookup}__gte": since})
            return Q(**{f"{lookup}__lt": since})
        return _comparison(lookup, op, value)

    def event(self, node: dict) -> Q:
        events = Event.objects.filter(profile=OuterRef("pk"), event=node["event"])
        if node.get("within_days"):
            events = events.filter(
                timestamp__gte=self.now - timedelta(days=node["within_days"])
            )
        for condition in node.get("where", []):
            lookup = "properties__" + condition["property"].replace(".", "__")
            events = events.filter(self.compare(lookup, condition, is_date=False))

        count = node.get("count") or {"op": "gte", "value": 1}
        matched = _count_matches(events, count["op"], count["value"])
        return matched if node.get("did", True) else ~matched

    def segment(self, slug: str) -> Q:
        rule = self.lookup.rule_of(slug)
        inner = _Compiler(now=self.now, lookup=self.lookup, seen=(*self.seen, slug))
        return inner.node(rule)


def _present(lookup: str) -> Q:
    """Match profiles whose field is set: not NULL, not '' (and not a JSON null)."""
    return Q(**{f"{lookup}__isnull": False}) & ~Q(**{lookup: ""})


def _comparison(lookup: str, op: str, value: Any) -> Q:
    if op == "eq":
        return Q(**{lookup: value})
    if op == "neq":
        # Profiles without the field at all count as 'not equal', as a marketer expects.
        return ~Q(**{lookup: value}) | Q(**{f"{lookup}__isnull": True})
    if op == "in":
        return Q(**{f"{lookup}__in": value})
    if op == "not_in":
        return ~Q(**{f"{lookup}__in": value}) | Q(**{f"{lookup}__isnull": True})
    if op == "contains":
        return Q(**{f"{lookup}__icontains": value})
    if op == "starts_with":
        return Q(**{f"{lookup}__istartswith": value})
    if op == "between":
        low, high = value
        return Q(**{f"{lookup}__gte": low, f"{lookup}__lte": high})
    return Q(**{f"{lookup}__{op}": value})


def _count_matches(events, op: str, value: int) -> Q:
    """Compare a profile's number of matching events, zero included, as an EXISTS."""
    counted = events.values("profile").annotate(n=Count("id"))

    def having(lookup_op: str, n: int) -> Q:
        return Q(Exists(counted.filter(**{f"n__{lookup_op}": n})))

    # 'At least 1' and its kin are EXISTS; 'at most N' is NOT EXISTS of 'more than N',
    # so that profiles with no events at all are counted with zero.
    if op == "gte":
        return having("gte", value) if value > 0 else Q()
    if op == "gt":
        return having("gt", value)
    if op == "lte":
        return ~having("gt", value)
    if op == "lt":
        return ~having("gte", value) if value > 0 else Q(pk__in=[])
    if value == 0:
        return ~having("gte", 1)
    return having("exact", value)


def profiles_matching(rule: dict, *, now: datetime | None = None) -> Any:
    """Return the queryset of profiles a rule selects (one SQL query when evaluated)."""
    return Profile.objects.filter(rule_compile(rule, now=now))
