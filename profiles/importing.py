"""Contact files in, profiles out: Mailchimp audience exports and a generic layout.

Reading a file (`contacts_parse`) is pure: it decodes the bytes, finds the delimiter
and the layout, turns each record into a row or a rejection and merges the rows that
name the same mailbox. Importing (`contact_import_run`) writes the merged rows inside
one transaction and keeps the report on the ContactImport.

Trait values keep their type as JSON: MEMBER_RATING is an integer; LATITUDE,
LONGITUDE, GMTOFF and DSTOFF are floats (5.5, -3.5, 5.75; seven decimals fit a float
exactly enough for a map); times are ISO 8601 strings in UTC; everything else,
including every column of the generic layout that is not a profile field, is text as
written, so that a zip code like 02134 keeps its zero.

Importing the same file again changes nothing but what is newer: blanks never erase,
a consent fact already on record is not appended twice, and an export never
subscribes again someone who unsubscribed or whose address was cleaned.
"""

import csv
import io
import ipaddress
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.db import transaction
from django.utils import timezone
from django.utils.text import get_valid_filename

from profiles.emails import InvalidEmail, NormalizedEmail, email_normalize
from profiles.models import (
    ConsentRecord,
    ContactImport,
    ImportStatus,
    Profile,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from profiles.services import (
    WITHDRAWN_STATUSES,
    consent_record,
    profile_get_or_create_by_email,
    profile_tags_add,
    suppression_add,
    suppression_hash,
)

logger = logging.getLogger(__name__)

LAYOUT_MAILCHIMP_SUBSCRIBED = "mailchimp_subscribed"
LAYOUT_MAILCHIMP_UNSUBSCRIBED = "mailchimp_unsubscribed"
LAYOUT_MAILCHIMP_CLEANED = "mailchimp_cleaned"
LAYOUT_GENERIC = "generic"

SOURCE_MAILCHIMP = "import:mailchimp"
SOURCE_GENERIC = "import:file"

DELIMITERS = (",", ";", "\t")
UPLOAD_NAME_MAX_CHARS = 100

# Header names are compared by this key: case-folded, without spaces or punctuation,
# so "Email Address", "email_address" and "E-mail" all find the email column.
EMAIL_COLUMNS = {"email", "emailaddress"}
PROFILE_COLUMNS = {
    "firstname": "first_name",
    "givenname": "first_name",
    "lastname": "last_name",
    "surname": "last_name",
    "familyname": "last_name",
    "phone": "phone",
    "phonenumber": "phone",
    "mobile": "phone",
    "city": "city",
    "region": "region",
    "state": "region",
    "timezone": "timezone",
    "country": "country_code",
    "countrycode": "country_code",
    "cc": "country_code",
}
TAGS_COLUMN = "tags"
STATUS_COLUMNS = {"status", "subscriptionstatus"}

# Mailchimp's own columns: (column key, trait key, how to read the value).
MAILCHIMP_COLUMNS = {
    "memberrating": ("member_rating", "int"),
    "optintime": ("optin_at", "time"),
    "optinip": ("optin_ip", "text"),
    "confirmtime": ("confirm_at", "time"),
    "confirmip": ("confirm_ip", "text"),
    "latitude": ("latitude", "float"),
    "longitude": ("longitude", "float"),
    "gmtoff": ("gmtoff", "float"),
    "dstoff": ("dstoff", "float"),
    "lastchanged": ("mailchimp_last_changed_at", "time"),
    "leid": ("mailchimp_leid", "text"),
    "euid": ("mailchimp_euid", "text"),
    "notes": ("notes", "text"),
    "unsubtime": ("unsubscribed_at", "time"),
    "unsubcampaigntitle": ("unsubscribe_campaign_title", "text"),
    "unsubcampaignid": ("unsubscribe_campaign_id", "text"),
    "unsubreason": ("unsubscribe_reason", "text"),
    "unsubreasonother": ("unsubscribe_reason_other", "text"),
    "cleantime": ("cleaned_at", "time"),
    "cleancampaigntitle": ("clean_campaign_title", "text"),
    "cleancampaignid": ("clean_campaign_id", "text"),
}

# Per layout: the column whose time orders duplicates, and the consent it states.
MAILCHIMP_LAYOUTS = {
    LAYOUT_MAILCHIMP_SUBSCRIBED: ("lastchanged", SubscriptionStatus.SUBSCRIBED),
    LAYOUT_MAILCHIMP_UNSUBSCRIBED: ("unsubtime", SubscriptionStatus.UNSUBSCRIBED),
    LAYOUT_MAILCHIMP_CLEANED: ("cleantime", SubscriptionStatus.CLEANED),
}

# The raw columns kept as evidence with each consent record, per status.
EVIDENCE_COLUMNS = {
    SubscriptionStatus.SUBSCRIBED: [
        "OPTIN_TIME",
        "OPTIN_IP",
        "CONFIRM_TIME",
        "CONFIRM_IP",
        "LAST_CHANGED",
        "LEID",
        "EUID",
    ],
    SubscriptionStatus.UNSUBSCRIBED: [
        "UNSUB_TIME",
        "UNSUB_CAMPAIGN_TITLE",
        "UNSUB_CAMPAIGN_ID",
        "UNSUB_REASON",
        "UNSUB_REASON_OTHER",
        "OPTIN_TIME",
        "CONFIRM_TIME",
        "LEID",
        "EUID",
    ],
    SubscriptionStatus.CLEANED: [
        "CLEAN_TIME",
        "CLEAN_CAMPAIGN_TITLE",
        "CLEAN_CAMPAIGN_ID",
        "OPTIN_TIME",
        "CONFIRM_TIME",
        "LEID",
        "EUID",
    ],
}

# When the consent a record states happened: the first of these columns with a time.
CONSENT_TIME_COLUMNS = {
    SubscriptionStatus.SUBSCRIBED: ["CONFIRM_TIME", "OPTIN_TIME", "LAST_CHANGED"],
    SubscriptionStatus.UNSUBSCRIBED: ["UNSUB_TIME"],
    SubscriptionStatus.CLEANED: ["CLEAN_TIME"],
}

MAILCHIMP_WORDING = {
    SubscriptionStatus.SUBSCRIBED: (
        "Listed as a subscribed member in a Mailchimp audience export. Mailchimp "
        "recorded the opt-in; the wording of its sign-up form is not in the export."
    ),
    SubscriptionStatus.UNSUBSCRIBED: (
        "Listed as unsubscribed in a Mailchimp audience export."
    ),
    SubscriptionStatus.CLEANED: (
        "Listed as cleaned in a Mailchimp audience export: the address bounced "
        "permanently or repeatedly."
    ),
}
GENERIC_WORDING = (
    "Listed as {status} in an imported contact file, which does not say when or how."
)


class ImportFormatError(ValueError):
    """The file cannot be read as a contact list; the message says why, for people."""


@dataclass(frozen=True)
class Rejection:
    record: int
    line: int
    email: str
    reason: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "record": self.record,
            "line": self.line,
            "email": self.email,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True)
class ConsentFact:
    status: SubscriptionStatus
    occurred_at: datetime
    ip_address: str | None
    wording: str
    evidence: dict[str, Any]


@dataclass
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


@dataclass
class ParsedContacts:
    layout: str
    records: int
    rows: list[ContactRow]
    rejections: list[Rejection]
    notes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Columns:
    """Where each kind of value sits in the header."""

    names: list[str]
    email: int
    profile: dict[int, str]
    mailchimp: dict[int, tuple[str, str]]
    traits: dict[int, str]
    tags: int | None
    status: int | None
    by_key: dict[str, int]


# Reading bytes ------------------------------------------------------------------


def contacts_decode(data: bytes) -> str:
    """Return the file's text: UTF-8 (with or without BOM), UTF-16 or Windows-1252."""
    if data.startswith(b"PK\x03\x04"):
        raise ImportFormatError(
            "This is a zip archive. Unzip the Mailchimp export and import its CSV "
            "files one by one: subscribed, then unsubscribed, then cleaned."
        )

    text = _text_decode(data)
    # PostgreSQL stores no NUL character, and a text file has none.
    if "\x00" in text:
        raise ImportFormatError(
            "The file contains NUL characters, so it is not a CSV text file."
        )
    return text


def _text_decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")

    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass

    # Excel on Windows saves "CSV" in the machine's code page, most often this one.
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(
            "The file is neither UTF-8 nor Windows-1252 text; save it as CSV UTF-8."
        ) from exc


def _delimiter_sniff(text: str) -> str:
    """Return the delimiter that splits the header into the most columns."""
    header = text.splitlines()[0] if text else ""
    counts = {
        delimiter: len(next(csv.reader([header], delimiter=delimiter), []))
        for delimiter in DELIMITERS
    }
    return max(DELIMITERS, key=lambda delimiter: counts[delimiter])


def _column_key(name: str) -> str:
    return re.sub(r"[\W_]+", "", name.casefold())


def _trait_key(name: str, position: int) -> str:
    key = re.sub(r"[\W_]+", "_", name.casefold()).strip("_")
    return key or f"column_{position + 1}"


def _records(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (physical line where the record starts, cells) for each CSV record."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    next_line = 1
    try:
        for cells in reader:
            yield next_line, cells
            next_line = reader.line_num + 1
    except csv.Error as exc:
        raise ImportFormatError(
            f"The file is not valid CSV near line {reader.line_num}: {exc}."
        ) from exc


# The header ----------------------------------------------------------------------


def _layout_detect(keys: set[str]) -> str:
    if "cleantime" in keys:
        return LAYOUT_MAILCHIMP_CLEANED
    if "unsubtime" in keys:
        return LAYOUT_MAILCHIMP_UNSUBSCRIBED
    if keys & {"optintime", "lastchanged"}:
        return LAYOUT_MAILCHIMP_SUBSCRIBED
    return LAYOUT_GENERIC


def _columns_map(names: list[str], layout: str) -> _Columns:
    by_key: dict[str, int] = {}
    for position, name in enumerate(names):
        by_key.setdefault(_column_key(name), position)

    email = next((by_key[key] for key in EMAIL_COLUMNS if key in by_key), None)
    if email is None:
        raise ImportFormatError(
            "The header has no email column. Name one column 'Email Address' or "
            f"'email'; the header found was: {', '.join(names)}."
        )

    columns = _Columns(names, email, {}, {}, {}, by_key.get(TAGS_COLUMN), None, by_key)
    if layout == LAYOUT_GENERIC:
        columns.status = next((by_key[k] for k in STATUS_COLUMNS if k in by_key), None)

    claimed = {email, columns.tags, columns.status}
    for key, position in by_key.items():
        if position in claimed:
            continue
        if key in PROFILE_COLUMNS:
            columns.profile[position] = PROFILE_COLUMNS[key]
        elif key in MAILCHIMP_COLUMNS:
            columns.mailchimp[position] = MAILCHIMP_COLUMNS[key]
        else:
            columns.traits[position] = _trait_key(names[position], position)
    return columns


# Values --------------------------------------------------------------------------


def contacts_time_parse(text: str) -> datetime:
    """Read a time as written in an export; a naive one is in the import time zone."""
    parsed = datetime.fromisoformat(text.strip())
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=ZoneInfo(settings.BESPOKE_IMPORT_TIME_ZONE))
    return parsed.astimezone(UTC)


def _value_read(kind: str, text: str) -> Any:
    if kind == "int":
        return int(text)
    if kind == "float":
        number = float(text)
        # JSON has no NaN or infinity, and PostgreSQL refuses them in a jsonb value.
        if not math.isfinite(number):
            raise ValueError(text)
        return number
    if kind == "time":
        return contacts_time_parse(text).isoformat()
    return text


def _profile_value_check(name: str, value: str) -> str:
    """Return the value as the profile stores it, or raise ValueError."""
    if name == "country_code":
        if len(value) != 2 or not value.isascii() or not value.isalpha():
            raise ValueError("not a two-letter country code")
        return value.upper()

    if name == "timezone":
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("not an IANA time zone name") from exc

    limit = Profile._meta.get_field(name).max_length
    if limit is not None and len(value) > limit:
        raise ValueError(f"longer than {limit} characters")
    return value


def contacts_tags_split(cell: str) -> list[str]:
    """Split a TAGS cell like '"VIP","Expo 2024, Boston"' into its tag names."""
    names: list[str] = []
    for cells in csv.reader(io.StringIO(cell, newline=""), skipinitialspace=True):
        for name in cells:
            name = name.strip()
            if name and name not in names:
                names.append(name)
    return names


def _ip_or_none(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


# Records -------------------------------------------------------------------------


@dataclass
class _RecordContext:
    layout: str
    columns: _Columns
    now: datetime
    notes: list[dict[str, Any]]


def _ignored_note(record: int, column: str, value: str, why: str) -> dict[str, Any]:
    return {
        "kind": "ignored_value",
        "record": record,
        "column": column,
        "message": f"Record {record}: {column} {value!r} was not imported ({why}).",
    }


def _row_values(
    context: _RecordContext, record: int, cells: list[str]
) -> tuple[dict[str, str], dict[str, Any]]:
    """Return the profile fields and traits a record gives, leaving blanks out."""
    fields, traits = _profile_fields_read(context, record, cells)
    traits |= _typed_traits_read(context, record, cells)
    for position, key in context.columns.traits.items():
        if cells[position].strip():
            traits[key] = cells[position].strip()
    return fields, traits


def _profile_fields_read(
    context: _RecordContext, record: int, cells: list[str]
) -> tuple[dict[str, str], dict[str, Any]]:
    columns = context.columns
    fields: dict[str, str] = {}
    traits: dict[str, Any] = {}
    for position, name in columns.profile.items():
        value = cells[position].strip()
        if not value:
            continue
        try:
            fields[name] = _profile_value_check(name, value)
        except ValueError as exc:
            if name == "country_code" and context.layout == LAYOUT_GENERIC:
                traits["country"] = value
                continue
            context.notes.append(
                _ignored_note(record, columns.names[position], value, str(exc))
            )
    return fields, traits


def _typed_traits_read(
    context: _RecordContext, record: int, cells: list[str]
) -> dict[str, Any]:
    columns = context.columns
    traits: dict[str, Any] = {}
    for position, (key, kind) in columns.mailchimp.items():
        value = cells[position].strip()
        if not value:
            continue
        try:
            traits[key] = _value_read(kind, value)
        except ValueError:
            why = f"expected a {'time' if kind == 'time' else 'number'}"
            context.notes.append(
                _ignored_note(record, columns.names[position], value, why)
            )
    return traits


def _cell(columns: _Columns, cells: list[str], name: str) -> str:
    position = columns.by_key.get(_column_key(name))
    return cells[position].strip() if position is not None else ""


def _first_time(
    columns: _Columns, cells: list[str], names: list[str]
) -> datetime | None:
    for name in names:
        text = _cell(columns, cells, name)
        if not text:
            continue
        try:
            return contacts_time_parse(text)
        except ValueError:
            continue
    return None


def _mailchimp_consent(
    context: _RecordContext, record: int, cells: list[str]
) -> ConsentFact:
    """Return the consent fact one record of a Mailchimp export states."""
    columns = context.columns
    status = MAILCHIMP_LAYOUTS[context.layout][1]
    evidence: dict[str, Any] = {"layout": context.layout, "record": record}
    for name in EVIDENCE_COLUMNS[status]:
        if _column_key(name) in columns.by_key:
            evidence[name] = _cell(columns, cells, name)

    occurred_at = _first_time(columns, cells, CONSENT_TIME_COLUMNS[status])
    if occurred_at is None:
        # The export does not say when; the time of the import is the honest bound.
        occurred_at = context.now
        evidence["occurred_at_is_import_time"] = True

    ip_address = None
    if status == SubscriptionStatus.SUBSCRIBED:
        raw_ip = _cell(columns, cells, "CONFIRM_IP") or _cell(
            columns, cells, "OPTIN_IP"
        )
        ip_address = _ip_or_none(raw_ip) if raw_ip else None
    return ConsentFact(
        status, occurred_at, ip_address, MAILCHIMP_WORDING[status], evidence
    )


def _generic_consent(
    context: _RecordContext, record: int, status: SubscriptionStatus
) -> ConsentFact:
    evidence = {"layout": context.layout, "record": record, "status": status.value}
    wording = GENERIC_WORDING.format(status=status.label.lower())
    return ConsentFact(status, context.now, None, wording, evidence)


def _generic_status(text: str) -> SubscriptionStatus:
    wanted = _column_key(text)
    for status in SubscriptionStatus:
        if wanted in {_column_key(status.value), _column_key(status.label)}:
            return status
    if wanted in {"bounced", "hardbounce"}:
        return SubscriptionStatus.CLEANED
    raise ValueError(text)


def _changed_at(context: _RecordContext, cells: list[str]) -> datetime | None:
    if context.layout not in MAILCHIMP_LAYOUTS:
        return None

    position = context.columns.by_key.get(MAILCHIMP_LAYOUTS[context.layout][0])
    if position is None or not cells[position].strip():
        return None
    try:
        return contacts_time_parse(cells[position])
    except ValueError:
        return None


def _record_read(
    context: _RecordContext, record: int, line: int, cells: list[str]
) -> ContactRow | Rejection:
    """Turn one record into a row, or into the reason it is refused."""
    columns = context.columns
    written = cells[columns.email]
    try:
        email = email_normalize(written)
    except InvalidEmail as exc:
        message = exc.detail
        if exc.reason == "missing_email":
            message = f"The {columns.names[columns.email]} cell is empty."
        return Rejection(record, line, written.strip(), exc.reason, message)

    consents: list[ConsentFact] = []
    if context.layout in MAILCHIMP_LAYOUTS:
        consents.append(_mailchimp_consent(context, record, cells))
    elif columns.status is not None and cells[columns.status].strip():
        try:
            status = _generic_status(cells[columns.status])
        except ValueError:
            message = f"Unknown status {cells[columns.status].strip()!r}."
            return Rejection(record, line, written.strip(), "invalid_status", message)
        consents.append(_generic_consent(context, record, status))

    fields, traits = _row_values(context, record, cells)
    tags = contacts_tags_split(cells[columns.tags]) if columns.tags is not None else []
    changed_at = _changed_at(context, cells)
    return ContactRow(
        [record], [line], email, fields, traits, tags, changed_at, consents
    )


# Merging -------------------------------------------------------------------------


def _merge_order(row: ContactRow) -> tuple[float, int]:
    stamp = row.changed_at.timestamp() if row.changed_at else float("-inf")
    return stamp, row.records[0]


def _rows_merge(rows: list[ContactRow]) -> ContactRow:
    """Merge one mailbox's rows: the newest non-blank value wins, tags add up."""
    merged = ContactRow([], [], rows[0].email, {}, {}, [], None, [])
    for row in sorted(rows, key=_merge_order):
        merged.email = row.email
        merged.changed_at = row.changed_at or merged.changed_at
        merged.fields.update(row.fields)
        merged.traits.update(row.traits)

    for row in rows:
        merged.records.extend(row.records)
        merged.lines.extend(row.lines)
        merged.tags.extend(tag for tag in row.tags if tag not in merged.tags)
        merged.consents.extend(c for c in row.consents if _is_new_fact(c, merged))
    return merged


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
        "message": f"Records {listed} are one address; merged into one profile.",
    }


def contacts_parse(data: bytes, *, now: datetime | None = None) -> ParsedContacts:
    """Read a contact file into merged rows and rejections; write nothing."""
    text = contacts_decode(data)
    if not text.strip():
        raise ImportFormatError("The file is empty.")

    records = _records(text, _delimiter_sniff(text))
    _, names = next(records)
    names = [name.strip() for name in names]
    layout = _layout_detect({_column_key(name) for name in names})
    context = _RecordContext(
        layout, _columns_map(names, layout), now or timezone.now(), []
    )
    parsed = ParsedContacts(layout, 0, [], [], context.notes)

    by_key: dict[str, list[ContactRow]] = {}
    for line, cells in records:
        if not any(cell.strip() for cell in cells):
            continue
        parsed.records += 1
        outcome = _record_read_checked(context, parsed.records, line, cells)
        if isinstance(outcome, Rejection):
            parsed.rejections.append(outcome)
        else:
            by_key.setdefault(outcome.email.key, []).append(outcome)

    parsed.rows = [_rows_merge(rows) for rows in by_key.values()]
    merges = [_merge_note(row) for row in parsed.rows if len(row.records) > 1]
    parsed.notes[:0] = merges
    return parsed


def _record_read_checked(
    context: _RecordContext, record: int, line: int, cells: list[str]
) -> ContactRow | Rejection:
    """Read a record whose cell count may not match the header's."""
    width = len(context.columns.names)
    if any(cell.strip() for cell in cells[width:]):
        # Usually an unquoted comma: every value after it sits in the wrong column.
        written = cells[context.columns.email].strip()
        message = f"The record has {len(cells)} cells but the header has {width}."
        return Rejection(record, line, written, "extra_cells", message)

    padded = cells[:width] + [""] * (width - len(cells))
    return _record_read(context, record, line, padded)


# Importing -----------------------------------------------------------------------


@dataclass
class _ImportReport:
    created: int = 0
    updated: int = 0
    notes: list[dict[str, Any]] = field(default_factory=list)


def contact_import_upload_path(contact_import: ContactImport) -> Path:
    """Return where the uploaded bytes of an import wait for the worker."""
    try:
        safe_name = get_valid_filename(Path(contact_import.filename).name)
    except SuspiciousFileOperation:
        safe_name = "upload.csv"
    name = f"{contact_import.pk}-{safe_name[-UPLOAD_NAME_MAX_CHARS:]}"
    return Path(settings.VAR_DIR) / "imports" / name


def contact_import_create(*, filename: str, data: bytes) -> ContactImport:
    """Record a pending import and keep its bytes on disk until it has run."""
    name = Path(filename).name[: ContactImport._meta.get_field("filename").max_length]
    contact_import = ContactImport.objects.create(filename=name)

    path = contact_import_upload_path(contact_import)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)

    logger.info(
        "Contact import %s created",
        contact_import.pk,
        extra={"contact_import_id": contact_import.pk, "bytes": len(data)},
    )
    return contact_import


def contact_import_run(*, contact_import_id: int, data: bytes) -> ContactImport:
    """Import a pending file's rows in one transaction and keep the report.

    Runs at most once: a second call for the same import changes nothing. A file
    that cannot be read marks the import failed and writes no profile.
    """
    claimed = ContactImport.objects.filter(
        pk=contact_import_id, status=ImportStatus.PENDING
    ).update(status=ImportStatus.RUNNING)
    contact_import = ContactImport.objects.get(pk=contact_import_id)
    if not claimed:
        logger.warning("Contact import %s is not pending; skipped", contact_import_id)
        return contact_import

    try:
        with transaction.atomic():
            _contacts_import(contact_import, data)
    except ImportFormatError as exc:
        _contact_import_fail(contact_import, str(exc))
        logger.warning("Contact import %s refused: %s", contact_import_id, exc)
        return contact_import
    except Exception as exc:
        _contact_import_fail(contact_import, f"The import stopped on an error: {exc}")
        logger.exception("Contact import %s failed", contact_import_id)
        raise

    logger.info(
        "Contact import %s done",
        contact_import_id,
        extra={
            "contact_import_id": contact_import_id,
            "records": contact_import.records,
            "rejected": contact_import.rejected,
            "profiles_created": contact_import.profiles_created,
        },
    )
    return contact_import


def contact_import_run_stored(*, contact_import_id: int) -> ContactImport:
    """Run an import from the bytes kept at upload, then delete them."""
    contact_import = ContactImport.objects.get(pk=contact_import_id)
    if contact_import.status != ImportStatus.PENDING:
        logger.warning("Contact import %s is not pending; skipped", contact_import_id)
        return contact_import

    path = contact_import_upload_path(contact_import)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        _contact_import_fail(contact_import, "The uploaded file is gone; upload again.")
        logger.error("Contact import %s lost its file", contact_import_id)
        return contact_import

    try:
        return contact_import_run(contact_import_id=contact_import_id, data=data)
    finally:
        path.unlink(missing_ok=True)


def contact_import_file(*, filename: str, data: bytes) -> ContactImport:
    """Import a file now, in this process, and return the finished import."""
    contact_import = contact_import_create(filename=filename, data=data)
    return contact_import_run_stored(contact_import_id=contact_import.pk)


def _contact_import_fail(contact_import: ContactImport, error: str) -> None:
    ContactImport.objects.filter(pk=contact_import.pk).update(
        status=ImportStatus.FAILED, error=error, finished_at=timezone.now()
    )
    contact_import.refresh_from_db()


def _contacts_import(contact_import: ContactImport, data: bytes) -> None:
    """Write the file's rows and its report; the caller holds the transaction."""
    parsed = contacts_parse(data)
    rows, erased = _erased_rows_split(parsed.rows)
    rejections = sorted(parsed.rejections + erased, key=lambda r: r.record)
    source = SOURCE_GENERIC if parsed.layout == LAYOUT_GENERIC else SOURCE_MAILCHIMP

    report = _ImportReport()
    for row in rows:
        _contact_row_write(
            row, source=source, filename=contact_import.filename, report=report
        )

    _report_save(contact_import, parsed, rows, rejections, report)


def _report_save(
    contact_import: ContactImport,
    parsed: ParsedContacts,
    rows: list[ContactRow],
    rejections: list[Rejection],
    report: _ImportReport,
) -> None:
    contact_import.layout = parsed.layout
    contact_import.records = parsed.records
    contact_import.rejected = len(rejections)
    contact_import.accepted = parsed.records - len(rejections)
    contact_import.duplicates_merged = sum(len(row.records) - 1 for row in rows)
    contact_import.profiles_created = report.created
    contact_import.profiles_updated = report.updated
    contact_import.rejections = [rejection.as_dict() for rejection in rejections]
    contact_import.notes = parsed.notes + report.notes
    contact_import.status = ImportStatus.DONE
    contact_import.finished_at = timezone.now()
    contact_import.save()


def _erased_rows_split(
    rows: list[ContactRow],
) -> tuple[list[ContactRow], list[Rejection]]:
    """Set aside the rows of people erased on request: an old file must not revive them."""
    hashes = {suppression_hash(row.email.key): row for row in rows}
    erased_hashes = set(
        Suppression.objects.filter(
            email_hash__in=hashes, reason=SuppressionReason.ERASURE
        ).values_list("email_hash", flat=True)
    )
    message = "This person was erased on request; their data is not imported again."
    # The address itself is left out of the report, which would otherwise keep it.
    rejections = [
        Rejection(record, line, "", "erased", message)
        for email_hash in erased_hashes
        for record, line in zip(
            hashes[email_hash].records, hashes[email_hash].lines, strict=True
        )
    ]
    kept = [row for row in rows if suppression_hash(row.email.key) not in erased_hashes]
    return kept, rejections


def _contact_row_write(
    row: ContactRow, *, source: str, filename: str, report: _ImportReport
) -> None:
    """Upsert one merged row's profile, tags, consent and suppression."""
    profile, created = profile_get_or_create_by_email(row.email)
    if created:
        report.created += 1
    else:
        report.updated += 1

    _profile_fill(profile, row)
    profile_tags_add(profile=profile, names=row.tags)

    for fact in sorted(row.consents, key=lambda fact: fact.occurred_at):
        _consent_apply(profile, fact, source=source, filename=filename, report=report)
        if fact.status == SubscriptionStatus.CLEANED:
            suppression_add(
                email_key=row.email.key,
                reason=SuppressionReason.HARD_BOUNCE,
                source=source,
            )


def _profile_fill(profile: Profile, row: ContactRow) -> None:
    """Copy the row's values onto the profile; a blank never erases what is there."""
    changed = []
    for name, value in row.fields.items():
        if getattr(profile, name) != value:
            setattr(profile, name, value)
            changed.append(name)

    if profile.email_display != row.email.display:
        profile.email_display = row.email.display
        changed.append("email_display")

    traits = {**profile.traits, **row.traits}
    if traits != profile.traits:
        profile.traits = traits
        changed.append("traits")

    if changed:
        profile.save(update_fields=[*changed, "updated_at"])


def _consent_record(
    profile: Profile, fact: ConsentFact, *, source: str, filename: str
) -> None:
    consent_record(
        profile=profile,
        status=fact.status,
        source=source,
        occurred_at=fact.occurred_at,
        from_import=True,
        ip_address=fact.ip_address,
        wording=fact.wording,
        evidence={"file": filename, **fact.evidence},
    )


def _consent_apply(
    profile: Profile,
    fact: ConsentFact,
    *,
    source: str,
    filename: str,
    report: _ImportReport,
) -> None:
    # The same fact from the same source is already on record when a file is imported
    # again; appending it twice would only blur the history.
    already_recorded = ConsentRecord.objects.filter(
        profile=profile, status=fact.status, source=source, occurred_at=fact.occurred_at
    ).exists()
    if not already_recorded:
        _consent_record(profile, fact, source=source, filename=filename)

    kept = profile.subscription_status
    if fact.status == SubscriptionStatus.SUBSCRIBED and kept in WITHDRAWN_STATUSES:
        record = fact.evidence["record"]
        report.notes.append(
            {
                "kind": "kept_status",
                "email": profile.email,
                "record": record,
                "status": kept,
                "message": (
                    f"Record {record}: {profile.email} stays {kept}; "
                    "an import never subscribes again someone who left."
                ),
            }
        )
