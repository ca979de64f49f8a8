"""The trait schema: each custom trait's declared type and rules, applied to raw values.

Values arrive as text (CSV cells), JSON numbers and booleans (the tracking API) or
strings that hold numbers. `trait_coerce` turns a raw value into the stored, typed
value of a declared trait, or raises TraitInvalid with a reason code and a sentence.
Traits with no definition are stored as they came.
"""

import json
import math
import re
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import pycountry
import regex
from django.db import DEFAULT_DB_ALIAS
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from profiles.emails import SMTPUTF8_TRAIT
from profiles.models import Profile, TraitDefinition, TraitType
from profiles.names import CONTROL_CHARACTER

PATTERN_TIMEOUT_SECONDS = 0.05
# The longest name a trait has (TraitDefinition.name).
TRAIT_NAME_MAX_CHARS = 100
NUMBER_MAX_DIGITS = 15
# A non-zero number closer to zero than 1e-15 would not survive a float either
# (1e-5000 becomes 0.0), so it is refused rather than kept as something else.
NUMBER_MIN_EXPONENT = -15
NUMBER_SMALLEST = Decimal(1).scaleb(NUMBER_MIN_EXPONENT)
# What a number is, written out: ASCII digits only (Decimal also reads '1_0' and
# Arabic-Indic digits), an optional sign, one optional point, an optional exponent.
NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Spaces may only group thousands: "1 000 000" is a million, "1 2" is no number.
THOUSANDS_SPACED = re.compile(r"[+-]?[0-9]{1,3}(?: [0-9]{3})+(?:\.[0-9]*)?")
# How much of a raw value a message quotes: a cell can hold thousands of characters.
QUOTED_MAX_CHARS = 40
# The traits Bespoke itself sets on a profile, which no marketer declares.
BESPOKE_FLAGS = frozenset({SMTPUTF8_TRAIT})
# Names a custom trait cannot have, compared case-folded: the names an identify turns
# into profile fields (processing_identify.IDENTIFY_FIELD_TRAITS), the profile's own
# fields, what templates read from a profile besides them
# (campaigns/trait_review.PROFILE_KEYS) and Bespoke's flags. A trait of such a name
# would be shadowed by the field wherever a profile is shown or rendered.
RESERVED_TRAIT_NAMES = frozenset(
    name.casefold()
    for name in (
        {"email", "firstName", "first_name", "lastName", "last_name", "name", "phone"}
        | {field.name for field in Profile._meta.concrete_fields}
        | {"full_name", "continent", "tags"}
        | BESPOKE_FLAGS
        # Profile.value_times keeps the time of values with none of their own
        # under this name (profiles/value_times.py FLOOR).
        | {"*"}
    )
)
# Yes and no in the languages whose column names imports read too (ja, sí, sim;
# nein, não, nee) and in the rest of Europe's (tak, ano, igen, kyllä, da; nie, ne,
# nem, nej, ei, nu), and TRUE and FALSE as Excel writes them in those languages
# (WAHR, VRAI, VERO, PRAWDA, SANN, DOĞRU...): a boolean trait and a yes/no consent
# column read the same. None means yes in one language and no in another.
YES_WORDS = (
    *("yes", "true", "1", "y", "oui", "ja", "j", "sí", "si", "sì", "sim"),
    *("wahr", "vrai", "verdadero", "vero", "verdadeiro", "waar"),
    *("tak", "ano", "áno", "igen", "kyllä", "da", "evet", "jah", "taip", "jā", "já"),
    *("ναι", "да"),
    *("prawda", "pravda", "igaz", "tosi", "sant", "sand", "sann", "adevărat"),
    *("doğru", "истина"),
)
NO_WORDS = (
    *("no", "false", "0", "n", "non", "nein", "não", "nao", "nee"),
    *("falsch", "faux", "falso", "onwaar"),
    *("nie", "ne", "nem", "nej", "nei", "ei", "nu", "hayır", "nē", "όχι", "нет", "не"),
    *("fałsz", "nepravda", "hamis", "epätosi", "falskt", "falsk", "usann", "fals"),
    *("yanlış", "ложь"),
)


def yes_no_key(text: str) -> str:
    """A yes or no word as the lists above are matched: by letters, not by accents.

    Capitals drop accents (Greek ΟΧΙ is όχι) and Turkish capitals lose the dot
    (HAYIR is hayır); a word may be typed composed or decomposed (kyllä).
    """
    folded = unicodedata.normalize("NFD", text.strip().casefold().replace("ı", "i"))
    return "".join(char for char in folded if not unicodedata.combining(char))


YES_KEYS = frozenset(map(yes_no_key, YES_WORDS))
NO_KEYS = frozenset(map(yes_no_key, NO_WORDS))
TRUE_TEXT = YES_KEYS | {"on"}
FALSE_TEXT = NO_KEYS | {"off"}


class TraitInvalid(ValueError):
    """A value breaks its trait's declared type or rules."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class TraitRule:
    name: str
    type: str
    allowed_values: tuple = ()
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    pattern: str = ""


def trait_name_is_reserved(name: str) -> bool:
    """Tell whether a trait name is a profile field's, whatever its case."""
    return name.casefold() in RESERVED_TRAIT_NAMES


# The schema changes rarely; the tracking API and the templates read it at most this
# often per process.
TRAIT_SCHEMA_REUSE_SECONDS = 30
_trait_schema: dict[str, Any] = {"at": 0.0, "rules": {}}


def trait_schema_recent() -> dict[str, TraitRule]:
    """Return the declared rules as read at most TRAIT_SCHEMA_REUSE_SECONDS ago."""
    now = time.monotonic()
    if now - _trait_schema["at"] > TRAIT_SCHEMA_REUSE_SECONDS:
        _trait_schema["rules"], _trait_schema["at"] = trait_schema_load(), now
    return _trait_schema["rules"]


def trait_rule_find(schema: dict[str, TraitRule], name: str) -> TraitRule | None:
    """Return the declared rule of the trait `name`, named in any case, or None.

    "LOYALTYTIER" is the declared loyaltyTier: stored as a trait of its own, its
    values would bypass the rule, and segments and templates reading loyaltyTier
    would never see them. The Traits page refuses two names that differ only in case.
    """
    rule = schema.get(name)
    if rule is not None or not schema:
        return rule
    read, rules = _rules_caseless["last"]
    if read is not schema:
        names = names_by_caseless(schema)
        read, rules = schema, {key: schema[name] for key, name in names.items()}
        # One assignment: a thread reading meanwhile sees one schema's pair or the other.
        _rules_caseless["last"] = (read, rules)
    return rules.get(value_caseless(name))


def trait_sent_twice(name: str, declared: str) -> TraitInvalid:
    """The reason a trait named as a declared one in another case is left out.

    The call sends the declared spelling too, and that value is the one kept.
    """
    return TraitInvalid(
        "sent_twice",
        f"{name}: the declared trait {declared}, which this call also sends as "
        f"{declared}; that value is kept",
    )


def names_by_caseless(names: Iterable[str]) -> dict[str, str]:
    """Return each trait name by its caseless form; of two alike, the first in order."""
    found: dict[str, str] = {}
    for name in sorted(names):
        found.setdefault(value_caseless(name), name)
    return found


# The last schema trait_rule_find read, and its rules by caseless name: a worker's run
# and the tracking API's process each keep one schema for many calls.
_rules_caseless: dict[str, tuple[Any, dict[str, TraitRule]]] = {"last": (None, {})}


def trait_schema_forget(**kwargs: Any) -> None:
    """Read the trait rules afresh at this process's next use (a rule changed).

    Connected to TraitDefinition's saves and deletes: the process that serves the
    Traits page answers under the new rule at once; others within 30 s.
    """
    _trait_schema["at"] = 0.0


def trait_schema_load(*, using: str = DEFAULT_DB_ALIAS) -> dict[str, TraitRule]:
    """Return every declared trait's rule, keyed by trait name (one query)."""
    return {d.name: trait_rule_of(d) for d in TraitDefinition.objects.using(using)}


def trait_rule_of(definition: TraitDefinition) -> TraitRule:
    """Return a definition's rule, its bounds written as people write them."""
    return TraitRule(
        name=definition.name,
        type=definition.type,
        allowed_values=tuple(definition.allowed_values or ()),
        minimum=number_plain(definition.minimum),
        maximum=number_plain(definition.maximum),
        pattern=definition.pattern,
    )


def number_plain(number: Decimal | None) -> Decimal | None:
    """Return a bound without the column's trailing zeros: 5, not 5.000000000000000."""
    return None if number is None else Decimal(format(number.normalize(), "f"))


COUNTRY_CODE = re.compile(r"[A-Za-z]{2}")


def country_code_read(text: str) -> str:
    """Return the two-letter country code a text gives, as a profile keeps it, or "".

    A two-letter code as written (only the letters A to Z: "ßa" upper-cases to
    three letters, more than the column holds); or a country's ISO 3166 name or
    three-letter code ("France", "united states", "DEU"), as Klaviyo exports and
    Segment's address.country write it.
    """
    text = text.strip()
    if COUNTRY_CODE.fullmatch(text):
        code = text.upper()
        code = COUNTRY_ALIASES.get(code.casefold(), code)
        return code if _is_country_code(code) else ""
    return _country_named(text)


# Not in ISO 3166, but written for a country and read as one: Kosovo.
USER_ASSIGNED_CODES = frozenset({"XK"})


@lru_cache(maxsize=512)
def _is_country_code(code: str) -> bool:
    # "EU", "UN" or "ZZ" are two letters but no country: no continent, no rule.
    return (
        code in USER_ASSIGNED_CODES or pycountry.countries.get(alpha_2=code) is not None
    )


# Names in everyday English that ISO 3166 words otherwise ("Russian Federation"),
# and the codes written for the United Kingdom and Greece outside ISO ("UK", "EL").
# Only names that mean one country: "Korea" alone is left unread ("Congo" is the
# Republic of the Congo's name in ISO 3166).
COUNTRY_ALIASES = {
    "uk": "GB",
    "el": "GR",
    "britain": "GB",
    "great britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "russia": "RU",
    "turkey": "TR",
    "holland": "NL",
    "the netherlands": "NL",
    "republic of ireland": "IE",
    "ivory coast": "CI",
    "macedonia": "MK",
    "palestine": "PS",
    "vatican": "VA",
    "vatican city": "VA",
    "brunei": "BN",
    "cape verde": "CV",
    "swaziland": "SZ",
    "burma": "MM",
    "east timor": "TL",
    "uae": "AE",
    "dr congo": "CD",
    "democratic republic of the congo": "CD",
    "the bahamas": "BS",
    "the gambia": "GM",
    "falkland islands": "FK",
    "st lucia": "LC",
    "curacao": "CW",
    "reunion": "RE",
    "aland islands": "AX",
    "macau": "MO",
    "micronesia": "FM",
    "kosovo": "XK",
    "u.k.": "GB",
    "the uk": "GB",
    "u.s.": "US",
    "u.s.a.": "US",
    "the us": "US",
    "the usa": "US",
    "turkiye": "TR",
    "drc": "CD",
    "st. lucia": "LC",
    "trinidad & tobago": "TT",
    "holy see": "VA",
    "cote d'ivoire": "CI",
    # Countries as their own people write them, where the English name differs.
    "deutschland": "DE",
    "österreich": "AT",
    "oesterreich": "AT",
    "schweiz": "CH",
    "suisse": "CH",
    "svizzera": "CH",
    "españa": "ES",
    "espana": "ES",
    "italia": "IT",
    "nederland": "NL",
    "belgië": "BE",
    "belgie": "BE",
    "belgique": "BE",
    "belgien": "BE",
    "luxemburg": "LU",
    "polska": "PL",
    "česko": "CZ",
    "česká republika": "CZ",
    "slovensko": "SK",
    "slovenija": "SI",
    "hrvatska": "HR",
    "magyarország": "HU",
    "românia": "RO",
    "romania": "RO",
    "българия": "BG",
    "ελλάδα": "GR",
    "ellada": "GR",
    "sverige": "SE",
    "norge": "NO",
    "danmark": "DK",
    "suomi": "FI",
    "ísland": "IS",
    "éire": "IE",
    "eire": "IE",
    "eesti": "EE",
    "latvija": "LV",
    "lietuva": "LT",
    "россия": "RU",
    "україна": "UA",
    "türkiye": "TR",
    "brasil": "BR",
    "méxico": "MX",
    "perú": "PE",
    "日本": "JP",
    "中国": "CN",
}


@lru_cache(maxsize=4096)
def _country_named(text: str) -> str:
    # Exact lookups: a misspelt name is no country. Not the ISO numbers either,
    # which a postal code mapped to the country by mistake could be.
    if not text or len(text) > COUNTRY_NAME_MAX_CHARS or text.isdigit():
        return ""
    # As word processors write it: "Côte d’Ivoire".
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    alias = COUNTRY_ALIASES.get(" ".join(text.casefold().split()))
    if alias:
        return alias
    try:
        return pycountry.countries.lookup(text).alpha_2
    except LookupError:
        return ""


COUNTRY_NAME_MAX_CHARS = 100


def trait_coerce(
    rule: TraitRule, raw: Any, *, date_format: str = "", time_zone: tzinfo = UTC
) -> Any:
    """Return the JSON-safe stored value of a raw input; raise TraitInvalid if it breaks the rule.

    Numbers are stored as JSON numbers (int when whole), dates as 'YYYY-MM-DD' and
    datetimes as ISO-8601 in UTC, a time written without an offset being in
    `time_zone` (an import's zone; UTC from the tracking API, as Segment reads it).
    Text dates are read only in the declared `date_format` (e.g. '%d/%m/%Y');
    without one, only ISO-8601 is accepted. None (JSON null) clears the trait; a
    blank text is refused, as it sets no field and no import cell either.
    """
    if raw is None:
        return None

    value = trait_convert(rule, raw, date_format=date_format, time_zone=time_zone)
    _check_rules(rule, value)
    return value


def trait_convert(
    rule: TraitRule, raw: Any, *, date_format: str = "", time_zone: tzinfo = UTC
) -> Any:
    """Return a raw value as its declared type stores it, the rule's checks aside.

    Raise TraitInvalid if it is none of that type; trait_coerce also checks the
    bounds, allowed values and pattern.
    """
    if raw is None:
        return None
    if isinstance(raw, str) and not raw.strip():
        raise TraitInvalid(
            "blank",
            f"{rule.name}: {_quoted(raw)} is blank, which is no value: send null "
            "to clear the trait",
        )

    if rule.type == TraitType.DATETIME:
        converted = _as_datetime(rule, raw, date_format, time_zone)
    else:
        converted = _CONVERTERS[rule.type](rule, raw, date_format)
    return allowed_spelling(rule, converted)


def trait_typed(rule: TraitRule, raw: Any) -> Any:
    """Return a stored value as its declared type, or None if it is none of that type.

    Unlike trait_coerce, the rule's bounds, allowed values and pattern are not
    checked: a number above the maximum is still that number. For templates, which
    compare values as they are typed.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        return trait_convert(rule, raw)
    except TraitInvalid:
        return None


def trait_value_same(stored: Any, value: Any) -> bool:
    """Tell whether two JSON values are one: true is not 1, nor "1"; 1.0 is 1."""
    numbers = [v for v in (stored, value) if isinstance(v, int | float)]
    if len(numbers) == 2 and not any(isinstance(v, bool) for v in numbers):
        return stored == value
    return type(stored) is type(value) and stored == value


def trait_untyped(rule: TraitRule, value: Any, typed: Any) -> TraitInvalid:
    """The reason a stored value counts as breaking: it is not stored as its type."""
    shown = json.dumps(typed, ensure_ascii=False)
    return TraitInvalid(
        "not_stored_typed",
        f"{rule.name}: {_quoted(value)} is stored as it was sent, not as its "
        f"declared type stores it ({shown})",
    )


def allowed_spelling(rule: TraitRule, value: Any) -> Any:
    # Segments compare text case-insensitively, so 'PRO' and 'pro' are one value to
    # a marketer: any case is accepted and the declared spelling is what is stored,
    # which keeps one spelling per value for templates and reports.
    if not isinstance(value, str) or value in rule.allowed_values:
        return value

    wanted = value_caseless(value)
    for allowed in rule.allowed_values:
        if isinstance(allowed, str) and value_caseless(allowed) == wanted:
            return allowed
    return value


def value_caseless(text: str) -> str:
    # Case folding turns a capital dotted İ into i and a combining dot, so
    # "istanbul" and "ISTANBUL" would miss "İstanbul"; composed and decomposed
    # accents are one letter too.
    return unicodedata.normalize("NFC", text).casefold().replace("i\u0307", "i")


def _as_number(rule: TraitRule, raw: Any, _: str) -> int | float:
    if isinstance(raw, bool):
        raise TraitInvalid(
            "not_a_number", f"{rule.name}: {_quoted(raw)} is a boolean, not a number"
        )
    if isinstance(raw, float) and not math.isfinite(raw):
        raise TraitInvalid(
            "not_a_number", f"{rule.name}: {_quoted(raw)} is not a finite number"
        )

    # A JSON number arrives as a float, whose last digits are binary noise more
    # often than anyone's intent (a site's 0.1 + 0.2 is 0.30000000000000004): it is
    # read to the 15 digits a float keeps for sure, as a spreadsheet shows it. A
    # number written as text keeps every digit it has, and the check below refuses
    # more than 15.
    text = f"{raw:.15g}" if isinstance(raw, float) else number_text(raw)
    if text is None:
        raise TraitInvalid(
            "not_a_number", f"{rule.name}: {_quoted(raw)} is not a number"
        )
    try:
        number = Decimal(text)
    except InvalidOperation as exc:
        # Only an exponent Decimal cannot hold gets here ('1e99999999999999999999').
        raise _out_of_range(rule, raw) from exc

    # Beyond this a number no longer survives a round trip through a float (segment
    # rules, charts, JSON readers), and 1e5000 would be a 5,001-digit integer.
    if number and number.adjusted() >= NUMBER_MAX_DIGITS:
        raise _out_of_range(rule, raw)
    if number and number.adjusted() < NUMBER_MIN_EXPONENT:
        raise TraitInvalid(
            "number_too_small",
            f"{rule.name}: {_quoted(raw)} is too small to keep (a number other "
            f"than 0 must be at least {_value_text(NUMBER_SMALLEST)} in size)",
        )
    # A float keeps 15 significant digits for sure: past them a value would be
    # stored rounded (1234567890.123456789 as 1234567890.1234567) without a word.
    digits = number_digits(text)
    if digits > NUMBER_MAX_DIGITS:
        raise TraitInvalid(
            "number_too_precise",
            f"{rule.name}: {_quoted(raw)} has {digits} significant digits, and a "
            f"number keeps at most {NUMBER_MAX_DIGITS}: it would be stored rounded. "
            "Round it, or declare the trait as text to keep every digit",
        )
    return int(number) if number == number.to_integral_value() else float(number)


def number_text(raw: Any) -> str | None:
    """Return a number's text as Decimal reads it, or None if it is written as none.

    One grammar for every path that reads a number a person wrote (imports, the
    tracking API, segment rules, trait rules): ASCII digits, a sign, one decimal
    point, an exponent, and spaces only between groups of three digits.
    """
    text = str(raw).strip()
    if " " in text:
        if not THOUSANDS_SPACED.fullmatch(text):
            return None
        text = text.replace(" ", "")
    return text if NUMBER_TEXT.fullmatch(text) else None


def number_digits(text: str) -> int:
    """Return how many significant digits a number's text (see number_text) has."""
    mantissa = text.lstrip("+-").split("e")[0].split("E")[0]
    # Zeros at either end say only where the point is (1200, 0.0012, 1.50).
    return len(mantissa.replace(".", "").strip("0"))


def number_in_range(number: Decimal) -> bool:
    """Tell whether a number is one Bespoke keeps: not too large, not too small."""
    if not number.is_finite():
        return False
    if not number:
        return True
    return NUMBER_MIN_EXPONENT <= number.adjusted() < NUMBER_MAX_DIGITS


def _out_of_range(rule: TraitRule, raw: Any) -> TraitInvalid:
    # The reason code predates negative numbers being refused with it.
    return TraitInvalid(
        "number_too_large",
        f"{rule.name}: {_quoted(raw)} is out of range (a number may have at most "
        f"{NUMBER_MAX_DIGITS} digits before the decimal point, whether positive or "
        "negative)",
    )


def _quoted(raw: Any) -> str:
    """Return a raw value quoted for a message, cut to QUOTED_MAX_CHARS characters."""
    text = raw if isinstance(raw, str) else str(raw)
    if len(text) <= QUOTED_MAX_CHARS:
        return repr(raw)
    return f"{text[:QUOTED_MAX_CHARS]!r}… ({len(text):,} characters)"


def _as_boolean(rule: TraitRule, raw: Any, _: str) -> bool:
    if isinstance(raw, bool):
        return raw
    text = yes_no_key(str(raw))
    if text in TRUE_TEXT:
        return True
    if text in FALSE_TEXT:
        return False
    raise TraitInvalid(
        "not_a_boolean", f"{rule.name}: {_quoted(raw)} is not true or false"
    )


def _as_date(rule: TraitRule, raw: Any, date_format: str) -> str:
    if isinstance(raw, str):
        yearless = _yearless_read(raw.strip(), date_format)
        if yearless is not None:
            return yearless
    return _parse_when(rule, raw, date_format, yearless=True).date().isoformat()


# A date with no year, as ISO 8601 and vCard write one: kept as such, since a
# made-up year would put a birthday in a "within the last 30 days" segment.
YEARLESS_DATE = re.compile(r"--(\d{2})-(\d{2})")
# Read with this year, so that the 29th of February is a day like any other.
_LEAP_YEAR = "2000"


def _yearless_read(text: str, date_format: str) -> str | None:
    # "--07-14" always; "07/14" only in the declared format's own order of day
    # and month ("%m/%d/%Y" reads 07/14, "%d/%m/%Y" reads 14/07), never guessed.
    if YEARLESS_DATE.fullmatch(text):
        form = "--%m-%d"
    else:
        form = _year_dropped(date_format) if date_format else ""
        if not form:
            return None
    try:
        # A calendar day, which has no time zone.
        day = datetime.strptime(f"{text} {_LEAP_YEAR}", f"{form} %Y")  # noqa: DTZ007
    except ValueError:
        return None
    return f"--{day.month:02d}-{day.day:02d}"


def _year_dropped(date_format: str) -> str:
    # "%d/%m/%Y" -> "%d/%m", "%Y-%m-%d" -> "%m-%d": the year and the separator
    # beside it go. Empty when the format has no year to drop.
    for year in ("%Y", "%y"):
        if date_format.startswith(year):
            return date_format[len(year) + 1 :]
        if date_format.endswith(year):
            return date_format[: -len(year) - 1]
    return ""


def declared_time_parse(text: str, date_format: str) -> datetime:
    """Read text in a file's declared date format, with or without a time of day."""
    for suffix in (" %H:%M:%S", " %H:%M", ""):
        try:
            # Naive: the caller puts it in its time zone.
            return datetime.strptime(text, date_format + suffix)  # noqa: DTZ007
        except ValueError:
            continue
    raise ValueError(f"{text!r} is no time in the format {date_format}")


def date_format_shown(date_format: str) -> str:
    """Return a declared format as a marketer reads it: "%d/%m/%Y" is DD/MM/YYYY."""
    shown = date_format
    for code, words in DATE_FORMAT_WORDS.items():
        shown = shown.replace(code, words)
    return shown


DATE_FORMAT_WORDS = {
    "%d": "DD",
    "%m": "MM",
    "%Y": "YYYY",
    "%y": "YY",
    "%H": "hh",
    "%M": "mm",
    "%S": "ss",
}


def _as_datetime(
    rule: TraitRule, raw: Any, date_format: str, time_zone: tzinfo = UTC
) -> str:
    when = _parse_when(rule, raw, date_format)
    if timezone.is_naive(when):
        when = when.replace(tzinfo=time_zone)
    try:
        return when.astimezone(UTC).isoformat()
    except OverflowError as exc:
        # 9999-12-31T23:59:59-01:00 is in the year 10000 in UTC.
        raise TraitInvalid(
            "out_of_range",
            f"{rule.name}: {_quoted(raw)} is outside the years 1 to 9999 in UTC",
        ) from exc


def _parse_when(
    rule: TraitRule, raw: Any, date_format: str, *, yearless: bool = False
) -> datetime:
    if isinstance(raw, datetime):
        return raw
    if isinstance(raw, date):
        return datetime(raw.year, raw.month, raw.day)  # noqa: DTZ001 - a calendar date
    text = str(raw).strip()
    try:
        if date_format:
            # Only the declared format, never guessed, with or without a time.
            return declared_time_parse(text, date_format)
        parsed = parse_datetime(text) or datetime.fromisoformat(text)
    except ValueError as exc:
        expected = date_format_shown(date_format) or "ISO 8601 (YYYY-MM-DD)"
        if date_format and rule.type == TraitType.DATETIME:
            expected += ", a time (hh:mm or hh:mm:ss) may follow"
        if yearless:
            # The date trait's other form: a day and month with no year.
            dropped = _year_dropped(date_format) if date_format else ""
            expected += (
                f" (or {date_format_shown(dropped)} without a year)"
                if dropped
                else " (or --MM-DD without a year)"
            )
        raise TraitInvalid(
            "not_a_date",
            f"{rule.name}: {_quoted(raw)} is not a date in the format {expected}",
        ) from exc
    return parsed


def trait_text_check(name: str, raw: Any) -> None:
    """Refuse a trait's text that holds a control character (not a line break).

    Such a value is a broken feed's: shown in an email's subject or body it would
    garble them (an escape sequence, text that turns around).
    """
    if not isinstance(raw, str):
        return
    found = CONTROL_CHARACTER.search(raw)
    if found:
        raise TraitInvalid(
            "control_character",
            f"{name}: it holds the control character U+{ord(found.group()):04X}, "
            "which no text Bespoke keeps holds",
        )


def _as_text(rule: TraitRule, raw: Any, _: str) -> str:
    if isinstance(raw, dict | list):
        kind = "an object" if isinstance(raw, dict) else "a list"
        raise TraitInvalid("not_text", f"{rule.name}: expected text, got {kind}")
    trait_text_check(rule.name, raw)
    # Written as JSON writes them, the way the sender wrote them: true, not True;
    # 12345, not 12345.0.
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float) and raw.is_integer() and abs(raw) < 2**53:
        return str(int(raw))
    return str(raw).strip()


_CONVERTERS = {
    TraitType.TEXT: _as_text,
    TraitType.NUMBER: _as_number,
    TraitType.BOOLEAN: _as_boolean,
    TraitType.DATE: _as_date,
    TraitType.DATETIME: _as_datetime,
}


def _check_rules(rule: TraitRule, value: Any) -> None:
    if rule.allowed_values and value not in rule.allowed_values:
        allowed = ", ".join(map(_value_text, rule.allowed_values))
        raise TraitInvalid(
            "not_allowed",
            f"{rule.name}: {_quoted(value)} is not one of the allowed values ({allowed})",
        )
    if (
        rule.minimum is not None
        and isinstance(value, int | float)
        and value < rule.minimum
    ):
        raise TraitInvalid(
            "below_minimum",
            f"{rule.name}: {_value_text(value)} is below {_value_text(rule.minimum)}",
        )
    if (
        rule.maximum is not None
        and isinstance(value, int | float)
        and value > rule.maximum
    ):
        raise TraitInvalid(
            "above_maximum",
            f"{rule.name}: {_value_text(value)} is above {_value_text(rule.maximum)}",
        )
    if rule.pattern and isinstance(value, str) and not _pattern_matches(rule, value):
        raise TraitInvalid(
            "pattern_mismatch",
            f"{rule.name}: {_quoted(value)} does not match {rule.pattern}",
        )


def _value_text(value: Any) -> str:
    """Return a value as people write it: no exponent, no trailing zeros."""
    # A rule's bounds are stored with 15 decimal places (0.000000000000000), and a float
    # may print as 1e-07.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return str(value)
    return format(Decimal(str(value)).normalize(), "f")


def _pattern_matches(rule: TraitRule, value: str) -> bool:
    # A marketer's pattern can backtrack for hours on a crafted value ('(a+)+$'),
    # and values arrive from public write keys: the match gets a time limit.
    compiled = trait_pattern_compile(rule.pattern)
    try:
        return bool(compiled.fullmatch(value, timeout=PATTERN_TIMEOUT_SECONDS))
    except TimeoutError as exc:
        raise TraitInvalid(
            "pattern_timeout",
            f"{rule.name}: checking {value[:40]!r} against {rule.pattern} took too long",
        ) from exc


# What a trait pattern's \d and \D are: the digits 0 to 9, as every number Bespoke
# reads is written (NUMBER_TEXT), and anything else. The regex module, as re, lets
# \d match the digits of every script, so "１２３４５" (full-width) or "١٢٣٤٥" passed
# a postcode's ^\d{5}$ and was stored as a code no system reads. \w and \s keep
# their Unicode meaning: a name or a city written with \w is "José" or "Łódź"
# (the ASCII flag would refuse them, and would stop (?i) matching "ZÜRICH" with
# "zürich"), and a no-break space pasted from a sheet is a space to its writer.
# Digits of any script remain \p{Nd} for whoever means them.
ASCII_DIGIT = r"\p{posix_digit}"
NOT_ASCII_DIGIT = r"\P{posix_digit}"
_DIGIT_CLASSES = {"d": ASCII_DIGIT, "D": NOT_ASCII_DIGIT}


@lru_cache(maxsize=256)
def trait_pattern_compile(pattern: str) -> regex.Pattern:
    r"""Compile a trait's pattern as its rule reads it: \d is a digit 0 to 9.

    Raise regex.error, placed in the pattern as written, if it is none.
    """
    regex.compile(pattern)
    return regex.compile(_digits_ascii(pattern))


def _digits_ascii(pattern: str) -> str:
    # Escapes are read in pairs, so that "\\d" (a backslash, then d) stays as it is;
    # \p{posix_digit} reads alike inside a set ([\d-]) and outside one.
    parts, at = [], 0
    while at < len(pattern):
        if pattern[at] == "\\" and at + 1 < len(pattern):
            escape = pattern[at + 1]
            parts.append(_DIGIT_CLASSES.get(escape, "\\" + escape))
            at += 2
            continue
        parts.append(pattern[at])
        at += 1
    return "".join(parts)
