"""From records to rows: the column map applied, values checked, duplicates merged.

`contacts_parse` is pure: it reads a file (see reading.py), applies the column map
(the marketer's, or the recognised layout's default), turns each record into a row or
a rejection and merges the rows that name the same mailbox. It writes nothing.

Values keep their type as JSON. The ESP's own typed columns (Mailchimp's
MEMBER_RATING, LATITUDE, OPTIN_TIME...) are read as the ESP writes them. A trait with
a TraitDefinition is stored by its declared type through trait_coerce, dates only in
the import's declared format; a value that breaks the rule is refused for that field
alone, and the rest of the row is kept. Any other trait is text as written, so a zip
code like 02134 keeps its zero. A number with more significant digits than a float
keeps (15) is never stored rounded: a declared number trait refuses it for that field
(trait_coerce, as everywhere), and an ESP's typed column of an undeclared trait keeps
it as text, with a note.

A column mapped to the full name is split: its last word becomes the last name and
the words before it the first name, or, when it holds a comma, what comes before the
first comma is the last name and the rest the first name ("Smith, John"). A column
mapped to first or last name wins over the split wherever it has a value. A name of
one word sets the first name only: like a blank cell, the missing last name leaves
the profile's own as it is.
"""

import itertools
import math
import re
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.utils import timezone

from profiles.emails import InvalidEmail, NormalizedEmail, email_normalize
from profiles.importing.layouts import (
    BREVO_BLACKLIST,
    FULL_NAME_COLUMNS,
    PROFILE_FIELDS,
    TARGET_CHANGED_AT,
    TARGET_EMAIL,
    TARGET_FULL_NAME,
    TARGET_STATUS,
    TARGET_SUBSCRIBED,
    TARGET_TAGS,
    TARGET_UNSUBSCRIBED,
    TRAIT_PREFIX,
    ConsentFact,
    Layout,
    RowChanged,
    StatusUnknown,
    blacklisted_read,
    consent_fact,
    contacts_time_parse,
    layout_column_map,
    layout_columns_declared_twice,
    layout_columns_reserved,
    layout_detect,
    layout_time_keys,
    layout_with_status_column,
    opted_in_read,
    status_is_suppressed,
    status_read,
)
from profiles.importing.reading import (
    HEADER_NAME_MAX_CHARS,
    EncodingHint,
    ImportFormatError,
    SheetDate,
    SheetError,
    column_key,
    contacts_decoded,
    contacts_header_cells,
    contacts_header_read,
    contacts_is_workbook,
    contacts_records,
    contacts_tags_split,
    decoded_records,
    encoding_hint,
    header_cells_cut,
    header_names,
    trait_key,
    trait_key_cut,
)
from profiles.models import (
    Profile,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
    TraitType,
)
from profiles.names import (
    CONTROL_CHARACTER,
    TAG_MAX_CHARS,
    field_text_clean,
    name_split,
    tags_distinct,
)
from profiles.processing_traits import COMPUTED_FIELDS
from profiles.services import (
    OCCURRED_AT_CLAIMED,
    WITHDRAWN_STATUSES,
    suppression_hash,
)
from profiles.traits import (
    NO_KEYS,
    NUMBER_MAX_DIGITS,
    QUOTED_MAX_CHARS,
    TRAIT_NAME_MAX_CHARS,
    TraitInvalid,
    TraitRule,
    country_code_read,
    names_by_caseless,
    number_digits,
    number_text,
    trait_coerce,
    trait_name_is_reserved,
    trait_schema_load,
    value_caseless,
    yes_no_key,
)

TRAIT_NAME = re.compile(rf"\w{{1,{TRAIT_NAME_MAX_CHARS}}}")
# A plain ASCII local part that email-validator always accepts; anything else takes
# the full check. The domain is checked once per file by email-validator itself.
# A column holds the same few values again and again (a status, a city, a tag list,
# a number): each distinct cell is read once per file and its outcome reused.
CELL_CACHE_MAX = 100_000
# The ESP's typed columns that are read as numbers.
NUMBER_KINDS = ("int", "float")


# An address has at most 254 characters; a report quotes a cell this long at most.
REPORT_EMAIL_MAX_CHARS = 320
# A refused value is quoted up to this many characters in the report.
REPORT_VALUE_MAX_CHARS = 200
# A column's name is quoted up to this many characters in a note about its length.
COLUMN_SHOWN_MAX_CHARS = 60
# The trait a country column's value Bespoke cannot read as a country is kept as.
COUNTRY_TRAIT = "country"
# A trait's value from one cell, at most: as much as the tracking API takes in a
# whole call. A longer cell (a pasted document) is left out with a note, rather than
# make its profile's page megabytes long.
TRAIT_VALUE_MAX_CHARS = 32 * 1024


@dataclass(frozen=True)
class Rejection:
    record: int
    line: int
    email: str
    reason: str
    message: str
    column: str = ""  # set when one field was refused and the row was kept

    def as_dict(self) -> dict[str, Any]:
        result = {
            "record": self.record,
            "line": self.line,
            "email": report_email(self.email),
            "reason": self.reason,
            "message": self.message,
        }
        if self.column:
            result["column"] = self.column
        return result


def report_email(written: str) -> str:
    """Return an address as the report quotes it: as written, up to a length."""
    # The cell may hold anything; no address reaches this length.
    if len(written) <= REPORT_EMAIL_MAX_CHARS:
        return written
    return f"{written[:REPORT_EMAIL_MAX_CHARS]}… ({len(written):,} characters)"


# Each tag of a cell cut or left out: (note kind, tag, what).
TagProblems = tuple[tuple[str, str, str], ...]
# A cell's tags as kept, and its problems.
TagsRead = tuple[tuple[str, ...], TagProblems]
# The kinds of the notes on tags cut or left out.
TAG_NOTE_KINDS = frozenset({"tag_cut", "tag_left_out"})


@dataclass(slots=True)
class ContactRow:
    """One accepted record, or several records of one mailbox merged into one."""

    records: list[int]
    lines: list[int]
    email: NormalizedEmail
    fields: dict[str, str]
    traits: dict[str, Any]
    tags: list[str]
    changed_at: datetime | None
    consents: list[ConsentFact]
    # Each record's address as written, beside `records`, once rows are merged
    # ("Ann@Example.com" and "ann@example.com"); a single record's is email.display.
    written: tuple[str, ...] = ()
    # The records whose tags were cut or left out: (record, line, address as
    # written, each problem). Kept on the row, so that the report can count the
    # records of people it keeps (contacts_tag_notes).
    tag_problems: tuple[tuple[int, int, str, TagProblems], ...] = ()
    # The record's opt-in column said no, and it states no consent: of an address's
    # rows, the newest saying so leaves the older ones' subscriptions out.
    declined: bool = False
    # Once merged: the records whose subscriptions a newer "no" left out.
    declined_over: tuple[int, ...] = ()


def row_written(row: ContactRow, record: int) -> str:
    """Return the address one of a row's records wrote, as the report names it."""
    if not row.written:
        return report_email(row.email.display)
    return report_email(row.written[row.records.index(record)])


@dataclass
class ParsedContacts:
    layout: str
    source: str
    records: int
    rows: list[ContactRow]
    rejections: list[Rejection]
    field_rejections: list[Rejection] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)
    # The declared traits the rows were read under.
    schema: dict[str, TraitRule] = field(default_factory=dict)
    # The column tags were read from, which tag notes name; empty if none.
    tags_column: str = ""


@dataclass
class ColumnPlan:
    """Where each kind of value sits in the header, compiled from a column map."""

    layout: Layout
    names: list[str]
    by_key: dict[str, int]
    email: int
    fields: list[tuple[int, str]] = field(default_factory=list)
    traits: list[tuple[int, str, str, TraitRule | None]] = field(default_factory=list)
    tags: int | None = None
    status: int | None = None
    unsubscribed: int | None = None
    subscribed: int | None = None
    full_name: int | None = None
    # The column mapped as each row's change time, else the layout's own.
    changed_at: int | None = None
    # Whether it dates each row's consent: not an export's own time, when a mapped
    # status column speaks instead of the export's status.
    changed_at_dates: bool = True


# The column map ------------------------------------------------------------------


def column_target_check(target: str, *, column: str = "") -> str:
    """Return a column map target if Bespoke knows it, or raise ImportFormatError."""
    consent = (TARGET_STATUS, TARGET_UNSUBSCRIBED, TARGET_SUBSCRIBED)
    if target in ("", TARGET_TAGS, *consent):
        return target
    if target in (TARGET_FULL_NAME, TARGET_CHANGED_AT):
        return target
    if target in PROFILE_FIELDS:
        return target

    name = target.removeprefix(TRAIT_PREFIX)
    the_column = f"The column “{column}”" if column else "A column"
    if target.startswith(TRAIT_PREFIX) and trait_name_is_reserved(name):
        raise ImportFormatError(
            f"{the_column} cannot become the trait “{name}”: that is the name of a "
            "profile field, which would hide the trait. Map it to a profile field "
            "or ignore it."
        )
    if target.startswith(TRAIT_PREFIX) and TRAIT_NAME.fullmatch(name):
        return target
    raise ImportFormatError(
        f"{the_column} is mapped to {target!r}, which Bespoke cannot import into."
    )


def column_map_declared(
    column_map: dict[str, str], declared: Iterable[str]
) -> dict[str, str]:
    """Return the map with each trait target named as the declared trait, in any case.

    `--map Tier=traits.loyaltytier` is the declared loyaltyTier, checked by its
    rules, as the default map names a `LOYALTYTIER` column: in another case it
    would be an undeclared trait of its own, stored unchecked.
    """
    names = set(declared)
    by_caseless = names_by_caseless(names)
    resolved: dict[str, str] = {}
    for column, target in column_map.items():
        name = target.removeprefix(TRAIT_PREFIX)
        if target.startswith(TRAIT_PREFIX) and name not in names:
            target = TRAIT_PREFIX + by_caseless.get(value_caseless(name), name)
        resolved[column] = target
    return resolved


def column_map_check(column_map: dict[str, str]) -> None:
    """Raise ImportFormatError unless each target is known and takes one column only."""
    # Two columns sent to one trait (or field) would keep only the later value.
    columns_by_target: dict[str, str] = {}
    for column, target in column_map.items():
        column_target_check(target, column=column)
        if not target:
            continue
        first = columns_by_target.setdefault(target, column)
        if first != column:
            raise ImportFormatError(
                f"The columns “{first}” and “{column}” are both imported as "
                f"{_target_label(target)}, and one would overwrite the other. "
                "Import one of them as something else, or ignore it."
            )


def _target_label(target: str) -> str:
    if target.startswith(TRAIT_PREFIX):
        return f"the trait “{target.removeprefix(TRAIT_PREFIX)}”"
    labels = {
        **PROFILE_FIELDS,
        TARGET_EMAIL: "the email address",
        TARGET_TAGS: "tags",
        TARGET_STATUS: "the subscription status",
        TARGET_UNSUBSCRIBED: "the unsubscribed flag",
        TARGET_SUBSCRIBED: "the subscribed flag",
        TARGET_FULL_NAME: "the full name",
        TARGET_CHANGED_AT: "the time each row last changed",
    }
    label = labels[target]
    return label if label.startswith("the ") else label.lower()


def column_plan_build(
    layout: Layout,
    names: list[str],
    column_map: dict[str, str],
    schema: dict[str, TraitRule],
) -> ColumnPlan:
    """Compile a column map against a header; raise ImportFormatError if it cannot run."""
    by_key: dict[str, int] = {}
    for position, name in enumerate(names):
        by_key.setdefault(column_key(name), position)

    # header_names made every name different, so each column has its own entry.
    mapped = {name: column_map.get(name, "") for name in names}
    column_map_check(mapped)
    targets = list(enumerate(mapped.values()))
    emails = [position for position, target in targets if target == TARGET_EMAIL]
    if not emails:
        raise ImportFormatError(
            "The header has no email column. Name one column 'Email Address' or "
            f"'email'; the header found was: {', '.join(names)}."
        )

    plan = ColumnPlan(layout, names, by_key, emails[0])
    for position, target in targets:
        _plan_add(plan, position, target, schema)
    if plan.changed_at is None and layout.changed_at:
        plan.changed_at = by_key.get(column_key(layout.changed_at))
    return plan


def _plan_add(
    plan: ColumnPlan, position: int, target: str, schema: dict[str, TraitRule]
) -> None:
    if target in ("", TARGET_EMAIL):
        return
    if target == TARGET_TAGS and plan.tags is None:
        plan.tags = position
    elif target == TARGET_STATUS and plan.status is None:
        plan.status = position
    elif target == TARGET_UNSUBSCRIBED and plan.unsubscribed is None:
        plan.unsubscribed = position
    elif target == TARGET_SUBSCRIBED and plan.subscribed is None:
        plan.subscribed = position
    elif target == TARGET_FULL_NAME and plan.full_name is None:
        plan.full_name = position
    elif target == TARGET_CHANGED_AT and plan.changed_at is None:
        plan.changed_at = position
    elif target.startswith(TRAIT_PREFIX):
        name = target[len(TRAIT_PREFIX) :]
        kind = plan.layout.kinds.get(column_key(plan.names[position]), "")
        plan.traits.append((position, name, kind, schema.get(name)))
    elif target in PROFILE_FIELDS:
        plan.fields.append((position, target))


# Values ----------------------------------------------------------------------------


def _value_read(kind: str, text: str, date_format: str = "") -> Any:
    if kind == "int":
        return int(text)
    if kind == "float":
        number = float(text)
        # JSON has no NaN or infinity, and PostgreSQL refuses them in a jsonb value.
        if not math.isfinite(number):
            raise ValueError(text)
        return number
    if kind == "time":
        return contacts_time_parse(text, date_format).isoformat()
    return text


@lru_cache(maxsize=32)
def _max_length(name: str) -> int | None:
    return Profile._meta.get_field(name).max_length


@lru_cache(maxsize=CELL_CACHE_MAX)
def _profile_value_check(name: str, value: str) -> str:
    """Return the value as the profile stores it, or raise ValueError."""
    if name == "country_code":
        code = country_code_read(value)
        if not code:
            raise ValueError("not a two-letter country code")
        return code

    if name == "timezone":
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("not an IANA time zone name") from exc

    value = field_text_clean(value)
    limit = _max_length(name)
    if limit is not None and len(value) > limit:
        raise ValueError(f"longer than {limit} characters")
    return value


# Records ---------------------------------------------------------------------------


@dataclass(slots=True)
class _TagProblem:
    """A tag cut or left out, and how many records held it (the first few named)."""

    count: int = 0
    # One more than a note shows, so that it can say "and more".
    records: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    # The address of the first record: its note names it if it is the only one.
    email: str = ""


@dataclass
class _RecordContext:
    plan: ColumnPlan
    date_format: str
    now: datetime
    notes: list[dict[str, Any]]
    field_rejections: list[Rejection]
    workbook: bool = False
    decimal_comma: bool = False
    # The columns whose 1.000-like numbers were noted as read with a decimal point.
    points_noted: set[str] = field(default_factory=set)
    coerced: dict[tuple, tuple] = field(default_factory=dict)
    tag_lists: dict[str, TagsRead] = field(default_factory=dict)
    # The records whose mapped status cell was blank, and that said nothing else.
    status_blank: list[int] = field(default_factory=list)
    # The lines of CSV records with more cells than the header, the extra ones empty.
    extra_empty: list[int] = field(default_factory=list)
    # The records whose change-time cell is no time in the file's date format.
    changed_unread: list[int] = field(default_factory=list)
    # The lines of CSV records imported with fewer cells than the header, by count.
    short: dict[int, list[int]] = field(default_factory=dict)
    # The declared rule of the trait a country no one can read is kept as.
    country_rule: TraitRule | None = None


def _ignored_note(record: int, column: str, value: str, why: str) -> dict[str, Any]:
    shown = repr(value)
    if len(value) > REPORT_VALUE_MAX_CHARS:
        # A value refused for its length would fill the page and the CSV again.
        shown = f"{value[:REPORT_VALUE_MAX_CHARS]!r}… ({len(value):,} characters)"
    return {
        "kind": "ignored_value",
        "record": record,
        "column": column,
        "message": f"Record {record}: {column} {shown} was not imported ({why}).",
    }


def _country_note(
    record: int, column: str, value: str, trait: str = COUNTRY_TRAIT
) -> dict[str, Any]:
    return {
        "kind": "country_as_trait",
        "record": record,
        "column": column,
        "message": (
            f"Record {record}: {column} {value!r} is no country Bespoke knows by that "
            f"name: it is kept as the trait {trait}, and the profile's country is "
            "unchanged."
        ),
    }


def _country_trait_read(
    context: _RecordContext,
    record: int,
    line: int,
    email: str,
    column: str,
    value: str,
    traits: dict[str, Any],
) -> None:
    """Keep a country Bespoke cannot read as the trait country, under its rules.

    A declared country trait (in any case) checks it as a column mapped to the
    trait would: a value that breaks them is refused for that field alone.
    """
    rule = context.country_rule
    if rule is None:
        traits[COUNTRY_TRAIT] = value
        context.notes.append(_country_note(record, column, value))
        return

    try:
        traits[rule.name] = _trait_coerce(context, rule, value, context.date_format)
    except TraitInvalid as exc:
        context.field_rejections.append(
            _field_rejection(column, rule, exc, record, line, email)
        )
        return
    context.notes.append(_country_note(record, column, value, rule.name))


def _fields_read(
    context: _RecordContext,
    record: int,
    line: int,
    email: str,
    cells: list[str],
    traits: dict[str, Any],
) -> dict[str, str]:
    plan = context.plan
    fields: dict[str, str] = {}
    if plan.full_name is not None:
        # Read first, so that a column mapped to first or last name wins.
        column, cell = plan.names[plan.full_name], cells[plan.full_name]
        _full_name_split(context, record, column, cell, fields)
    for position, name in plan.fields:
        value = cells[position].strip()
        if not value:
            continue
        try:
            fields[name] = _profile_value_check(name, value)
        except ValueError as exc:
            if name == "country_code" and plan.layout.country_as_trait:
                column = plan.names[position]
                _country_trait_read(context, record, line, email, column, value, traits)
                continue
            context.notes.append(
                _ignored_note(record, plan.names[position], value, str(exc))
            )
    return fields


def _full_name_split(
    context: _RecordContext,
    record: int,
    column: str,
    cell: str,
    fields: dict[str, str],
) -> None:
    """Put a full name's first and last name into their fields (see name_split)."""
    try:
        # A control character anywhere refuses the name whole: half of it would
        # be a name nobody wrote.
        field_text_clean(cell)
    except ValueError as exc:
        context.notes.append(_ignored_note(record, column, cell.strip(), str(exc)))
        return
    for name, value in name_split(cell).items():
        try:
            fields[name] = _profile_value_check(name, value)
        except ValueError as exc:
            context.notes.append(_ignored_note(record, column, value, str(exc)))


def _traits_read(
    context: _RecordContext, record: int, line: int, cells: list[str], email: str
) -> dict[str, Any]:
    plan = context.plan
    traits: dict[str, Any] = {}
    for position, name, kind, rule in plan.traits:
        cell = cells[position]
        value = cell.strip()
        if not value:
            continue
        if len(value) > TRAIT_VALUE_MAX_CHARS:
            why = f"longer than {TRAIT_VALUE_MAX_CHARS:,} characters"
            context.notes.append(
                _ignored_note(record, plan.names[position], value, why)
            )
            continue
        if _is_number(kind, rule) and not isinstance(cell, SheetDate):
            value = _number_written(context, record, plan.names[position], value)
        digits = _digits_a_float_loses(value) if _is_number(kind, rule) else 0
        if digits and rule is None:
            # As text it keeps every digit; as a float it would be rounded.
            context.notes.append(
                _number_as_text_note(record, plan.names[position], value, digits)
            )
            traits[name] = value
            continue
        try:
            typed = _value_read(kind, value, context.date_format) if kind else value
        except ValueError:
            why = f"expected a {'time' if kind == 'time' else 'number'}"
            context.notes.append(
                _ignored_note(record, plan.names[position], value, why)
            )
            continue

        if rule is None:
            control = isinstance(typed, str) and CONTROL_CHARACTER.search(typed)
            if control:
                # As an identify's trait is, and a declared text trait's cell.
                why = f"it holds the control character U+{ord(control.group()):04X}"
                context.notes.append(
                    _ignored_note(record, plan.names[position], value, why)
                )
                continue
            traits[name] = typed
            continue
        try:
            # The ESP's own typed columns and a workbook's date cells have a known
            # format; only text is read in the date format the marketer declared.
            typed_cell = kind or isinstance(cell, SheetDate)
            date_format = "" if typed_cell else context.date_format
            # As written, so that trait_coerce counts the cell's digits, not a
            # float's, and refuses a number it would store rounded.
            raw = value if digits else typed
            traits[name] = _trait_coerce(context, rule, raw, date_format)
        except TraitInvalid as exc:
            context.field_rejections.append(
                _field_rejection(plan.names[position], rule, exc, record, line, email)
            )
    return traits


# A number written with a decimal comma: 1.234.567,89, 1 234,5 or 2,5.
DECIMAL_COMMA_NUMBER = re.compile(
    r"[+-]?(?:[0-9]{1,3}(?:[. \u00a0\u202f][0-9]{3})+|[0-9]+)(?:,[0-9]+)?"
)
# What reads as a number with a decimal point but may be a thousand written with a
# point (1.000); 2.500.000 is no number with a decimal point, and is refused.
THOUSANDS_WITH_POINTS = re.compile(r"[+-]?[0-9]{1,3}\.[0-9]{3}")


def number_written_with_groups(text: str) -> bool:
    """Whether a cell is a number written with thousands or a decimal comma.

    1.000, 1.234,5 or 2,5: read with a decimal point unless the import says the
    file writes a decimal comma (the mapping page warns of such columns).
    """
    return (
        bool(DECIMAL_COMMA_NUMBER.fullmatch(text)) and not text.lstrip("+-").isdigit()
    )


def _number_written(
    context: _RecordContext, record: int, column: str, value: str
) -> str:
    """A number cell as the number grammar reads it, by the file's declared writing."""
    if context.decimal_comma:
        if DECIMAL_COMMA_NUMBER.fullmatch(value):
            return re.sub(r"[. \u00a0\u202f]", "", value).replace(",", ".")
        return value
    if (
        not context.workbook
        and column not in context.points_noted
        and THOUSANDS_WITH_POINTS.fullmatch(value)
    ):
        # Read as the decimal point it is by default, but said once a column.
        context.points_noted.add(column)
        context.notes.append(
            {
                "kind": "decimal_point",
                "record": record,
                "column": column,
                "message": (
                    f"Record {record}: {column} {value!r} was read with a decimal "
                    f"point, as {float(value):g}, and so were the column's other "
                    "numbers. If the file writes a thousand as 1.000, import it "
                    "again with “decimal comma” chosen on the mapping page "
                    "(--decimal-comma)."
                ),
            }
        )
    return value


def _is_number(kind: str, rule: TraitRule | None) -> bool:
    if rule is not None:
        return rule.type == TraitType.NUMBER
    return kind in NUMBER_KINDS


def _digits_a_float_loses(text: str) -> int:
    """Return a number cell's significant digits if a float cannot keep them all, else 0."""
    # A cell this short cannot hold more digits than a float keeps.
    if len(text) <= NUMBER_MAX_DIGITS:
        return 0
    digits = _significant_digits(text)
    return digits if digits > NUMBER_MAX_DIGITS else 0


@lru_cache(maxsize=CELL_CACHE_MAX)
def _significant_digits(text: str) -> int:
    """Return how many significant digits a number written as text has; 0 if none."""
    written = number_text(text)
    return number_digits(written) if written is not None else 0


def _number_as_text_note(
    record: int, column: str, value: str, digits: int
) -> dict[str, Any]:
    return {
        "kind": "number_as_text",
        "record": record,
        "column": column,
        "message": (
            f"Record {record}: {column} {cell_quoted(value)} has {digits} "
            f"significant digits, more than a number keeps ({NUMBER_MAX_DIGITS}), "
            "so it was imported as text, every digit kept."
        ),
    }


def cell_quoted(value: str) -> str:
    """Quote a cell for a note, cut short past QUOTED_MAX_CHARS."""
    if len(value) <= QUOTED_MAX_CHARS:
        return repr(value)
    return f"{value[:QUOTED_MAX_CHARS]!r}… ({len(value):,} characters)"


def _field_rejection(
    column: str, rule: TraitRule, exc: TraitInvalid, record: int, line: int, email: str
) -> Rejection:
    # The trait's message starts with its name, and the column says it already.
    detail = exc.message.removeprefix(f"{rule.name}: ")
    message = f"{column}: {detail}; the rest of the row was imported."
    return Rejection(record, line, email, exc.reason, message, column)


def _trait_coerce(
    context: _RecordContext, rule: TraitRule, value: Any, date_format: str
) -> Any:
    """Return trait_coerce's value for a cell, reading each distinct cell once."""
    # The type is part of the key: 1, 1.0 and True are equal keys to a dict.
    key = (rule, type(value), value, date_format)
    outcome = context.coerced.get(key)
    if outcome is None:
        try:
            # A time with no offset is in the import's zone, as the layouts'
            # own time columns are (contacts_time_parse).
            zone = ZoneInfo(settings.BESPOKE_IMPORT_TIME_ZONE)
            coerced = trait_coerce(rule, value, date_format=date_format, time_zone=zone)
            outcome = (True, coerced)
        except TraitInvalid as exc:
            outcome = (False, exc.reason, exc.message)
        if len(context.coerced) < CELL_CACHE_MAX:
            context.coerced[key] = outcome
    if outcome[0]:
        return outcome[1]
    raise TraitInvalid(outcome[1], outcome[2])


def _tags_read(context: _RecordContext, cell: str) -> TagsRead:
    """Return a cell's tags, cleaned, and each one cut or left out.

    Each distinct cell is split and cleaned once.
    """
    read = context.tag_lists.get(cell)
    if read is None:
        read = _tags_clean(contacts_tags_split(cell))
        if len(context.tag_lists) < CELL_CACHE_MAX:
            context.tag_lists[cell] = read
    return read


def _tags_clean(names: list[str]) -> TagsRead:
    """Return the tags as a profile keeps them, and each one cut or left out, and why.

    A tag is one line of text, as a name is: white space (a line break, a tab) is
    one space, and a control character leaves the tag out, as it does a trait's
    value. A tag longer than the tag column is cut to it.
    """
    kept: list[str] = []
    problems: list[tuple[str, str, str]] = []
    for name in names:
        control = CONTROL_CHARACTER.search(name)
        if control:
            why = f"it holds the control character U+{ord(control.group()):04X}"
            problems.append(("tag_left_out", name, f"was not imported ({why})"))
            continue
        clean = field_text_clean(name)
        if len(clean) > TAG_MAX_CHARS:
            cut = f"was cut to its first {TAG_MAX_CHARS} characters, all a tag holds"
            problems.append(("tag_cut", name, cut))
            clean = clean[:TAG_MAX_CHARS].rstrip()
        if clean:
            kept.append(clean)
    return tuple(tags_distinct(kept)), tuple(problems)


def contacts_tag_notes(
    parsed: ParsedContacts, *, leave_out: Container[str] = frozenset()
) -> list[dict[str, Any]]:
    """Say once for the file each tag cut or left out, with how many records held it.

    A file may give the same tag on every row: one note per distinct tag and
    problem, not one per record. A tag of one record keeps that record's note,
    naming its address. The records of the addresses in `leave_out` (people
    erased on request, whose rows are not imported) are neither counted nor named.
    """
    # In the file's order: a merged row holds records from anywhere in it.
    held = sorted(
        found
        for row in parsed.rows
        if row.tag_problems and row.email.key not in leave_out
        for found in row.tag_problems
    )
    seen: dict[tuple[str, str, str], _TagProblem] = {}
    for record, line, written, problems in held:
        for problem in problems:
            tally = seen.get(problem)
            if tally is None:
                tally = seen[problem] = _TagProblem(email=written)
            tally.count += 1
            if len(tally.records) <= LINES_SHOWN:
                tally.records.append(record)
                tally.lines.append(line)
    return [
        _tag_note(parsed.tags_column, problem, tally) for problem, tally in seen.items()
    ]


def _tag_note(
    column: str, problem: tuple[str, str, str], seen: _TagProblem
) -> dict[str, Any]:
    kind, name, what = problem
    said = f"{column} tag {cell_quoted(name)} {what}."
    if seen.count == 1:
        record, line = seen.records[0], seen.lines[0]
        return {
            "kind": kind,
            "record": record,
            "line": line,
            "column": column,
            "email": seen.email,
            "message": f"Record {record} (line {line}): {said}",
        }

    lines = _numbers_said("line", seen.lines)
    return {
        "kind": kind,
        "records": seen.records[:LINES_SHOWN],
        "lines": seen.lines[:LINES_SHOWN],
        "count": seen.count,
        "column": column,
        "message": f"{seen.count:,} records ({lines}): {said}",
    }


def _cell_reader(plan: ColumnPlan, cells: list[str]):
    def cell(name: str) -> str | None:
        position = plan.by_key.get(column_key(name))
        return cells[position].strip() if position is not None else None

    return cell


def _consents_read(
    context: _RecordContext,
    record: int,
    line: int,
    cells: list[str],
    changed: RowChanged | None,
) -> list[ConsentFact]:
    """Return the consent facts a record states; raise StatusUnknown on a bad status.

    The row's change time, if a column gives it, dates a fact the layout does not.
    """
    plan = context.plan
    status = plan.layout.status
    left = None
    if status is None and plan.unsubscribed is not None:
        cell = cells[plan.unsubscribed]
        left = _named(blacklisted_read, cell, plan.names[plan.unsubscribed])
        blacklist = column_key(plan.names[plan.unsubscribed]) == BREVO_BLACKLIST
        if left == SubscriptionStatus.SUBSCRIBED and not blacklist:
            # "Not unsubscribed" is no consent: the row keeps what the export says
            # of everyone in it, if anything. Brevo's EMAIL_BLACKLISTED aside,
            # which says whether a contact of the list may be emailed.
            left = plan.layout.status_of_export
    said = ""
    not_yet = False
    if status is None and plan.status is not None and cells[plan.status].strip():
        said = cells[plan.status]
        not_yet = column_key(said) in NO_CONSENT_YET
        if not_yet:
            # Mailchimp's "pending": asked, not confirmed. The contact is imported,
            # with no consent, and the report says so.
            column = plan.names[plan.status]
            why = "not confirmed, so no consent yet: the contact has none"
            context.notes.append(_ignored_note(record, column, said.strip(), why))
        else:
            status = _named(status_read, said, plan.names[plan.status])
    said_in = plan.status
    # A row that says both "subscribed" and "unsubscribed: yes" has left: a
    # withdrawal always wins over a list's word that someone is subscribed.
    # Except a bounce: cleaned stops all email, which unsubscribed does not say.
    if left is not None and (
        status is None
        or (
            left == SubscriptionStatus.UNSUBSCRIBED
            and status != SubscriptionStatus.CLEANED
        )
    ):
        status = left
        said_in = plan.unsubscribed
    if status is None and plan.subscribed is not None:
        status = _opted_in(context, record, cells[plan.subscribed])
        said_in = plan.subscribed
    elif status == SubscriptionStatus.SUBSCRIBED and plan.subscribed is not None:
        declined = cells[plan.subscribed].strip()
        if yes_no_key(declined) in NO_KEYS:
            # Two columns disagree: the status is read, and the report says so.
            context.notes.append(_disagree_note(record, plan, said_in, declined))
    if not_yet and status not in WITHDRAWN_STATUSES:
        # Not confirmed is no consent, whatever another column says; only a
        # withdrawal beside it stands (an opt-in column may say "unsubscribed").
        return []
    if said_in is not None:
        said = cells[said_in]
    if status is None:
        if plan.status is not None and not not_yet:
            context.status_blank.append(record)
        return []

    suppressed = status == SubscriptionStatus.CLEANED and status_is_suppressed(said)
    if suppressed:
        context.notes.append(_suppressed_note(record, plan.names[said_in], said))
    cell = _cell_reader(plan, cells)
    fact = consent_fact(
        plan.layout,
        record=record,
        status=status,
        cell=cell,
        now=context.now,
        suppressed=suppressed,
        date_format=context.date_format,
        changed=changed if plan.changed_at_dates else None,
        # The column the status was read from, unless the export states it.
        read_from=(
            (plan.names[said_in], said.strip())
            if said_in is not None and plan.layout.status is None
            else None
        ),
    )
    if OCCURRED_AT_CLAIMED in fact.evidence:
        claimed = fact.evidence[OCCURRED_AT_CLAIMED]
        context.notes.append(_future_note(record, line, claimed))
    return [fact]


def _disagree_note(
    record: int, plan: ColumnPlan, said_in: int | None, declined: str
) -> dict[str, Any]:
    status_column = plan.names[said_in] if said_in is not None else "The status"
    opt_in_column = plan.names[plan.subscribed] if plan.subscribed is not None else ""
    return {
        "kind": "consent_columns_disagree",
        "record": record,
        "column": opt_in_column,
        "message": (
            f"Record {record}: {status_column} says subscribed but {opt_in_column} "
            f"says {declined!r}; the subscription is recorded, as the status column "
            "says. If the file's status is not to be trusted, map it to a trait."
        ),
    }


def _future_note(record: int, line: int, claimed: str) -> dict[str, Any]:
    return {
        "kind": "consent_time_future",
        "record": record,
        "line": line,
        "message": (
            f"Record {record} (line {line}): its consent is dated {claimed}, after "
            "the import; it is recorded as of the import, not in the future, with "
            "the date written kept as evidence."
        ),
    }


def _named(
    read: Callable[[str], SubscriptionStatus], cell: str, column: str
) -> SubscriptionStatus | None:
    # Read a consent cell; a word it does not know is refused naming its column.
    if not cell.strip():
        return None
    try:
        return read(cell)
    except StatusUnknown as exc:
        exc.column = column
        raise


# Statuses an export gives someone who has not consented yet: no consent, no refusal.
NO_CONSENT_YET = {"pending", "transactional"}


def _opted_in(
    context: _RecordContext, record: int, cell: str
) -> SubscriptionStatus | None:
    # A word an opt-in column does not know ("pending", "N/A") is no consent: the
    # contact is imported without one, and the report says so.
    if not cell.strip():
        return None
    try:
        return opted_in_read(cell)
    except StatusUnknown:
        plan = context.plan
        column = plan.names[plan.subscribed]
        context.notes.append(
            _ignored_note(
                record, column, cell.strip(), "not yes, no or a status: no consent"
            )
        )
        return None


def _suppressed_note(record: int, column: str, said: str) -> dict[str, Any]:
    return {
        "kind": "suppressed_as_cleaned",
        "record": record,
        "column": column,
        "message": (
            f"Record {record}: {column} is {said.strip()!r}, read as cleaned: "
            "Bespoke sends this address no email, and a later list import does "
            "not subscribe it again."
        ),
    }


def _row_changed(
    context: _RecordContext, record: int, cells: list[str]
) -> RowChanged | None:
    position = context.plan.changed_at
    if position is None or not cells[position].strip():
        return None
    written = cells[position].strip()
    try:
        at = contacts_time_parse(written, context.date_format)
    except ValueError:
        context.changed_unread.append(record)
        return None
    return RowChanged(context.plan.names[position], written, at)


def _record_read(
    context: _RecordContext, record: int, line: int, cells: list[str]
) -> ContactRow | Rejection:
    """Turn one record into a row, or into the reason it is refused."""
    plan = context.plan
    written = cells[plan.email]
    try:
        email = email_normalize(written)
    except InvalidEmail as exc:
        message = exc.detail
        if exc.reason == "missing_email":
            message = f"The {plan.names[plan.email]} cell is empty."
        return Rejection(record, line, written.strip(), exc.reason, message)

    changed = _row_changed(context, record, cells)
    try:
        consents = _consents_read(context, record, line, cells, changed)
    except StatusUnknown as exc:
        # The rest of the row is good: the contact is imported, with no consent
        # from this row (a CRM's "Active" or "Lead" is no consent either way).
        accepted = ", ".join(exc.accepted)
        message = (
            f"{exc.column}: unknown status {exc.text!r}. Accepted (any case): "
            f"{accepted}. The contact was imported without consent from this row."
        )
        context.field_rejections.append(
            Rejection(
                record, line, email.display, "invalid_status", message, exc.column
            )
        )
        consents = []

    traits = _traits_read(context, record, line, cells, email.display)
    fields = _fields_read(context, record, line, email.display, cells, traits)
    tags, problems = (), ()
    if plan.tags is not None:
        tags, problems = _tags_read(context, cells[plan.tags])
    changed_at = changed.at if changed else None
    row = ContactRow(
        [record], [line], email, fields, traits, list(tags), changed_at, consents
    )
    if not consents and plan.subscribed is not None:
        row.declined = yes_no_key(cells[plan.subscribed]) in NO_KEYS
    if problems:
        row.tag_problems = ((record, line, email.display, problems),)
    return row


def _record_read_checked(
    context: _RecordContext, record: int, line: int, cells: list[str]
) -> ContactRow | Rejection:
    """Read a record whose cell count may not match the header's."""
    width = len(context.plan.names)
    if len(cells) > width and any(cell.strip() for cell in cells[width:]):
        # Usually an unquoted comma: every value after it sits in the wrong column.
        written = cells[context.plan.email].strip()
        message = f"The record has {len(cells)} cells but the header has {width}."
        return Rejection(record, line, written, "extra_cells", message)

    # A sheet's row ends at its last cell with a value: only a CSV record is short.
    length = len(cells)
    if length > width and not context.workbook:
        context.extra_empty.append(line)
    if length != width:
        cells = cells[:width] + [""] * (width - length)
    first_note = len(context.notes)
    if context.workbook:
        context.notes += _sheet_error_notes(context.plan, record, cells)
    read = _record_read(context, record, line, cells)
    if length < width and not context.workbook and not isinstance(read, Rejection):
        context.short.setdefault(length, []).append(line)
    written = read.email if isinstance(read, Rejection) else read.email.display
    _notes_name(context.notes[first_note:], record, written)
    return read


def _notes_name(notes: list[dict[str, Any]], record: int, written: str) -> None:
    # Every note about the record names its address as the file wrote it, as its
    # refused fields do: the report is read to fix the file, found by address.
    for note in notes:
        if note.get("record") == record:
            note.setdefault("email", report_email(written))


def _short_note(plan: ColumnPlan, length: int, lines: list[int]) -> dict[str, Any]:
    # Usually rows cut short by hand, or by a tool that leaves out trailing blanks:
    # their cells are where the header says, and the missing ones are read as empty.
    # One note for each count of cells: a file may be short on every row.
    width = len(plan.names)
    missing = width - length
    first = plan.names[length]
    which = (
        f"the last one, {first}, was"
        if missing == 1
        else f"the last {missing}, from {first} on, were"
    )
    count = len(lines)
    records = "1 record has" if count == 1 else f"{count:,} records have"
    cells = "1 cell" if length == 1 else f"{length} cells"
    return {
        "kind": "short_record",
        "lines": lines[:LINES_SHOWN],
        "count": count,
        "missing": missing,
        "message": (
            f"{records} {cells} where the header has {width} "
            f"({_numbers_said('line', lines)}): {which} read as empty; the rest of "
            "each record was imported."
        ),
    }


def _numbers_said(word: str, numbers: list[int]) -> str:
    """Name the first LINES_SHOWN lines or records: 'lines 3, 5 and more'."""
    shown = ", ".join(str(number) for number in numbers[:LINES_SHOWN])
    more = " and more" if len(numbers) > LINES_SHOWN else ""
    return f"{word}{'s' if len(numbers) > 1 else ''} {shown}{more}"


def _changed_unread_note(plan: ColumnPlan, records: list[int]) -> dict[str, Any]:
    # Said once for the file: a date format not chosen makes every cell so.
    column = plan.names[plan.changed_at] if plan.changed_at is not None else ""
    return {
        "kind": "changed_at_unread",
        "column": column,
        "records": records[:LINES_SHOWN],
        "count": len(records),
        "message": (
            f"{column} is read as when each row last changed, but in "
            f"{_numbers_said('record', records)} it is no time in the file's date "
            "format: where such a row and another are one address, it counts as "
            "the older, and a consent it states is dated by the import. Choose the "
            "date format the file writes before importing such a file."
        ),
    }


def _extra_empty_note(width: int, lines: list[int]) -> dict[str, Any]:
    # Said once for the file: a file may end every row with a delimiter.
    count = len(lines)
    records = "1 record has" if count == 1 else f"{count:,} records have"
    return {
        "kind": "extra_cells_empty",
        "lines": lines[:LINES_SHOWN],
        "count": count,
        "message": (
            f"{records} more cells than the header's {width}, all of the extra "
            f"ones empty ({_numbers_said('line', lines)}): those cells were left "
            "out."
        ),
    }


def _sheet_error_notes(
    plan: ColumnPlan, record: int, cells: list[str]
) -> list[dict[str, Any]]:
    """Say which of a record's cells hold an Excel error, read as empty."""
    return [
        {
            "kind": "sheet_error",
            "record": record,
            "column": plan.names[position],
            "message": (
                f"Record {record}: {plan.names[position]} holds {cell.held}, "
                "so it was read as empty."
            ),
        }
        for position, cell in enumerate(cells)
        if isinstance(cell, SheetError)
    ]


# Merging ---------------------------------------------------------------------------


def _merge_order(row: ContactRow) -> tuple[float, int]:
    stamp = row.changed_at.timestamp() if row.changed_at else float("-inf")
    return stamp, row.records[0]


def _rows_merge(rows: list[ContactRow]) -> ContactRow:
    """Merge one mailbox's rows: the newest non-blank value wins, tags add up."""
    merged = ContactRow([], [], rows[0].email, {}, {}, [], None, [])
    ordered = sorted(rows, key=_merge_order)
    for row in ordered:
        merged.email = row.email
        merged.changed_at = row.changed_at or merged.changed_at
        merged.fields.update(row.fields)
        merged.traits.update(row.traits)
    # The newest row says no to email: the file's older subscriptions of the
    # address are out of date, not consent. Withdrawals stand.
    declined = ordered[-1].declined

    written: list[str] = []
    dropped: list[int] = []
    for row in rows:
        merged.records.extend(row.records)
        merged.lines.extend(row.lines)
        written.extend(row.email.display for _ in row.records)
        merged.tags = tags_distinct([*merged.tags, *row.tags])
        consents = row.consents
        if declined and any(_is_subscription(c) for c in consents):
            dropped.extend(row.records)
            consents = [c for c in consents if not _is_subscription(c)]
        merged.consents.extend(c for c in consents if _is_new_fact(c, merged))
        merged.tag_problems += row.tag_problems
    merged.written = tuple(written)
    merged.declined_over = tuple(dropped)
    return merged


def _is_subscription(fact: ConsentFact) -> bool:
    return fact.status == SubscriptionStatus.SUBSCRIBED


def _is_new_fact(fact: ConsentFact, row: ContactRow) -> bool:
    """Tell whether the row does not yet state this consent (duplicates repeat it)."""
    same = (fact.status, fact.occurred_at, fact.ip_address)
    return all(same != (c.status, c.occurred_at, c.ip_address) for c in row.consents)


def _merge_note(row: ContactRow) -> dict[str, Any]:
    *others, last = [str(record) for record in row.records]
    listed = f"{', '.join(others)} and {last}"
    return {
        "kind": "merged",
        "email": row.email.key,
        "records": row.records,
        "message": (
            f"Records {listed} are one address; merged into one profile. Where they "
            "hold different values, the newest record's is kept (by its change "
            "time, else the one lower in the file); tags add up. Each record's "
            "consent is recorded in time order, and a subscription never lifts an "
            f"unsubscribe.{_declined_said(row)}"
        ),
    }


def _declined_said(row: ContactRow) -> str:
    if not row.declined_over:
        return ""
    older = _numbers_said("record", list(row.declined_over))
    return (
        " The newest says no to email: the subscription of "
        f"{older} is older, and is not recorded."
    )


def contacts_parse(
    data: bytes,
    *,
    column_map: dict[str, str] | None = None,
    date_format: str = "",
    encoding: str = "",
    now: datetime | None = None,
    decimal_comma: bool = False,
) -> ParsedContacts:
    """Read a contact file into merged rows and rejections; write nothing.

    `encoding` is a CSV file's chosen text encoding; empty, it is found.
    `decimal_comma`: its number cells are written 1.234,5.
    """
    records, encoding_notes = _records_read(data, encoding)
    header = contacts_header_cells(records)
    names = header_names(header)
    layout = layout_detect(names)
    if column_map:
        schema = _schema_for(column_map)
    else:
        # The first records are read ahead, as the mapping page reads them, so that
        # the default map is the page's.
        ahead = list(itertools.islice(records, SAMPLE_RECORDS))
        values = column_values(names, (cells for _, cells in ahead))
        records = itertools.chain(ahead, records)
        column_map, schema = _default_map(layout, names, values)
    # A map kept before traits were named in any case, or before the trait was
    # declared, is read as contact_import_map keeps one now.
    column_map = column_map_declared(column_map, schema)
    # Whether the map is the default or the marketer's, the report says which
    # columns stay out because their names are profile fields'.
    notes = encoding_notes + [
        _reserved_note(name)
        for name in layout_columns_reserved(layout, names)
        if not column_map.get(name)
    ]
    notes += _declared_twice_notes(layout, names, column_map, schema)
    cut = header_cells_cut(header)
    notes += [
        _column_name_cut_note(position, length, names[position], column_map)
        for position, length in cut
    ]
    # A column whose name was cut is noted once, above, its trait's name too.
    cut_names = {names[position] for position, _ in cut}
    notes += [
        _trait_name_cut_note(name, column_map[name])
        for name in names
        if column_map.get(name, "").startswith(TRAIT_PREFIX)
        and trait_key_cut(name)
        and name not in cut_names
    ]
    plan = column_plan_build(layout, names, column_map, schema)
    notes += _full_name_notes(plan)
    mapped = (plan.status, plan.unsubscribed, plan.subscribed)
    status_column = next((at for at in mapped if at is not None), None)
    if layout.status in WITHDRAWN_STATUSES and status_column is not None:
        # Everyone in an export of those who left has left: no column of it may
        # say otherwise, as a list never subscribes them again.
        notes.append(_status_column_unread_note(layout, plan.names[status_column]))
    elif layout.status is not None and status_column is not None:
        # The marketer's mapped status column wins over the export's own status.
        export_times = layout_time_keys(layout)
        plan.layout = layout = layout_with_status_column(layout)
        # Its word is undated: the export's times belong to the export's status,
        # mapped as the change time or not. They still order an address's rows.
        plan.changed_at_dates = plan.changed_at is None or (
            column_key(plan.names[plan.changed_at]) not in export_times
        )
        notes.append(_status_column_note(layout, plan.names[status_column]))

    if not schema and _country_may_be_trait(plan):
        # A country Bespoke cannot read is kept as a trait, which may be declared.
        schema = trait_schema_load()
    context = _RecordContext(plan, date_format, now or timezone.now(), notes, [])
    context.country_rule = _declared_rule(schema, COUNTRY_TRAIT)
    context.workbook = contacts_is_workbook(data)
    # A workbook's number cells are numbers: no way of writing them to read.
    context.decimal_comma = decimal_comma and not context.workbook
    if decimal_comma and context.workbook:
        context.notes.append(
            {
                "kind": "decimal_comma_workbook",
                "message": (
                    "The file is a workbook: its number cells are numbers, so "
                    "“decimal comma” changed nothing; a text cell holding a number "
                    "is read with a decimal point."
                ),
            }
        )
    parsed = ParsedContacts(layout.name, layout.source, 0, [], [], [], context.notes)
    first: dict[str, ContactRow] = {}
    repeated: dict[str, list[ContactRow]] = {}
    for line, cells in records:
        if not "".join(cells).strip():
            continue
        parsed.records += 1
        outcome = _record_read_checked(context, parsed.records, line, cells)
        if isinstance(outcome, Rejection):
            parsed.rejections.append(outcome)
        elif outcome.email.key in first:
            repeated.setdefault(outcome.email.key, []).append(outcome)
        else:
            first[outcome.email.key] = outcome

    parsed.rows = [
        _rows_merge([row, *repeated[key]]) if key in repeated else row
        for key, row in first.items()
    ]
    parsed.field_rejections = context.field_rejections
    parsed.schema = schema
    parsed.tags_column = plan.names[plan.tags] if plan.tags is not None else ""
    if context.status_blank:
        parsed.notes.append(_status_blank_note(plan, context.status_blank))
    if context.extra_empty:
        parsed.notes.append(_extra_empty_note(len(names), context.extra_empty))
    if context.changed_unread:
        parsed.notes.append(_changed_unread_note(plan, context.changed_unread))
    for length, lines in sorted(context.short.items()):
        parsed.notes.append(_short_note(plan, length, lines))
    parsed.notes += contacts_tag_notes(parsed)
    merges = [_merge_note(row) for row in parsed.rows if len(row.records) > 1]
    parsed.notes[:0] = merges
    if not parsed.records:
        parsed.notes.append(NO_RECORDS_NOTE)
    elif layout.status is None and status_column is None:
        parsed.notes.append(NO_CONSENT_COLUMN_NOTE)
    return parsed


def _records_read(
    data: bytes, encoding: str
) -> tuple[Iterator[tuple[int, list[str]]], list[dict[str, Any]]]:
    # A CSV file's records, and what the report says of how its text was read.
    if contacts_is_workbook(data):
        return contacts_records(data), []
    decoded = contacts_decoded(data, encoding)
    notes = []
    if decoded.stray_lines:
        more = len(decoded.stray_lines) > 10
        notes.append(
            {
                "kind": "encoding_mixed",
                "lines": list(decoded.stray_lines),
                "message": (
                    f"The file is UTF-8 but {_lines_hold(decoded.stray_lines)} bytes "
                    f"that are not{' (and more lines)' if more else ''}; they were "
                    "read as Windows-1252. Check those names, or choose the file's "
                    "encoding and import it again."
                ),
            }
        )
    elif not encoding and decoded.encoding == "cp1252":
        hint = encoding_hint(data)
        note = {
            "kind": "encoding_found",
            "encoding": decoded.encoding,
            "message": (
                "The file is not UTF-8; it was read as Windows-1252. If letters "
                "look wrong (£ukasz for Łukasz), import it again and choose its "
                "encoding."
            ),
        }
        if hint is not None:
            note["suggested_encoding"] = hint.encoding
            note["message"] = (
                f"The file is not UTF-8; it was read as Windows-1252, but its words "
                f"read as {hint.label}: {hint.as_read} there is {hint.as_meant}. "
                f"Import it again in that encoding ({hint.encoding})."
            )
        notes.append(note)
    return decoded_records(decoded), notes


def _lines_hold(lines: tuple[int, ...]) -> str:
    shown = ", ".join(str(line) for line in lines[:10])
    return f"line {shown} holds" if len(lines) == 1 else f"lines {shown} hold"


def _full_name_notes(plan: ColumnPlan) -> list[dict[str, Any]]:
    """Say which name columns win over the split full name, one note per column."""
    if plan.full_name is None:
        return []

    full_name = plan.names[plan.full_name]
    return [
        {
            "kind": "full_name_overridden",
            "column": plan.names[position],
            "message": (
                f"The column “{plan.names[position]}” is mapped to "
                f"{PROFILE_FIELDS[name].lower()}: where it has a value, it wins over "
                f"the split of “{full_name}”."
            ),
        }
        for position, name in plan.fields
        if name in ("first_name", "last_name")
    ]


def _status_column_note(layout: Layout, column: str) -> dict[str, Any]:
    return {
        "kind": "status_column",
        "column": column,
        "message": (
            f"This file looks like a {layout.label}, which lists one status for "
            f"every row; each row's status is read from the column {column} "
            "instead, as it was mapped."
        ),
    }


def _status_column_unread_note(layout: Layout, column: str) -> dict[str, Any]:
    return {
        "kind": "status_column",
        "column": column,
        "message": (
            f"This file looks like a {layout.label}: everyone in it has left, so "
            f"the column {column} is not read as their consent; a list never "
            "subscribes again someone who left."
        ),
    }


# The lines or records a note about many of them names, at most.
LINES_SHOWN = 10


NO_RECORDS_NOTE = {
    "kind": "no_records",
    "message": (
        "The file has column names but no rows under them, so nobody was imported. "
        "Check that it is the export you meant, with its people in it."
    ),
}
NO_CONSENT_COLUMN_NOTE = {
    "kind": "no_consent_column",
    "message": (
        "No column was read as email consent, so the people the file added have no "
        "consent on record and no campaign mails them until they subscribe; those "
        "known already keep theirs."
    ),
}


def _status_blank_note(plan: ColumnPlan, records: list[int]) -> dict[str, Any]:
    # Said once for the file, not once a row: a list may leave most cells blank.
    column = plan.names[plan.status]
    shown = ", ".join(str(record) for record in records[:LINES_SHOWN])
    more = " and more" if len(records) > LINES_SHOWN else ""
    count = f"{len(records):,} record{'s' if len(records) != 1 else ''}"
    return {
        "kind": "status_blank",
        "column": column,
        "records": records[:LINES_SHOWN],
        "count": len(records),
        "message": (
            f"{count} left the {column} cell blank (record {shown}{more}): their "
            "subscription was left as it was, and a new person among them has no "
            "consent on record, so no campaign mails them until they subscribe."
        ),
    }


def _trait_name_cut_note(column: str, target: str) -> dict[str, Any]:
    shown = column
    if len(column) > COLUMN_SHOWN_MAX_CHARS:
        shown = f"{column[:COLUMN_SHOWN_MAX_CHARS]}…"
    length = len(column)
    return {
        "kind": "trait_name_cut",
        "column": column,
        "message": (
            f"The column “{shown}” is imported as the trait "
            f"“{target.removeprefix(TRAIT_PREFIX)}”: its own name, {length} "
            f"characters, is longer than a trait's name can be "
            f"({TRAIT_NAME_MAX_CHARS})."
        ),
    }


def _column_name_cut_note(
    position: int, length: int, column: str, column_map: dict[str, str]
) -> dict[str, Any]:
    target = column_map.get(column, "")
    trait = ""
    if target.startswith(TRAIT_PREFIX):
        trait = (
            f" It is imported as the trait “{target.removeprefix(TRAIT_PREFIX)}”, "
            f"a trait's name being at most {TRAIT_NAME_MAX_CHARS} characters."
        )
    return {
        "kind": "column_name_cut",
        "column": column,
        "message": (
            f"The header of column {position + 1} is {length:,} characters long, "
            f"more than a column's name holds ({HEADER_NAME_MAX_CHARS}): the column "
            f"is named by its first {HEADER_NAME_MAX_CHARS} characters, "
            f"“{column[:COLUMN_SHOWN_MAX_CHARS]}…”.{trait}"
        ),
    }


def _reserved_note(column: str) -> dict[str, Any]:
    return {
        "kind": "reserved_column",
        "column": column,
        "message": column_reserved_sentence(column),
    }


def column_reserved_sentence(column: str) -> str:
    """Say why the default map ignores a column whose trait name is reserved."""
    why = (
        f"The column “{column}” is ignored: as a trait its name would be a profile "
        "field's, which would hide it."
    )
    if column_key(column) in FULL_NAME_COLUMNS:
        return (
            f"{why} Map it to “Full name (split into first and last)” or to a "
            "profile field to import it."
        )
    if trait_key(column, 0) in COMPUTED_FIELDS:
        key = trait_key(column, 0)
        figure = key.removesuffix("_at").replace("_", " ")
        figure += " time" if key.endswith("_at") else ""
        return (
            f"The column “{column}” is not imported: Bespoke works out the {figure} "
            "itself, from the orders and events it receives."
        )
    return f"{why} Map it to a profile field if it holds one."


def _default_map(
    layout: Layout, names: list[str], values: list[tuple[str, ...]]
) -> tuple[dict[str, str], dict[str, TraitRule]]:
    # A column named as a declared trait goes to it; only a file with trait
    # columns asks which are declared (and pure parsing stays pure).
    # By names alone: a declared trait's column ("Newsletter") is the trait's,
    # whatever its values.
    schema = _schema_for(layout_column_map(layout, names))
    if not schema and layout_columns_reserved(layout, names):
        # "Created At" is a profile field's name as a trait, but may name a
        # declared createdAt in words.
        schema = trait_schema_load()
    return layout_column_map(layout, names, declared=schema, values=values), schema


# How many records the mapping page samples, and the default map reads values from.
SAMPLE_RECORDS = 20


def column_values(
    names: list[str], records: Iterable[list[str]]
) -> list[tuple[str, ...]]:
    """Return each column's distinct non-blank values in these records, in order."""
    found: list[dict[str, None]] = [{} for _ in names]
    for cells in records:
        for position, cell in enumerate(cells[: len(names)]):
            value = cell.strip()
            if value:
                found[position][value] = None
    return [tuple(values) for values in found]


def _declared_twice_notes(
    layout: Layout,
    names: list[str],
    column_map: dict[str, str],
    schema: dict[str, TraitRule],
) -> list[dict[str, Any]]:
    """Say which columns stay out as named like a declared trait another column has."""
    if not schema:
        return []

    return [
        {
            "kind": "declared_trait_taken",
            "column": column,
            "message": column_declared_twice_sentence(column, first, trait),
        }
        for column, first, trait in layout_columns_declared_twice(
            layout, names, declared=schema
        )
        if not column_map.get(column)
        and column_map.get(first) == f"{TRAIT_PREFIX}{trait}"
    ]


def column_declared_twice_sentence(column: str, first: str, trait: str) -> str:
    """Say why the default map ignores a column named like a declared trait taken."""
    return (
        f"The column “{column}” is ignored: its name reads as the declared trait "
        f"“{trait}”, which the column “{first}” is imported as, and a trait takes "
        f"one column. To import “{column}” instead, map it to {trait} and ignore "
        f"“{first}”."
    )


def _country_may_be_trait(plan: ColumnPlan) -> bool:
    return plan.layout.country_as_trait and any(
        name == "country_code" for _, name in plan.fields
    )


def _declared_rule(schema: dict[str, TraitRule], name: str) -> TraitRule | None:
    """Return the rule of the trait declared under this name in any case, if any."""
    declared = column_map_declared({"": f"{TRAIT_PREFIX}{name}"}, schema)
    return schema.get(declared[""].removeprefix(TRAIT_PREFIX))


def _schema_for(column_map: dict[str, str]) -> dict[str, TraitRule]:
    # A file that maps no trait needs no query (and pure parsing stays pure).
    if not any(target.startswith(TRAIT_PREFIX) for target in column_map.values()):
        return {}
    return trait_schema_load()


@dataclass
class ContactsPreview:
    layout: Layout
    names: list[str]
    samples: list[str]
    column_map: dict[str, str]
    # Columns the default map ignores because their trait name is a profile field's.
    reserved: list[str] = field(default_factory=list)
    # How a CSV file's text was read (empty for a workbook), and whether that is
    # Windows-1252 read for want of any sign (a single-byte code page has none).
    encoding_label: str = ""
    encoding_guessed: bool = False
    # Whether any record follows the header (blank rows are none).
    has_records: bool = True
    # Columns the default map ignores because an earlier one has the declared
    # trait their names read as: (column, the earlier column, the trait).
    declared_twice: list[tuple[str, str, str]] = field(default_factory=list)
    # When guessed, the code page the file's words read better in, if one does.
    encoding_hint: EncodingHint | None = None
    # Each column's distinct values in the sampled records (samples holds the first).
    values: list[tuple[str, ...]] = field(default_factory=list)


def _email_key(written: str) -> str:
    try:
        return email_normalize(written).key
    except InvalidEmail:
        return ""


def contacts_erased_keys(written: Iterable[str]) -> set[str]:
    """The address keys among these that were erased on request."""
    keys = {_email_key(text) for text in written} - {""}
    hashes = {suppression_hash(key): key for key in keys}
    found = Suppression.objects.filter(
        email_hash__in=hashes, reason=SuppressionReason.ERASURE
    ).values_list("email_hash", flat=True)
    return {hashes[email_hash] for email_hash in found}


def contacts_preview(
    data: bytes,
    *,
    encoding: str = "",
    sample_records: int = SAMPLE_RECORDS,
    erased: Callable[[Iterable[str]], set[str]] | None = None,
) -> ContactsPreview:
    """Return a file's header, a sample value per column and the layout's column map.

    `erased` names which of the sampled addresses were erased on request (their
    records give no sample); contacts_erased_keys asks the database.
    """
    decoded = None if contacts_is_workbook(data) else contacts_decoded(data, encoding)
    label = decoded.label if decoded else ""
    guessed = bool(decoded) and not encoding and decoded.encoding == "cp1252"
    records = contacts_records(data, encoding)
    try:
        names = contacts_header_read(records)
        read = [cells for _, cells in itertools.islice(records, sample_records)]
    finally:
        records.close()

    layout = layout_detect(names)
    # The default map reads the same records the page samples, erased ones too: it
    # must be the map an import of the file without the page takes.
    column_map, schema = _default_map(layout, names, column_values(names, read))
    # Nothing of someone erased on request is shown, their address least of all.
    email_at = next(
        (at for at, name in enumerate(names) if column_map.get(name) == TARGET_EMAIL),
        None,
    )
    if email_at is not None and erased is not None:
        gone = erased(cells[email_at] for cells in read if len(cells) > email_at)
        read = [
            cells
            for cells in read
            if len(cells) <= email_at or _email_key(cells[email_at]) not in gone
        ]
    values = column_values(names, read)
    samples = [found[0] if found else "" for found in values]
    # Those the map leaves out: a reserved name may still name a declared trait.
    reserved = [
        name for name in layout_columns_reserved(layout, names) if not column_map[name]
    ]
    has_records = any("".join(cells).strip() for cells in read)
    declared_twice = []
    if schema:
        declared_twice = layout_columns_declared_twice(layout, names, declared=schema)
    return ContactsPreview(
        layout,
        names,
        samples,
        column_map,
        reserved,
        label,
        guessed,
        has_records,
        declared_twice,
        encoding_hint(data) if guessed else None,
        values,
    )
