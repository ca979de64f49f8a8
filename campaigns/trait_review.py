"""What the template review knows of the keys a template reads of a profile: the
profile's own, and a declared trait's type.

profile_context gives a declared trait as its type (rendering.profile_context): a
number, true or false, or text (a date and a date and time are text too). A
condition comparing one with a value of another type is false, or true, for every
recipient, or fails for each recipient who has the trait, who is then skipped at
sending; one comparing it with a value the trait does not allow (not one of its
allowed values, beyond its bounds, not matching its pattern) is never true of an
allowed value, and an ordering past its bounds is true or false of every one. The
review's sample recipients carry a declared trait as its type too, once with each
allowed value. The profile's own number and text fields (the order count, the city)
are checked for their type alike (BUILT_IN_RULES). Nothing here reads the database:
the caller gives the rules.
"""

import re
from decimal import Decimal
from typing import Any

from profiles.models import TraitType
from profiles.traits import (
    PATTERN_TIMEOUT_SECONDS,
    TraitRule,
    trait_pattern_compile,
    trait_typed,
)

# What a template holds for each declared type.
KIND_OF_TYPE = {
    TraitType.NUMBER: "number",
    TraitType.BOOLEAN: "boolean",
    TraitType.TEXT: "text",
    TraitType.DATE: "text",
    TraitType.DATETIME: "text",
}
TYPE_WORDS = {
    TraitType.NUMBER: "a number",
    TraitType.BOOLEAN: "true or false",
    TraitType.TEXT: "text",
    TraitType.DATE: "a date, which templates read as text (YYYY-MM-DD)",
    TraitType.DATETIME: (
        "a date and time, which templates read as text in UTC "
        "(YYYY-MM-DDThh:mm:ss+00:00)"
    ),
}
KIND_WORDS = {"number": "a number", "boolean": "true or false", "text": "text"}

# A value written in a condition, as Liquid reads it: quoted text, a number, or
# true or false. nil, empty and blank are left to the nil checks.
LITERAL = r"'[^']*'|\"[^\"]*\"|-?\d+(?:\.\d+)?|true|false"
OPERATOR = r"==|!=|<>|<=|>=|<|>|contains"
TRAIT_FIRST = re.compile(
    rf"profile\.(?P<trait>\w+)\s*(?P<operator>{OPERATOR})\s*(?P<literal>{LITERAL})"
)
LITERAL_FIRST = re.compile(
    rf"(?P<literal>{LITERAL})\s*(?P<operator>{OPERATOR})\s*profile\.(?P<trait>\w+)"
)
EQUALITY = {"==": "false", "!=": "true", "<>": "true"}
# A value of each type, as templates read it, for a sample recipient.
SAMPLE_OF_TYPE: dict[str, tuple[Any, ...]] = {
    TraitType.NUMBER: (1,),
    TraitType.BOOLEAN: (True, False),
    TraitType.TEXT: ("Sample",),
    TraitType.DATE: ("2025-03-14",),
    TraitType.DATETIME: ("2025-03-14T10:00:00+00:00",),
}
# How many allowed values a warning lists before saying how many there are.
ALLOWED_SHOWN_MAX = 5

# The computed traits that are times (nil until the person has done the thing).
COMPUTED_TIMES = (
    "first_order_at",
    "last_order_at",
    "last_seen_at",
    "last_opened_at",
    "last_clicked_at",
)
# Liquid counts every value but nil and false as true: empty text, 0 and an empty
# list included. These profile keys hold "", 0 or [] when there is nothing to say,
# so a bare test of one (`{% if profile.city %}`) is true for every recipient. The
# address is left out (every recipient has one); traits are absent instead (nil),
# as are the computed times and the average order value.
EMPTY_TEXT_KEYS = {
    "first_name",
    "last_name",
    "full_name",
    "city",
    "region",
    "country_code",
    "continent",
    "timezone",
    "favourite_category",
}
ZERO_NUMBER_KEYS = {"lifetime_value", "order_count", "engagement_score"}
EMPTY_LIST_KEYS = {"tags"}
# Every key profile_context gives a profile besides its traits.
PROFILE_KEYS = {
    "email",
    *EMPTY_TEXT_KEYS,
    *ZERO_NUMBER_KEYS,
    *EMPTY_LIST_KEYS,
    *COMPUTED_TIMES,
    "average_order_value",
}
# The profile's own keys a template compares (rendering.profile_context), as rules
# of their type with no bounds: compared with a value of another type, one is as
# wrong as a declared trait. No declared trait takes one of these names.
BUILT_IN_RULES = {
    **{
        name: TraitRule(name=name, type=TraitType.NUMBER)
        for name in (*ZERO_NUMBER_KEYS, "average_order_value")
    },
    **{
        name: TraitRule(name=name, type=TraitType.TEXT)
        for name in (*EMPTY_TEXT_KEYS, "email")
    },
}
# Who has a value of one empty (nil) until the person has ordered: no comparison
# fails on nil. Every recipient has a value of the others, "" or 0 at least.
HOLDERS_OF_BUILT_IN = {"average_order_value": "every recipient who has ordered"}


def trait_test_problem(operand: str, rules: dict[str, TraitRule]) -> str:
    """Say why one comparison of a declared trait with a value is wrong, or ""."""
    found = TRAIT_FIRST.fullmatch(operand) or LITERAL_FIRST.fullmatch(operand)
    if found is None:
        return ""
    rule = rules.get(found["trait"]) or BUILT_IN_RULES.get(found["trait"])
    if rule is None:
        return ""

    operator = found["operator"]
    trait_first = found.re is TRAIT_FIRST
    literal = _literal_read(found["literal"])
    tested = _written(rule, operator, found["literal"], trait_first=trait_first)
    kind = KIND_OF_TYPE[rule.type]
    if operator == "contains":
        # Text and lists contain; a number or true or false fails, whatever it is
        # asked for. What a text contains is left to Liquid.
        if not trait_first or kind == "text":
            return ""
        return (
            f"{tested} fails for {_holders(rule)}, each then skipped when the "
            "campaign sends: contains reads text and lists, and "
            f"{_called(rule)} is {TYPE_WORDS[rule.type]}"
        )

    instead = _instead(rule, operator, literal, trait_first)
    if _kind(literal) != kind:
        problem = _other_kind(rule, tested, operator, literal)
        return problem + instead if problem else ""
    if BUILT_IN_RULES.get(rule.name) is rule:
        # Its values have no rule to break: only their type is known.
        return ""
    if operator in EQUALITY:
        return _never_equal(rule, tested, operator, literal, instead)
    if kind == "number":
        # Ordered as the trait first: 18 < profile.age is profile.age > 18.
        trait_operator = operator if trait_first else FLIPPED[operator]
        return _beyond_range(rule, tested, trait_operator, literal)
    return ""


# An ordering read from the other side: 18 < profile.age is profile.age > 18.
FLIPPED = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}


def _beyond_range(rule: TraitRule, tested: str, operator: str, number: Any) -> str:
    """Say that an ordering is false, or true, for every value within the rule's
    bounds, or ""."""
    low, high = rule.minimum, rule.maximum
    value = Decimal(str(number))
    never = {
        ">": high is not None and value >= high,
        ">=": high is not None and value > high,
        "<": low is not None and value <= low,
        "<=": low is not None and value < low,
    }[operator]
    always = {
        ">": low is not None and value < low,
        ">=": low is not None and value <= low,
        "<": high is not None and value > high,
        "<=": high is not None and value >= high,
    }[operator]
    if not (never or always):
        return ""
    outcome = "false" if never else "true"
    return (
        f"{tested} is {outcome} for every value the declared trait {rule.name} "
        f"allows ({_range_words(rule)})"
    )


def _range_words(rule: TraitRule) -> str:
    low, high = rule.minimum, rule.maximum
    if low is not None and high is not None:
        return f"from {liquid_written(low)} to {liquid_written(high)}"
    if low is not None:
        return f"at least {liquid_written(low)}"
    return f"at most {liquid_written(high)}"


def _outside(rule: TraitRule, literal: Any) -> str:
    """Say how a value of the trait's type breaks its bounds or pattern, or ""."""
    if isinstance(literal, int | float) and not isinstance(literal, bool):
        value = Decimal(str(literal))
        low, high = rule.minimum, rule.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            return _range_words(rule)
    if rule.pattern and isinstance(literal, str):
        try:
            matched = trait_pattern_compile(rule.pattern).fullmatch(
                literal, timeout=PATTERN_TIMEOUT_SECONDS
            )
        except TimeoutError:
            return ""  # what the pattern makes of it is left to rendering
        if not matched:
            return f"each matches {rule.pattern}"
    return ""


def _other_kind(rule: TraitRule, tested: str, operator: str, literal: Any) -> str:
    why = (
        f"{_called(rule)} is {TYPE_WORDS[rule.type]}, not {KIND_WORDS[_kind(literal)]}"
    )
    if operator in EQUALITY:
        return f"{tested} is {EQUALITY[operator]} for every recipient, since {why}"
    if {_kind(literal), KIND_OF_TYPE[rule.type]} == {"number", "boolean"}:
        # Liquid orders true and false as 1 and 0: odd, but it does not fail.
        return ""
    return (
        f"{tested} fails for {_holders(rule)}, each then skipped when the campaign "
        f"sends, since {why}"
    )


def _called(rule: TraitRule) -> str:
    if BUILT_IN_RULES.get(rule.name) is rule:
        return f"the profile's {rule.name}"
    return f"the declared trait {rule.name}"


def _holders(rule: TraitRule) -> str:
    """Name the recipients a failing comparison of the trait fails for."""
    if BUILT_IN_RULES.get(rule.name) is not rule:
        return f"every recipient who has the trait {rule.name}"
    return HOLDERS_OF_BUILT_IN.get(rule.name, "every recipient")


def _never_equal(
    rule: TraitRule, tested: str, operator: str, literal: Any, instead: str
) -> str:
    # A value of the trait's own type that the trait never holds as written: a date
    # not written as templates read it, text in another case than the allowed
    # value's (stored in the declared spelling), a value not allowed at all.
    outcome = f"{tested} is {EQUALITY[operator]} for every recipient"
    typed = trait_typed(rule, literal)
    if typed is None and rule.type in (TraitType.DATE, TraitType.DATETIME):
        return (
            f"{outcome}, since the declared trait {rule.name} is "
            f"{TYPE_WORDS[rule.type]}, and {liquid_written(literal)} is not one"
        )
    if typed is not None and typed != literal:
        return (
            f"{outcome}, since {_called(rule)} keeps "
            f"{liquid_written(literal)} as {liquid_written(typed)}{instead}"
        )
    if rule.allowed_values and literal not in rule.allowed_values:
        return (
            f"{tested} is {EQUALITY[operator]} for every value the declared trait "
            f"{rule.name} allows ({_allowed_list(rule)})"
        )
    outside = "" if rule.allowed_values else _outside(rule, literal)
    if outside:
        return (
            f"{tested} is {EQUALITY[operator]} for every value the declared trait "
            f"{rule.name} allows ({outside})"
        )
    return ""


def _instead(rule: TraitRule, operator: str, literal: Any, trait_first: bool) -> str:
    """Return ": test ... instead" with the value as the trait holds it, or ""."""
    typed = trait_typed(rule, literal)
    if typed is None or _kind(typed) != KIND_OF_TYPE[rule.type]:
        return ""
    # True == 1 to Python, not to Liquid: the kinds are compared too.
    if _kind(literal) == _kind(typed) and typed == literal:
        return ""
    written = _written(rule, operator, liquid_written(typed), trait_first=trait_first)
    return f": test {written} instead"


def _written(rule: TraitRule, operator: str, value: str, *, trait_first: bool) -> str:
    """Return a comparison as a template writes it, its sides in the given order."""
    trait = f"profile.{rule.name}"
    return (
        f"{trait} {operator} {value}" if trait_first else f"{value} {operator} {trait}"
    )


def _literal_read(text: str) -> Any:
    if text[0] in "'\"":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    return float(text) if "." in text else int(text)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    return "text"


def liquid_written(value: Any) -> str:
    """Return a value as a Liquid template writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return format(Decimal(str(value)).normalize(), "f")
    text = str(value)
    return f"'{text}'" if '"' in text else f'"{text}"'


def trait_samples(rule: TraitRule) -> list[Any]:
    """Return the values a sample recipient is given for a declared trait, each tried.

    Each allowed value, as templates read it; without any, a value of the type
    (true and false both), within the rule's bounds.
    """
    allowed = [trait_typed(rule, value) for value in rule.allowed_values]
    if any(value is not None for value in allowed):
        return [value for value in allowed if value is not None]
    bound = rule.minimum if rule.minimum is not None else rule.maximum
    if rule.type == TraitType.NUMBER and bound is not None:
        return [trait_typed(rule, bound)]
    return list(SAMPLE_OF_TYPE[rule.type])


def _allowed_list(rule: TraitRule) -> str:
    values = [liquid_written(value) for value in rule.allowed_values]
    if len(values) <= ALLOWED_SHOWN_MAX:
        return ", ".join(values)
    return f"{', '.join(values[:ALLOWED_SHOWN_MAX])}… ({len(values)} in all)"
