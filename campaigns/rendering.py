"""Rendering Liquid templates per recipient, sandboxed and with fallbacks.

Templates see plain data only (dicts, lists, strings, numbers), never model objects:
`profile`, `campaign` and the links `unsubscribe_url`, `preferences_url` and
`web_version_url`. A missing value renders as nothing, and `| default: "..."` gives
a fallback, so missing data never breaks a layout.
"""

import calendar
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone
from inscriptis import get_text
from inscriptis.model.config import ParserConfig
from liquid import Environment
from liquid.builtin.filters.misc import date as liquid_date
from liquid.exceptions import LiquidError, TemplateNotFoundError
from liquid.filter import liquid_filter, with_environment

from campaigns.trait_review import (
    COMPUTED_TIMES,
    EMPTY_LIST_KEYS,
    EMPTY_TEXT_KEYS,
    PROFILE_KEYS,
    ZERO_NUMBER_KEYS,
    liquid_written,
    trait_samples,
    trait_test_problem,
)
from profiles.traits import (
    YEARLESS_DATE,
    TraitRule,
    trait_schema_recent,
    trait_typed,
)
from segments.geo import continent_of

# Limits on what a marketer-written template may cost at send time.
LIQUID_LOOP_ITERATION_LIMIT = 10_000
LIQUID_OUTPUT_LIMIT_CHARS = 1_000_000
LIQUID_NAMESPACE_LIMIT = 10_000


class TemplateError(ValueError):
    """A template failed to parse or render; the message names the part and the line."""


class _SandboxedEnvironment(Environment):
    loop_iteration_limit = LIQUID_LOOP_ITERATION_LIMIT
    output_stream_limit = LIQUID_OUTPUT_LIMIT_CHARS
    local_namespace_limit = LIQUID_NAMESPACE_LIMIT


@with_environment
@liquid_filter
def _date(value: Any, fmt: str, *, environment: Environment) -> str:
    """Liquid's `date`, which also reads a day and month kept with no year (--07-14).

    Such a date (a birthday given without its year) is shown in this year, the
    account's; the 29th of February is the 28th outside a leap year, the day a
    segment gives its anniversary. Nil (a computed time of someone who has not
    done the thing yet) is nothing, as a missing value is and as Shopify's Liquid
    has it, where python-liquid refused the whole message.
    """
    if value is None:
        return ""
    if isinstance(value, str) and (found := YEARLESS_DATE.fullmatch(value.strip())):
        value = _this_years(int(found[1]), int(found[2])) or value
    return liquid_date(value, fmt, environment=environment)


def _this_years(month: int, day: int) -> datetime | None:
    year = timezone.now().astimezone(ZoneInfo(settings.BESPOKE_ACCOUNT_TIME_ZONE)).year
    if (month, day) == (2, 29) and not calendar.isleap(year):
        day = 28
    try:
        return datetime.combine(date(year, month, day), datetime.min.time())
    except ValueError:
        return None


# HTML output escapes every value; subject and text are plain text.
_HTML = _SandboxedEnvironment(autoescape=True)
_TEXT = _SandboxedEnvironment()
for _environment in (_HTML, _TEXT):
    _environment.filters["date"] = _date


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


@lru_cache(maxsize=256)
def _parse(source: str, *, html: bool):
    return (_HTML if html else _TEXT).from_string(source)


def template_check(*, subject: str, html: str, text: str = "") -> list[str]:
    """Return the syntax errors of each part, empty when the template parses."""
    problems = []
    for part, source, is_html in (
        ("subject", subject, False),
        ("html", html, True),
        ("text", text, False),
    ):
        try:
            _parse(source, html=is_html)
        except LiquidError as exc:
            problems.append(_syntax_problem(part, source, exc))
    return problems


# Tags that open a block their `end` tag closes; raw and comment blocks hold text.
BLOCK_TAGS = {"if", "unless", "for", "case", "capture", "tablerow", "comment", "raw"}
TAG_NAME = re.compile(r"{%-?\s*(\w+)")


def _syntax_problem(part: str, source: str, exc: LiquidError) -> str:
    """Say what is wrong and on which line, as far as the error or the source tells.

    For a template that parses but fails on a recipient's data, the same: one line.
    """
    message = getattr(exc, "message", None) or str(exc)
    index = getattr(getattr(exc, "token", None), "start_index", -1)
    if index is not None and index >= 0:
        line = source.count("\n", 0, index) + 1
        return f"{part}, line {line}: {message}"
    unclosed = _unclosed_block(source)
    if message.startswith("expected tag end") and unclosed is not None:
        name, index = unclosed
        line = source.count("\n", 0, index) + 1
        return f"{part}, line {line}: the '{name}' tag opened here is never closed"
    return f"{part}: {message}"


def _unclosed_block(source: str) -> tuple[str, int] | None:
    """Return the name and place of the last block tag the source never closes."""
    opened: list[tuple[str, int]] = []
    for match in TAG_NAME.finditer(source):
        name = match.group(1)
        inside_text = opened and opened[-1][0] in ("raw", "comment")
        if inside_text and name != f"end{opened[-1][0]}":
            continue
        if name in BLOCK_TAGS:
            opened.append((name, match.start()))
        elif name.startswith("end") and opened and opened[-1][0] == name[3:]:
            opened.pop()
    return opened[-1] if opened else None


# What a template can read: the context of sending.message_context, and the keys
# profile_context gives every profile besides its traits.
CONTEXT_NAMES = {
    "profile",
    "campaign",
    "unsubscribe_url",
    "preferences_url",
    "web_version_url",
}
CAMPAIGN_KEYS = {"name", "slug"}

CONDITION_TAG = re.compile(r"{%-?\s*(if|elsif|unless)\s+(.*?)\s*-?%}", re.S)
# A `{% liquid %}` tag holds one tag a line, without delimiters.
LIQUID_TAG = re.compile(r"{%-?\s*liquid\s(.*?)-?%}", re.S)
LIQUID_CONDITION = re.compile(r"^[ \t]*(if|elsif|unless)\s+(.*?)\s*$", re.M)
CONDITION_OPERANDS = re.compile(r"\s+(?:and|or)\s+")
# A case's subject and each of its whens, which compare their values with it.
CASE_TAG = re.compile(r"{%-?\s*(case|when|endcase)\b\s*(.*?)\s*-?%}", re.S)
LIQUID_CASE = re.compile(r"^[ \t]*(case|when|endcase)\b[ \t]*(.*?)\s*$", re.M)
WHEN_VALUES = re.compile(r"\s*,\s*|\s+or\s+")
# `profile.city` (or `.size`), bare or compared with nil either way round (it is
# never nil); `profile['city']` is read as the same.
PROFILE_KEY_TESTED = re.compile(
    r"(?:(?:nil|null)\s*(==|!=|<>)\s*)?profile\.(\w+)(\.size)?"
    r"(?:\s*(==|!=|<>)\s*(?:nil|null))?"
)
PROFILE_KEY_BRACKETED = re.compile(r"profile\[\s*(['\"])(\w+)\1\s*\]")
# What a condition cannot be in: raw, comment and doc blocks, output tags, inline
# comments. Blanked out, line breaks kept, before conditions are looked for.
NOT_CONDITIONS = re.compile(
    r"{%-?\s*raw\s*-?%}.*?{%-?\s*endraw\s*-?%}"
    r"|{%-?\s*comment\s*-?%}.*?{%-?\s*endcomment\s*-?%}"
    r"|{%-?\s*doc\s*-?%}.*?{%-?\s*enddoc\s*-?%}"
    r"|{%-?\s*#.*?%}"
    r"|{{.*?}}",
    re.S,
)
QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


@dataclass(frozen=True)
class TemplateReview:
    errors: list[str]  # the template cannot be parsed: it cannot be saved
    warnings: list[str]  # names no recipient has: they render empty


def template_review(
    *,
    subject: str,
    html: str,
    text: str = "",
    traits: Mapping[str, TraitRule] | Iterable[str] = (),
) -> TemplateReview:
    """Check a template's syntax, and that each name it reads exists for recipients.

    `traits` are the declared traits (the trait schema), by name with their rules:
    `profile.<trait>` is known when it is declared or is a profile field; anything
    else renders as nothing for everyone, usually a typo or a trait that was never
    declared. A condition comparing a declared trait with a value of another type,
    or with a value it does not allow, is warned about too; names given without
    rules are known, their types not.
    """
    errors = template_check(subject=subject, html=html, text=text)
    warnings: list[str] = []
    known = PROFILE_KEYS | set(traits)
    rules = dict(traits) if isinstance(traits, Mapping) else {}
    for part, source, is_html in (
        ("subject", subject, False),
        ("html", html, True),
        ("text", text, False),
    ):
        if not source or any(
            error.startswith((f"{part}:", f"{part},")) for error in errors
        ):
            continue
        template = _parse(source, html=is_html)
        try:
            analysis = template.analyze()
        except TemplateNotFoundError as exc:
            errors.append(
                f"{part}: a template cannot include or render another one "
                f"({exc.message})"
            )
            continue
        except LiquidError as exc:
            errors.append(_syntax_problem(part, source, exc))
            continue
        # An unknown filter parses, then fails every render: refuse it now.
        environment = _HTML if is_html else _TEXT
        for name, spans in analysis.filters.items():
            if name not in environment.filters:
                line = source.count("\n", 0, spans[0].index) + 1
                errors.append(f"{part}, line {line}: there is no filter '{name}'")
        warned: set[str] = set()
        for variables in analysis.globals.values():
            for variable in variables:
                problem = _unknown_name(variable.segments, known)
                if problem and problem not in warned:
                    warned.add(problem)
                    line = source.count("\n", 0, variable.span.index) + 1
                    warnings.append(f"{part}, line {line}: {problem}")
        if not any(error.startswith(part) for error in errors):
            tests = _condition_problems(part, source, rules)
            read = _declared_read(analysis, rules)
            warnings += tests
            warnings += _sample_render_problems(part, source, template, read, tests)
    return TemplateReview(errors, warnings)


def _condition_problems(
    part: str, source: str, rules: dict[str, TraitRule]
) -> list[str]:
    """Name each condition on a profile key that Liquid decides alike for everyone.

    And each that compares a declared trait with a value of another type (always
    false, or failing), or with a value the trait does not allow; a case's whens
    are conditions too.
    """
    scanned = NOT_CONDITIONS.sub(lambda m: re.sub(r"[^\n]", " ", m[0]), source)
    warnings: list[str] = []
    for tag, condition, index in _conditions(scanned):
        line = scanned.count("\n", 0, index) + 1
        for operand in _operands(PROFILE_KEY_BRACKETED.sub(r"profile.\2", condition)):
            # Text in quotes is a value, whatever "and" or "profile.city" it holds.
            problem = _always_alike(QUOTED.sub("''", operand)) or trait_test_problem(
                operand, rules
            )
            if problem:
                warning = f"{part}, line {line}: in this '{tag}', {problem}"
                if warning not in warnings:
                    warnings.append(warning)
    return warnings


def _operands(condition: str, separator: re.Pattern = CONDITION_OPERANDS) -> list[str]:
    """Split a condition at each and and or, but not inside quoted text."""
    quoted = QUOTED.findall(condition)
    operands = []
    for masked in separator.split(QUOTED.sub("''", condition)):
        # The quoted texts come back in order, each where its '' stands.
        operands.append(re.sub("''", lambda _: quoted.pop(0), masked.strip()))
    return operands


def _conditions(source: str) -> list[tuple[str, str, int]]:
    """Return each if, elsif and unless, in order: its tag, condition and place."""
    found = [(m[1], m[2], m.start()) for m in CONDITION_TAG.finditer(source)]
    for block in LIQUID_TAG.finditer(source):
        found += [
            (m[1], m[2], block.start(1) + m.start())
            for m in LIQUID_CONDITION.finditer(block[1])
        ]
    found += _when_conditions(source)
    return sorted(found, key=lambda condition: condition[2])


def _when_conditions(source: str) -> list[tuple[str, str, int]]:
    """Return each when of a case as the condition it tests, and its place.

    Under `case profile.plan`, `when "Free", "Pro"` tests `profile.plan == "Free"
    or profile.plan == "Pro"`.
    """
    tags = [(m[1], m[2], m.start()) for m in CASE_TAG.finditer(source)]
    for block in LIQUID_TAG.finditer(source):
        tags += [
            (m[1], m[2], block.start(1) + m.start())
            for m in LIQUID_CASE.finditer(block[1])
        ]

    subjects: list[str] = []
    found = []
    for tag, expression, index in sorted(tags, key=lambda tag: tag[2]):
        if tag == "case":
            subjects.append(expression.strip())
        elif tag == "endcase" and subjects:
            subjects.pop()
        elif tag == "when" and subjects:
            tests = [
                f"{subjects[-1]} == {value}"
                for value in _operands(expression, WHEN_VALUES)
            ]
            found.append(("when", " or ".join(tests), index))
    return found


def _always_alike(operand: str) -> str:
    """Say why a test of a profile key is true, or false, for every recipient."""
    found = PROFILE_KEY_TESTED.fullmatch(operand)
    if found is None or (found[1] and found[4]):
        return ""
    key, size, compared = found[2], found[3], found[1] or found[4]
    if size and key in EMPTY_TEXT_KEYS | EMPTY_LIST_KEYS:
        empty, why, fix = "0", "0", f"profile.{key}.size > 0"
    elif size:
        return ""
    elif key in EMPTY_TEXT_KEYS:
        empty, why, fix = "empty text", "empty text", f"profile.{key} != blank"
    elif key in ZERO_NUMBER_KEYS:
        empty, why, fix = "0", "0", f"profile.{key} > 0"
    elif key in EMPTY_LIST_KEYS:
        empty, why, fix = "an empty list", "an empty list", f"profile.{key}.size > 0"
    else:
        return ""
    tested = f"profile.{key}{size or ''}"
    if compared == "==":
        # Never nil: when there is nothing, it is empty text, 0 or an empty list.
        never = fix.replace("!= blank", "== blank").replace("> 0", "== 0")
        return (
            f"{tested} == nil is false for every recipient, since it is {empty} "
            f"when there is nothing: test {never} instead"
        )
    return (
        f"{tested} counts as set for every recipient, since Liquid counts {why} "
        f"as true: test {fix} instead"
    )


# A plausible recipient, to try a template on before anyone receives it.
SAMPLE_CONTEXT = {
    "profile": {
        "email": "sam@example.com",
        "first_name": "Sam",
        "last_name": "Sample",
        "full_name": "Sam Sample",
        "city": "Lyon",
        "region": "Auvergne-Rhône-Alpes",
        "country_code": "FR",
        "continent": "Europe",
        "timezone": "Europe/Paris",
        "lifetime_value": 120.0,
        "order_count": 2,
        "tags": ["VIP"],
        "average_order_value": 60.0,
        "first_order_at": datetime(2025, 1, 10, 9, 30, tzinfo=UTC),
        "last_order_at": datetime(2025, 3, 2, 18, 5, tzinfo=UTC),
        "last_seen_at": datetime(2025, 3, 14, 10, 0, tzinfo=UTC),
        "last_opened_at": datetime(2025, 3, 12, 7, 45, tzinfo=UTC),
        "last_clicked_at": None,
        "engagement_score": 42,
        "favourite_category": "Tents",
    },
    "campaign": {"name": "Sample", "slug": "sample"},
    "unsubscribe_url": "https://bespoke.example.com/u/sample",
    "preferences_url": "https://bespoke.example.com/u/sample",
    "web_version_url": "",
}


# A recipient Bespoke knows nothing of yet but the address: no name, no orders.
NEWCOMER_CONTEXT = {
    **SAMPLE_CONTEXT,
    "profile": {
        "email": "new@example.com",
        **dict.fromkeys(EMPTY_TEXT_KEYS, ""),
        **dict.fromkeys(ZERO_NUMBER_KEYS, 0),
        **{key: [] for key in EMPTY_LIST_KEYS},
        **dict.fromkeys(COMPUTED_TIMES),
        "average_order_value": None,
    },
}


# How many sample recipients at most carry the declared traits a part reads, one
# allowed value each: a part read on saving must not take seconds to check.
SAMPLE_TRAIT_RENDERS_MAX = 20
NEWLINE = "\n"


def _sample_render_problems(
    part: str,
    source: str,
    template: Any,
    read: dict[str, TraitRule],
    tests: list[str],
) -> list[str]:
    """Say if rendering the part fails for a plausible recipient, as it would send.

    Tried for a known customer, then for the same with the declared traits the part
    reads (`read`), each as its type, once for each allowed value, then for someone
    known by the address only. A failure on a line whose condition `tests` already
    warns about is not said twice.
    """
    for who, context in _sample_recipients(read):
        try:
            template.render(**context)
        except LiquidError as exc:
            where = part
            index = getattr(getattr(exc, "token", None), "start_index", -1)
            if index is not None and index >= 0:
                # Which line fails, and for which value of a trait, says where to look.
                where = f"{part}, line {source.count(NEWLINE, 0, index) + 1}"
            if _foretold(exc, where, tests):
                return []
            return [
                f"{where}: it fails for {who} ({_failure_words(exc)}); every "
                "recipient it fails for is skipped when the campaign sends"
            ]
    return []


# Liquid's words for a comparison of two types that cannot be compared, and what
# each Python type is in a template.
UNCOMPARABLE = re.compile(
    r"'(?P<operators>[^']+)' and '[^']+' are not supported between "
    r"'(?P<left>\w+)' and '(?P<right>\w+)'"
)
TEMPLATE_KINDS = {
    "str": "text",
    "Markup": "text",
    "int": "a number",
    "float": "a number",
    "Decimal": "a number",
    "bool": "true or false",
    "list": "a list",
    "dict": "an object",
    "datetime": "a date and time",
    "date": "a date",
}


def _foretold(exc: LiquidError, where: str, tests: list[str]) -> bool:
    """Tell whether a condition's warning on the failing line already says it fails.

    Only a comparison of types Liquid cannot compare is foretold so: any other
    failure on the line (a division by 0 beside a condition never true) is said.
    """
    first_line = str(exc).splitlines()[0]
    return bool(UNCOMPARABLE.fullmatch(first_line)) and any(
        test.startswith(f"{where}:") and " fails for " in test for test in tests
    )


def _failure_words(exc: LiquidError) -> str:
    """Return Liquid's reason for a failed render, in a marketer's words if known."""
    first_line = str(exc).splitlines()[0]
    found = UNCOMPARABLE.fullmatch(first_line)
    if found is None:
        return first_line
    left, right = (
        TEMPLATE_KINDS.get(found[side], found[side]) for side in ("left", "right")
    )
    if "contains" in found["operators"]:
        return f"contains cannot look for {right} in {left}"
    return f"{left} and {right} cannot be compared with < or >"


def _sample_recipients(
    read: dict[str, TraitRule],
) -> list[tuple[str, dict[str, Any]]]:
    """Return each sample recipient to try a part on, and how a warning names them."""
    recipients = [("a sample recipient", SAMPLE_CONTEXT)]
    samples = {name: trait_samples(rule) for name, rule in sorted(read.items())}
    count = max(map(len, samples.values()), default=0)
    for turn in range(min(count, SAMPLE_TRAIT_RENDERS_MAX)):
        traits = {name: values[turn % len(values)] for name, values in samples.items()}
        said = [f"{name} is {liquid_written(value)}" for name, value in traits.items()]
        profile = {**SAMPLE_CONTEXT["profile"], **traits}
        recipients.append(
            (
                f"a sample recipient whose {', '.join(said)}",
                {**SAMPLE_CONTEXT, "profile": profile},
            )
        )
    recipients.append(("a recipient with no name or orders yet", NEWCOMER_CONTEXT))
    return recipients


def _declared_read(analysis: Any, rules: dict[str, TraitRule]) -> dict[str, TraitRule]:
    """Return the rule of each declared trait a part reads as profile.<trait>."""
    return {
        variable.segments[1]: rules[variable.segments[1]]
        for variable in analysis.globals.get("profile", ())
        if len(variable.segments) > 1 and variable.segments[1] in rules
    }


def _unknown_name(segments: list, known: set[str]) -> str:
    root = str(segments[0])
    if root not in CONTEXT_NAMES:
        hint = f"; did you mean profile.{root}?" if root in known else ""
        return f"'{root}' is not a name templates can read{hint}"
    if len(segments) < 2 or not isinstance(segments[1], str):
        return ""
    key = segments[1]
    if root == "profile" and key not in known:
        return (
            f"profile.{key} is neither a profile field nor a declared trait: check "
            "the spelling, or declare the trait on the trait schema page"
        )
    if root == "campaign" and key not in CAMPAIGN_KEYS:
        return f"campaign.{key} does not exist: use campaign.name or campaign.slug"
    return ""


def email_render(
    *, subject: str, html: str, text: str, context: dict[str, Any]
) -> RenderedEmail:
    """Render the three parts for one recipient; raise TemplateError naming the part."""
    rendered = {}
    for part, source, is_html in (
        ("subject", subject, False),
        ("html", html, True),
        ("text", text, False),
    ):
        try:
            rendered[part] = (
                _parse(source, html=is_html).render(**context) if source else ""
            )
        except LiquidError as exc:
            raise TemplateError(_syntax_problem(part, source, exc)) from exc

    return RenderedEmail(
        subject=" ".join(rendered["subject"].split()),
        html=rendered["html"],
        text=rendered["text"],
    )


def text_from_html(html: str) -> str:
    """Return an email's HTML as plain text, each link's address beside its words.

    For a template without a text part: the text part then says what the HTML
    says, unsubscribe link included, instead of telling the reader to look
    elsewhere.
    """
    if not html.strip():
        return ""
    text = get_text(html, ParserConfig(display_links=True))
    # inscriptis keeps the blank lines of the layout; three in a row say no more.
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def profile_context(profile) -> dict[str, Any]:
    """Return the plain-data view of a profile that templates may read.

    A declared trait is given as its declared type: a value stored before the
    declaration ("7000", imported as text) is the number a template compares, and
    one that is none of that type ("x" for a boolean) is empty (nil).
    """
    schema = trait_schema_recent()
    data: dict[str, Any] = {
        key: _plain(_declared(schema.get(key), value))
        for key, value in (profile.traits or {}).items()
    }
    data.update(
        {
            "email": profile.email or "",
            "first_name": profile.first_name,
            "last_name": profile.last_name,
            "full_name": profile.full_name,
            "city": profile.city,
            "region": profile.region,
            "country_code": profile.country_code,
            "continent": continent_of(profile.country_code),
            "timezone": profile.timezone,
            "lifetime_value": _plain(profile.lifetime_value),
            "order_count": profile.order_count,
            "tags": sorted(tag.name for tag in profile.tags.all()),
            # The computed traits: empty (nil) until the person has done the thing;
            # times are in UTC, for the `date` filter inside an `if`.
            **{name: getattr(profile, name) for name in COMPUTED_TIMES},
            "average_order_value": _plain(profile.average_order_value),
            "engagement_score": profile.engagement_score,
            "favourite_category": profile.favourite_category,
        }
    )
    return data


def _declared(rule: TraitRule | None, value: Any) -> Any:
    return value if rule is None else trait_typed(rule, value)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
