"""Tracking API ingestion: read, validate and durably store Segment-spec events.

Nothing here acts on an event; it only decides whether each item is well formed,
stores the ones that are (once per messageId) and records why the others were
refused. Processing happens afterwards, in profiles.processing.
"""

import functools
import hmac
import json
import logging
import math
import operator
import re
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import IO, Any

import orjson
from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from psycopg.errors import DeadlockDetected, UniqueViolation

from profiles.emails import InvalidEmail, email_normalize
from profiles.keys import (
    WRITE_KEYS_CHECKED_MAX,
    write_keys_checked,
    write_keys_forgotten,
)
from profiles.models import Event, EventMessage, EventType, RejectedEvent, WriteKey
from profiles.names import CONTROL_CHARACTER
from profiles.processing_identify import (
    IDENTIFY_FIELD_TRAITS,
    identify_fields_read,
    identify_trait_reserved,
)
from profiles.processing_traits import (
    NUMBER_BLANKS,
    NUMBER_TEXT,
    ORDER_AMOUNT_LIMIT,
    ORDER_CANCELLED,
    ORDER_COMPLETED,
    ORDER_REFUNDED,
    number_coerce,
)
from profiles.processing_writes import driver_error, json_bytes, server_bound_cursor
from profiles.services import CLOCK_SKEW_ALLOWED
from profiles.source_counts import duplicates_count
from profiles.tasks import events_process_enqueue
from profiles.traits import (
    NUMBER_SMALLEST,
    TraitInvalid,
    trait_coerce,
    trait_name_is_reserved,
    trait_rule_find,
    trait_schema_recent,
    trait_sent_twice,
    trait_text_check,
)

logger = logging.getLogger(__name__)

# Segment's limits: 32 KB for one call or one batch item, 500 KB for a batch.
MAX_CALL_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
# Items in one batch, at most. Real events take 50 bytes or more, so a batch within
# MAX_BATCH_BYTES never reaches it; 500 KB of "1," would be 250,000 items to refuse,
# each a row kept, from one small request.
MAX_BATCH_ITEMS = 10_000
# The messageIds of the events Bespoke makes itself (profiles/shopify.py,
# campaigns/tracking.py): refused from the tracking API.
RESERVED_MESSAGE_ID_PREFIXES = ("shopify:", "esp:")
# Segment asks for message ids under 100 characters; Event.message_id holds 99 + 1.
MAX_MESSAGE_ID_CHARS = 99
MAX_ID_CHARS = 255
# The first whole number a float cannot tell from its neighbour (2**53 + 1).
FLOAT_EXACT_LIMIT = 2.0**53
MAX_NAME_CHARS = 200
# A page's or screen's name is its title, which may be long.
MAX_PAGE_NAME_CHARS = 1000
READ_CHUNK_BYTES = 64 * 1024
EMAIL_CACHE_SIZE = 20_000
# A key's last_used_at is written at most this often, not on every request.
WRITE_KEY_USE_RESOLUTION_SECONDS = 60

EVENT_TYPES = frozenset(EventType.values)
# The Event columns a tracking call fills, with their PostgreSQL types.
STORED_COLUMNS = {
    "message_id": "text",
    "type": "text",
    "event": "text",
    "name": "text",
    "user_id": "text",
    "anonymous_id": "text",
    "previous_id": "text",
    "group_id": "text",
    "properties": "jsonb",
    "traits": "jsonb",
    "context": "jsonb",
    "integrations": "jsonb",
    "source": "text",
    "timestamp": "timestamptz",
    "original_timestamp": "timestamptz",
    "sent_at": "timestamptz",
    "received_at": "timestamptz",
}
OBJECT_FIELDS = ("traits", "properties", "context", "integrations")


# An item as it will be stored: Event field names and values, not yet a model.
EventDraft = dict[str, Any]


class RequestRefused(Exception):
    """The whole request is refused; `code` and `message` go back to the client."""

    def __init__(self, *, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ItemRejected(Exception):
    """One item of a request is refused; the rest of the request goes on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Rejection:
    index: int
    message_id: str
    code: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "messageId": self.message_id,
            "code": self.code,
            "message": self.message,
        }


@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    # Items stored whole, but with a part that cannot be used (an invalid email trait).
    warnings: list[Rejection] = field(default_factory=list)
    # Told to the sender only: processing records these itself when it applies them.
    notices: list[Rejection] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "success": True,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": [rejection.as_dict() for rejection in self.rejected],
        }
        if self.warnings or self.notices:
            answer["warnings"] = [
                warning.as_dict() for warning in [*self.warnings, *self.notices]
            ]
        return answer


def text_storable(text: str) -> bool:
    """Tell whether PostgreSQL can store the text: no NUL, no lone surrogate."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def write_key_source(*, key: str | None) -> str | None:
    """Return the source name a write key stands for, or None if it is not valid.

    A key made in Bespoke that this process found valid is trusted for
    BESPOKE_WRITE_KEY_CACHE_SECONDS: each request asked the database, and that
    round trip under load was some tenth of the tracking API's work (docs/
    limitations.md). A key not found is asked again each time, so a new key works
    at once.
    """
    if not key or not text_storable(key):
        return None

    for configured in settings.BESPOKE_WRITE_KEYS:
        if hmac.compare_digest(configured.encode(), key.encode()):
            return "segment:settings"

    now = timezone.now()
    write_key = _write_key_trusted(key, now)
    if write_key is None:
        forgotten = write_keys_forgotten()
        write_key = _write_key_read(key)
        if write_key is None:
            return None
        # Not when the process forgot its keys meanwhile (a revoke committed since
        # the read), nor when it trusts none.
        if settings.BESPOKE_WRITE_KEY_CACHE_SECONDS and forgotten == (
            write_keys_forgotten()
        ):
            write_keys_checked[key] = (write_key, now)
    if write_key_used(write_key=write_key, at=now):
        write_key.last_used_at = now
    return f"segment:{write_key.name}"[:100]


def _write_key_trusted(key: str, now: datetime) -> WriteKey | None:
    checked = write_keys_checked.get(key)
    if checked is None:
        return None
    write_key, at = checked
    # A clock set back makes the age negative: that is no reason to trust it.
    if (
        timedelta(0)
        <= now - at
        < timedelta(seconds=settings.BESPOKE_WRITE_KEY_CACHE_SECONDS)
    ):
        return write_key
    # Another thread of the process may have forgotten it meanwhile.
    write_keys_checked.pop(key, None)
    return None


def _write_key_read(key: str) -> WriteKey | None:
    if len(write_keys_checked) >= WRITE_KEYS_CHECKED_MAX:
        write_keys_checked.clear()
    # One plain statement, as the ORM's building of the query cost more than the
    # database's answer.
    with connection.cursor() as cursor:
        cursor.execute(_WRITE_KEY_SQL, [key])
        row = cursor.fetchone()
    if row is None:
        return None

    pk, name, last_used_at = row
    if last_used_at is not None and timezone.is_naive(last_used_at):
        # SQLite hands a plain cursor the naive UTC time Django stored.
        last_used_at = last_used_at.replace(tzinfo=UTC)
    return WriteKey(pk=pk, name=name, key=key, last_used_at=last_used_at)


_WRITE_KEY_SQL = """
SELECT id, name, last_used_at FROM profiles_writekey
WHERE key = %s AND revoked_at IS NULL
"""


def write_key_revoked(*, key: str | None) -> tuple[str, datetime] | None:
    """Return the name of a write key made in Bespoke and when it was revoked, if it was."""
    if not key or not text_storable(key):
        return None
    revoked = WriteKey.objects.filter(key=key, revoked_at__isnull=False)
    return revoked.values_list("name", "revoked_at").first()


def write_key_used(*, write_key: WriteKey, at: datetime) -> bool:
    """Record that the key authenticated a request, at most once a minute per key.

    Return whether its last use was due to be written (and so was, here or by a
    concurrent request).
    """
    stale_before = at - timedelta(seconds=WRITE_KEY_USE_RESOLUTION_SECONDS)
    if write_key.last_used_at is not None and write_key.last_used_at >= stale_before:
        return False

    # Conditional, so concurrent requests of the same minute write the row once.
    WriteKey.objects.filter(pk=write_key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale_before)
    ).update(last_used_at=at)
    return True


def body_read(*, stream: IO[bytes], content_encoding: str, limit: int) -> bytes:
    """Read a request body of at most `limit` bytes, gunzipping it if it says so.

    Decompression stops as soon as the output passes the limit, so a small gzip
    bomb cannot make the server inflate it in full.
    """
    encoding = content_encoding.strip().lower()
    if encoding not in ("", "identity", "gzip"):
        raise RequestRefused(
            status=415,
            code="unsupported_encoding",
            message="Content-Encoding must be gzip or absent.",
        )

    raw = _stream_read(stream=stream, limit=limit)
    if encoding == "gzip":
        raw = _gunzip(data=raw, limit=limit)
    return raw


def _too_large(limit: int) -> RequestRefused:
    return RequestRefused(
        status=400,
        code="request_too_large",
        message=f"The request body is over the {limit // 1024} KB limit.",
    )


def _stream_read(*, stream: IO[bytes], limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = stream.read(READ_CHUNK_BYTES)
        if not chunk:
            break

        chunks.append(chunk)
        total += len(chunk)
        # gzip may inflate a body slightly; anything this far over is refused unread.
        if total > limit + READ_CHUNK_BYTES:
            raise _too_large(limit)

    return b"".join(chunks)


def _gunzip(*, data: bytes, limit: int) -> bytes:
    # A gzip body may be several members one after another (RFC 1952): each is
    # read, so that none after the first is dropped unread.
    body = b""
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            body += inflater.decompress(data, limit + 1 - len(body))
        except zlib.error as exc:
            raise RequestRefused(
                status=400, code="invalid_gzip", message="The gzip body is corrupt."
            ) from exc

        if len(body) > limit:
            raise _too_large(limit)
        if not inflater.eof:
            raise RequestRefused(
                status=400, code="invalid_gzip", message="The gzip body is truncated."
            )
        data = inflater.unused_data
        if not data:
            return body


def payload_parse(*, body: bytes, limit: int) -> dict[str, Any]:
    """Parse a JSON object body no larger than `limit` bytes."""
    if len(body) > limit:
        raise _too_large(limit)

    try:
        payload = json_read_exact(body)
    except RecursionError as exc:
        raise RequestRefused(
            status=400,
            code="invalid_json",
            message="The body nests objects or arrays too deeply to be read (about "
            "1,000 levels); nothing in it was stored.",
        ) from exc
    except json.JSONDecodeError as exc:
        raise RequestRefused(
            status=400,
            code="invalid_json",
            message=f"The body is not valid JSON: {exc}.",
        ) from exc
    except ValueError as exc:
        # NaN and Infinity, which are not JSON, or an integer past the digits
        # Python reads.
        reason = str(exc)
        if "integer string conversion" in reason:
            reason = "an integer has more than 4,300 digits"
        raise RequestRefused(
            status=400,
            code="invalid_json",
            message=f"The body cannot be read: {reason}; nothing in it was stored.",
        ) from exc

    if not isinstance(payload, dict):
        raise RequestRefused(
            status=400, code="invalid_json", message="The body must be a JSON object."
        )
    return payload


def json_read_exact(body: bytes | str) -> Any:
    """Parse JSON, refusing what would not be stored as the number that was sent.

    NaN and Infinity raise ValueError; 1e999 reads as infinity and 1e-5000 as NaN,
    so that storing either (json.dumps with allow_nan=False) fails instead of
    keeping infinity, or 0, in the sender's place.
    """
    return json.loads(body, parse_constant=_constant_refuse, parse_float=_float_read)


class _Unstorable(float):
    """A JSON number no float holds: 1e999 (infinity) or 1e-5000 (NaN here).

    json.dumps(allow_nan=False) refuses it as it refuses any infinity or NaN, and
    orjson, which would write null for those, refuses it as a type it does not know.
    """


def _float_read(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        return _Unstorable(number)
    # 1e-5000 reads as 0.0, and would be stored as a number never sent: mark it as
    # no number, so that its item is refused as 1e999 (read as infinity) is.
    mantissa = text.lower().partition("e")[0]
    if number == 0.0 and mantissa.strip("+-0.") != "":
        return _Unstorable(math.nan)
    return number


def _constant_refuse(name: str) -> None:
    # Python reads NaN and Infinity, but they are not JSON and PostgreSQL's jsonb
    # refuses them: taking them in would fail the whole request's insert.
    raise ValueError(f"{name} is not a JSON value")


def events_ingest(
    *,
    payload: dict[str, Any],
    path_type: str | None,
    source: str,
    received_at: datetime,
) -> IngestResult:
    """Validate and store the events of one request; reject bad items one by one.

    `path_type` is the call type the URL names, or None for /v1/batch. Stored
    events are committed on return and their processing is enqueued on commit.
    Storing is idempotent on messageId.
    """
    items, shared = _items_split(payload=payload, path_type=path_type)

    result = IngestResult()
    drafts: list[EventDraft] = []
    for index, item in enumerate(items):
        try:
            drafts.append(
                _event_build(
                    item=item,
                    path_type=path_type,
                    shared=shared,
                    source=source,
                    received_at=received_at,
                )
            )
        except ItemRejected as exc:
            result.rejected.append(
                Rejection(index, _message_id_of(item), exc.code, exc.message)
            )
            continue

        # As stored: the id Bespoke gave an item sent without one, which the
        # Sources page lists, so the answer and the page can be matched.
        message_id = drafts[-1]["message_id"]
        warnings = _warnings(item, shared, path_type=path_type)
        for warning in (*warnings, _placed_at_arrival_warning(drafts[-1])):
            if warning:
                result.warnings.append(Rejection(index, message_id, *warning))
        for code, message in _trait_notices(item, path_type=path_type):
            result.notices.append(Rejection(index, message_id, code, message))

    _stored(drafts=drafts, items=items, result=result, source=source, at=received_at)
    if result.duplicates:
        # For the Sources page: a feed sending only what it sent before stores
        # nothing, and would read as gone quiet.
        sent_again = result.duplicates
        transaction.on_commit(
            lambda: duplicates_count(source=source, at=received_at, count=sent_again)
        )

    logger.info(
        "Tracking request ingested: %s stored, %s duplicates, %s rejected",
        result.stored,
        result.duplicates,
        len(result.rejected),
        extra={"source": source, "items": len(items)},
    )
    return result


# A NUL as JSON writes it: \u0000 after an even number of backslashes (after an odd
# number, it is the text "\u0000" a sender wrote).
ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
# What PostgreSQL's text cannot hold: NUL, and lone UTF-16 surrogates.
UNSTORABLE_LETTERS = re.compile("[\x00\ud800-\udfff]")
# How many times a request's writes are tried: a quick claim that meets an id
# claimed before, or two quick claims of the same ids in other orders (a deadlock),
# are done again carefully, in one order; on SQLite, another request's ids.
STORE_ATTEMPTS = 3


def _stored(
    *,
    drafts: list[EventDraft],
    items: list[Any],
    result: IngestResult,
    source: str,
    at: datetime,
) -> None:
    duplicates = result.duplicates
    # Nearly every request brings new messageIds only: they are claimed with a
    # plain insert. One already claimed (a retried request, a concurrent one) fails
    # it, and the request is done again claiming carefully, skipping those.
    careful = False
    for attempt in range(1, STORE_ATTEMPTS + 1):
        try:
            # The claimed messageIds and their events are written together, or
            # neither: an id claimed for an event that was not stored would turn
            # its retry away as a duplicate.
            with transaction.atomic():
                _events_store(drafts=drafts, result=result, careful=careful)
                _rejections_store(items=items, result=result, source=source, at=at)
                if result.stored:
                    transaction.on_commit(events_process_enqueue)
            return
        except (
            OperationalError,
            DeadlockDetected,
            IntegrityError,
            UniqueViolation,
        ) as exc:
            # The database stopped this request's writes, which are rolled back
            # whole; the other request's are committed by now. An IntegrityError
            # is another request that claimed one of the same messageIds first.
            deadlock = isinstance(driver_error(exc), DeadlockDetected)
            clash = isinstance(exc, IntegrityError | UniqueViolation)
            if not (deadlock or clash) or attempt == STORE_ATTEMPTS:
                raise
            result.stored, result.duplicates = 0, duplicates
            if not careful:
                careful = True
                continue
            logger.warning(
                "Tracking request met another's writes; its writes are redone"
            )


def _number_as_written(raw: Any) -> Decimal | None:
    # The amount as written, however large or small; None when it is no number.
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    text = str(raw).strip(NUMBER_BLANKS)
    if not re.fullmatch(NUMBER_TEXT, text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


# How a number nearer 0 than any Bespoke keeps is named, as the trait check names it.
AMOUNT_TOO_SMALL = (
    "is too small to keep (an amount other than 0 must be at least "
    f"{format(NUMBER_SMALLEST, 'f')} in size)"
)


def _order_amount_warning(
    item: dict[str, Any], *, path_type: str | None
) -> tuple[str, str] | None:
    """Name an order whose amount will not add to lifetime value as sent.

    No number: it counts as an order, unpaid. A billion or more: a feed error, left
    out of lifetime value. Below zero: it lowers lifetime value.
    """
    if (path_type or item.get("type")) != EventType.TRACK:
        return None
    properties = item.get("properties")
    if item.get("event") != ORDER_COMPLETED or not isinstance(properties, dict):
        return None

    # The amount processing reads: total, else revenue (profiles/processing_traits).
    name = "total" if properties.get("total") is not None else "revenue"
    raw = properties.get(name)
    if raw is None:
        return None
    other = _currency_other(properties)
    if other:
        return (
            "order_currency_other",
            f"{other}: the order counts as an order but adds nothing to lifetime "
            "value or the average order",
        )
    shown = repr(raw) if isinstance(raw, str) else json.dumps(raw)[:60]
    amount = number_coerce(raw)
    written = _number_as_written(raw) if amount is None else amount
    if amount is None and written is not None and abs(written) >= ORDER_AMOUNT_LIMIT:
        # A number, but longer than any Bespoke keeps (10 ** 30): too large.
        amount = ORDER_AMOUNT_LIMIT
    # Processing leaves out a billion or more either way (processing_traits).
    if amount is not None and abs(amount) >= ORDER_AMOUNT_LIMIT:
        return (
            "order_amount_too_large",
            f"properties.{name} {shown[:60]} is a billion or more (either way), "
            "taken as a feed error (cents sent as units, an id sent as the total): "
            "the order counts as an order but adds nothing to lifetime value",
        )
    if amount is not None and amount < 0:
        return (
            "order_amount_negative",
            f"properties.{name} {shown[:60]} is below zero: the order counts as an "
            "order and lowers lifetime value; a refund sent this way also counts as "
            "one more order (send it as 'Order Refunded' with the order's order_id)",
        )
    if amount is not None:
        return None
    if written is not None:
        return (
            "order_amount_too_small",
            f"properties.{name} {shown[:60]} {AMOUNT_TOO_SMALL}: the order counts "
            "as an order, but adds nothing to lifetime value",
        )
    return (
        "order_amount_unreadable",
        f"properties.{name} {shown[:60]} is not a number: the order is stored and "
        "counts as an order, but adds nothing to lifetime value; send the amount "
        "as a number such as 1234.50",
    )


def _currency_other(properties: dict[str, Any]) -> str:
    """Say how an amount's currency is not the one lifetime value is kept in, if so."""
    currency = properties.get("currency")
    ours = settings.BESPOKE_CURRENCY.upper()
    if not currency or str(currency).upper() == ours:
        return ""
    return (
        f"properties.currency {str(currency)[:20]!r} is not {ours}, the currency "
        "lifetime value is kept in (BESPOKE_CURRENCY)"
    )


ORDER_CHANGES = (ORDER_REFUNDED, ORDER_CANCELLED)


def _order_change_warning(
    item: dict[str, Any], *, path_type: str | None
) -> tuple[str, str] | None:
    """Name a refund or cancellation that will change nothing, as it was sent."""
    if (path_type or item.get("type")) != EventType.TRACK:
        return None
    event = item.get("event")
    properties = item.get("properties")
    if event not in ORDER_CHANGES or not isinstance(properties, dict):
        return None

    if not properties.get("order_id"):
        return (
            "order_id_missing",
            f"an {event!r} names the order it changes by properties.order_id; "
            "without one it changes no order",
        )
    if event != ORDER_REFUNDED:
        return None
    other = _currency_other(properties)
    if other:
        return ("refund_currency_other", f"{other}: the refund changes nothing")
    name = "total" if properties.get("total") is not None else "revenue"
    raw = properties.get(name)
    if raw is None or number_coerce(raw) is not None:
        return None
    shown = repr(raw) if isinstance(raw, str) else json.dumps(raw)[:60]
    written = _number_as_written(raw)
    if written is not None and abs(written) < NUMBER_SMALLEST:
        return (
            "refund_amount_too_small",
            f"properties.{name} {shown[:60]} {AMOUNT_TOO_SMALL}: the refund "
            "changes nothing",
        )
    return (
        "refund_amount_unreadable",
        f"properties.{name} {shown[:60]} is not a number: the refund changes "
        "nothing; send the amount refunded as a number, or none to refund the "
        "whole order",
    )


def _trait_notices(item: dict[str, Any], *, path_type: str | None) -> list[tuple]:
    """Name the identify traits that break their declared rule, for the sender."""
    traits = item.get("traits")
    if (path_type or item.get("type")) != EventType.IDENTIFY or not traits:
        return []
    if not isinstance(traits, dict):
        return []

    schema = trait_schema_recent()
    refused: list[tuple[str, Any, TraitInvalid]] = []
    identify_fields_read(traits, refused)  # a name too long for its field, say
    notices = [(f"trait_invalid:{exc.reason}", exc.message) for _, _, exc in refused]
    for name, raw in traits.items():
        if name in IDENTIFY_FIELD_TRAITS:
            # Fields, checked above.
            continue
        if trait_name_is_reserved(name):
            exc = identify_trait_reserved(name)
            notices.append((f"trait_invalid:{exc.reason}", exc.message))
            continue
        rule = trait_rule_find(schema, name)
        try:
            if rule is None:
                trait_text_check(name, raw)
            elif rule.name != name and rule.name in traits:
                raise trait_sent_twice(name, rule.name)
            else:
                trait_coerce(rule, raw)
        except TraitInvalid as exc:
            notices.append(
                (f"trait_invalid:{exc.reason}", f"{exc.message}; not stored")
            )
    return notices


def _warnings(
    item: dict[str, Any], shared: dict[str, Any], *, path_type: str | None
) -> tuple:
    """What a stored item's sender should hear: each checked only where it can apply."""
    kind = path_type or item.get("type")
    found: tuple = ()
    if kind == EventType.IDENTIFY:
        found = (_email_trait_warning(item, path_type=path_type),)
    elif kind == EventType.TRACK:
        event = item.get("event")
        if event == ORDER_COMPLETED:
            found = (_order_amount_warning(item, path_type=path_type),)
        elif event in ORDER_CHANGES:
            found = (_order_change_warning(item, path_type=path_type),)
    if "sentAt" in item or "sentAt" in shared:
        found += (_sent_at_warning(item, shared),)
    return found


def _email_trait_warning(
    item: dict[str, Any], *, path_type: str | None
) -> tuple | None:
    """Name an identify's email trait that is not an address (the event is kept)."""
    if (path_type or item.get("type")) != EventType.IDENTIFY:
        return None
    traits = item.get("traits")
    raw = traits.get("email") if isinstance(traits, dict) else None
    if raw is None:
        return None
    if not isinstance(raw, str):
        kind = _NOT_AN_ADDRESS.get(type(raw), "a number")
        return (
            "invalid_email_trait",
            f"traits.email is {kind}, not an email address; the event is stored, "
            "the address is not used",
        )
    if not raw.strip():
        return None
    return _email_warning(raw)


# What an email trait that is not text is called in its warning.
_NOT_AN_ADDRESS = {dict: "an object", list: "a list", bool: "true or false"}


@functools.lru_cache(maxsize=EMAIL_CACHE_SIZE)
def _email_warning(raw: str) -> tuple | None:
    # A person's identify calls repeat one address, and validating it is the
    # costliest check of an item: each address is checked once per process.
    try:
        email_normalize(raw)
    except InvalidEmail as exc:
        return (
            "invalid_email_trait",
            f"traits.email {raw[:100]!r} is not an email address ({exc.detail}); "
            "the event is stored, the address is not used",
        )
    return None


def _items_split(
    *, payload: dict[str, Any], path_type: str | None
) -> tuple[list[Any], dict[str, Any]]:
    if path_type is not None:
        return [payload], {}

    items = payload.get("batch")
    if not isinstance(items, list):
        raise RequestRefused(
            status=400,
            code="invalid_batch",
            message="A batch body needs a 'batch' array of events.",
        )
    if len(items) > MAX_BATCH_ITEMS:
        raise RequestRefused(
            status=400,
            code="batch_too_many_items",
            message=(
                f"The batch holds {len(items):,} items; a batch holds at most "
                f"{MAX_BATCH_ITEMS:,}. Nothing in it was stored: send it in parts."
            ),
        )

    shared = {
        "context": payload.get("context"),
        "integrations": payload.get("integrations"),
        "sentAt": payload.get("sentAt"),
    }
    for name in ("context", "integrations"):
        if shared[name] is not None and not isinstance(shared[name], dict):
            raise RequestRefused(
                status=400,
                code="invalid_batch",
                message=f"The batch '{name}' must be an object.",
            )
    return items, shared


def _message_id_of(item: Any) -> str:
    # Kept with a rejection as written, but storable: a NUL or a lone surrogate
    # (the reason it was refused, perhaps) becomes U+FFFD.
    if not isinstance(item, dict):
        return ""
    value = item.get("messageId")
    if value is None:
        return ""
    return UNSTORABLE_LETTERS.sub("\ufffd", str(value)[:255])


def _event_build(
    *,
    item: Any,
    path_type: str | None,
    shared: dict[str, Any],
    source: str,
    received_at: datetime,
) -> EventDraft:
    if not isinstance(item, dict):
        raise ItemRejected("invalid_type", "The item is not a JSON object.")

    objects = _objects_read(item=item, shared=shared)
    # Measured as it is stored: with the batch's context and integrations in it,
    # when the batch has them, and without the empty objects the sender left out.
    measured = dict(item)
    for name in ("context", "integrations"):
        if shared.get(name):
            measured[name] = objects[name]
    _size_check(measured)
    kind = path_type or item.get("type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise ItemRejected("invalid_type", f"Unknown call type {kind!r}.")

    ids = _ids_read(item=item, kind=kind)
    times = _times_read(item=item, shared=shared, received_at=received_at)
    if kind in (EventType.PAGE, EventType.SCREEN) and "category" in item:
        objects["properties"] = _category_kept(item, objects["properties"])

    return {
        "type": kind,
        "source": source,
        "received_at": received_at,
        **ids,
        **objects,
        **times,
    }


def _size_check(item: dict[str, Any]) -> None:
    # orjson writes UTF-8, so its length is the size Segment measures. It refuses
    # what it cannot write exactly (a lone surrogate, an integer past 64 bits, a
    # number past a float's range): json, slower, then says which it is.
    try:
        data = orjson.dumps(item)
    except orjson.JSONEncodeError:
        data = _encoded_strictly(item)

    if b"\\u0000" in data and ESCAPED_NUL.search(data):
        raise ItemRejected(
            "invalid_characters",
            f"{(_nul_path(item) or 'The item')[:120]} holds the NUL character (U+0000), "
            "which cannot be stored; remove it and send the item again.",
        )
    if len(data) > MAX_CALL_BYTES:
        raise ItemRejected(
            "item_too_large",
            f"The item is {len(data)} bytes, with the batch's context and "
            "integrations if it has them; the limit is 32 KB.",
        )


def _nul_path(value: Any, path: str = "") -> str:
    """Return where the first NUL is ("properties.note", "traits.tags[2]"), or ""."""
    if isinstance(value, str):
        return path if "\x00" in value else ""
    if isinstance(value, list):
        children = ((f"{path}[{index}]", child) for index, child in enumerate(value))
    elif isinstance(value, dict):
        children = (
            (f"{path}.{key}" if path else str(key), child)
            for key, child in value.items()
        )
    else:
        return ""
    for child_path, child in children:
        if "\x00" in child_path:
            return f"a key in {path}" if path else "a key of the item"
        found = _nul_path(child, child_path)
        if found:
            return found
    return ""


def _encoded_strictly(item: dict[str, Any]) -> bytes:
    # ensure_ascii=False measures UTF-8 bytes as Segment does, and makes lone
    # surrogates fail the encode: PostgreSQL could not store them.
    try:
        # allow_nan=False: a number past a float's range (1e999) was read as
        # infinity, which is not JSON and which PostgreSQL's jsonb refuses.
        text = json.dumps(
            item, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
    except ValueError as exc:
        raise ItemRejected(
            "invalid_number",
            "The item holds a number JSON cannot carry exactly, such as 1e999 or "
            "1e-5000.",
        ) from exc
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ItemRejected(
            "invalid_characters", "The item holds invalid Unicode text."
        ) from exc


def _objects_read(*, item: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    objects: dict[str, Any] = {}
    for name in OBJECT_FIELDS:
        value = item.get(name)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ItemRejected("invalid_field", f"'{name}' must be an object.")
        objects[name] = value

    # Batch-level context and integrations apply to every item; the item's keys win.
    objects["context"] = {**(shared.get("context") or {}), **objects["context"]}
    objects["integrations"] = {
        **(shared.get("integrations") or {}),
        **objects["integrations"],
    }
    return objects


def _category_kept(item: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    # A page call's top-level category (analytics clients still send it) is kept
    # among its properties, unless they name one of their own; one that is not
    # short text is left out, as it always was, and never costs the page.
    category = item.get("category")
    if not isinstance(category, str) or "category" in properties:
        return properties
    category = category.strip()
    if not category or len(category) > MAX_NAME_CHARS:
        return properties
    return {**properties, "category": category}


def _ids_read(*, item: dict[str, Any], kind: str) -> dict[str, str]:
    ids = {
        "message_id": _id_text(item, "messageId") or str(uuid.uuid4()),
        "user_id": _id_text(item, "userId"),
        "anonymous_id": _id_text(item, "anonymousId"),
        "previous_id": _id_text(item, "previousId"),
        "group_id": _id_text(item, "groupId"),
        "event": _name_text(item, "event"),
        "name": _name_text(item, "name", MAX_PAGE_NAME_CHARS),
    }

    if len(ids["message_id"]) > MAX_MESSAGE_ID_CHARS:
        raise ItemRejected(
            "message_id_too_long", "messageId must be under 100 characters."
        )
    if ids["message_id"].startswith(RESERVED_MESSAGE_ID_PREFIXES):
        # Bespoke's own events (a shop's order, an ESP's open) are keyed so: a
        # tracked one of that id would stop the real one from being stored.
        raise ItemRejected(
            "message_id_reserved",
            f"messageId {ids['message_id']!r} begins with one of "
            f"{', '.join(RESERVED_MESSAGE_ID_PREFIXES)}, which Bespoke keeps for the "
            "events it makes of Shopify and ESP webhooks.",
        )
    if not ids["user_id"] and not ids["anonymous_id"]:
        raise ItemRejected(
            "no_user_anon_id", "The item needs a userId or an anonymousId."
        )
    if kind == EventType.TRACK and not ids["event"]:
        raise ItemRejected("missing_event", "A track call needs an 'event' name.")
    if kind == EventType.ALIAS and not ids["previous_id"]:
        raise ItemRejected("missing_previous_id", "An alias call needs 'previousId'.")
    if kind == EventType.GROUP and not ids["group_id"]:
        raise ItemRejected("missing_group_id", "A group call needs 'groupId'.")
    return ids


def _id_text(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    if value is None:
        return ""
    # A string is by far the usual id: tested first, on five ids of every item.
    text = (value if type(value) is str else _id_number_text(value, key)).strip()
    if len(text) > MAX_ID_CHARS:
        raise ItemRejected("field_too_long", f"'{key}' is over {MAX_ID_CHARS} chars.")
    return text


def _id_number_text(value: Any, key: str) -> str:
    # Numeric ids are the same id as their text: userId 1006 is "1006".
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ItemRejected("invalid_field", f"'{key}' must be a string or a number.")

    # A whole number sent as a float (1.0) is the same id as 1; past 2**53 a
    # float no longer holds every whole number, so its digits may not be the id.
    if isinstance(value, float) and abs(value) >= FLOAT_EXACT_LIMIT:
        raise ItemRejected(
            "invalid_field",
            f"'{key}' is a number too large to be read exactly; send it as a string.",
        )
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _name_text(item: dict[str, Any], key: str, max_chars: int = MAX_NAME_CHARS) -> str:
    value = item.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ItemRejected("invalid_field", f"'{key}' must be a string.")
    if len(value) > max_chars:
        raise ItemRejected("field_too_long", f"'{key}' is over {max_chars} chars.")
    control = CONTROL_CHARACTER.search(value)
    if control:
        # An event name is what segments and the timeline pick by: one with an
        # invisible character would stand as another event beside the real one.
        raise ItemRejected(
            "invalid_characters",
            f"'{key}' holds the control character U+{ord(control.group()):04X}.",
        )
    return value.strip()


# Clocks drift and time zones get mislabelled; more than this is a wrong timestamp.
FUTURE_TOLERANCE = timedelta(days=1)
# timestamp and sentAt come from one clock: an event may be stamped a little after
# the batch's sentAt only by the time the client took to write it down.
SENT_AT_TOLERANCE = timedelta(minutes=1)
# Before this, a time is a default or an empty date (0001-01-01), not when
# anything was done on a site or in a shop.
EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def _times_read(
    *, item: dict[str, Any], shared: dict[str, Any], received_at: datetime
) -> dict[str, datetime | None]:
    original = _time_parse(item, "timestamp")
    sent_at = _sent_at_read(item) or _sent_at_read(shared)

    if original is not None and original <= EARLIEST_EVENT_TIME:
        raise ItemRejected(
            "invalid_timestamp",
            f"timestamp {original.isoformat()} is not after 1970-01-01T00:00:00Z "
            "(Unix time 0): a default or empty date, not the time of an event.",
        )
    # A difference, not sent_at + tolerance: that sum overflows near year 9999.
    stamped_after_sent = (
        sent_at is not None
        and original is not None
        and original - sent_at > SENT_AT_TOLERANCE
    )
    if stamped_after_sent:
        raise ItemRejected(
            "timestamp_in_future",
            f"timestamp {original.isoformat()} is after sentAt "
            f"{sent_at.isoformat()}: an event cannot happen after it was sent, so "
            "one of the client's times is wrong",
        )

    if original is None:
        timestamp = received_at
    elif sent_at is None:
        timestamp = original
        if (
            received_at + CLOCK_SKEW_ALLOWED
            < original
            <= received_at + FUTURE_TOLERANCE
        ):
            # A clock ahead, with no sentAt to correct it: as stamped, the event
            # would be 'last seen' and 'last order' until that hour came. It is
            # placed at its arrival, originalTimestamp keeps what was sent, and
            # _placed_at_arrival_warning tells the sender.
            timestamp = received_at
    else:
        # The device clock may be wrong; what it reports relative to its own
        # sentAt is right, so re-anchor that difference on our clock.
        try:
            timestamp = received_at - (sent_at - original)
        except OverflowError as exc:
            raise ItemRejected(
                "invalid_timestamp",
                "'timestamp' and 'sentAt' are too far apart to be real times.",
            ) from exc
        if timestamp < EARLIEST_EVENT_TIME:
            raise ItemRejected(
                "invalid_timestamp",
                f"sentAt {sent_at.isoformat()} is so far after timestamp "
                f"{original.isoformat()} that the event would land before 1970: "
                "one of the client's times is wrong.",
            )

    if timestamp > received_at + FUTURE_TOLERANCE:
        # An event from the future would read as 'seen today' for years and break
        # every 'in the last N days' rule for that person.
        raise ItemRejected(
            "timestamp_in_future",
            f"timestamp {timestamp.isoformat()} is more than a day after it was "
            "received",
        )
    return {
        "timestamp": timestamp,
        "original_timestamp": original,
        "sent_at": sent_at,
    }


def _placed_at_arrival_warning(draft: dict[str, Any]) -> tuple[str, str] | None:
    original = draft["original_timestamp"]
    if draft["sent_at"] is not None or original is None:
        return None
    if original == draft["timestamp"]:
        return None
    return (
        "timestamp_ahead",
        f"timestamp {original.isoformat()} is after the event arrived and no "
        "sentAt says by how much the sender's clock is ahead: the event is placed "
        "at its arrival; originalTimestamp keeps the time sent",
    )


def _sent_at_read(source: dict[str, Any]) -> datetime | None:
    # sentAt only corrects the sender's clock: one that cannot be read corrects
    # nothing, and costs no event (_sent_at_warning says so). A batch's would
    # otherwise refuse every item in it.
    return _sent_at_of(source)[0]


def _sent_at_warning(item: Any, shared: dict[str, Any]) -> tuple[str, str] | None:
    for source in (item, shared):
        why = _sent_at_of(source)[1]
        if why:
            shown = json.dumps(source["sentAt"])[:60]
            return (
                "sent_at_unreadable",
                f"sentAt {shown} cannot be read ({why}): the event keeps its own "
                "timestamp, uncorrected for the sender's clock",
            )
    return None


def _sent_at_of(source: Any) -> tuple[datetime | None, str]:
    """Return a sentAt as a time, or why it cannot be read ("" when it is absent)."""
    value = source.get("sentAt") if isinstance(source, dict) else None
    if value is None:
        return None, ""
    if not isinstance(value, str):
        return None, "'sentAt' is not an ISO-8601 date and time."
    return _sent_at_parsed(value)


@functools.lru_cache(maxsize=256)
def _sent_at_parsed(value: str) -> tuple[datetime | None, str]:
    # A batch's sentAt is every item's: read once, not once per item and again for
    # its warning.
    try:
        return _time_parse({"sentAt": value}, "sentAt"), ""
    except ItemRejected as exc:
        return None, exc.message


def _time_parse(source: dict[str, Any], key: str) -> datetime | None:
    value = source.get(key)
    if value is None:
        return None

    # RFC 3339 allows a lower-case "z" for UTC, which Python does not read.
    if isinstance(value, str) and value.endswith("z"):
        value = f"{value[:-1]}Z"
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise ItemRejected(
            "invalid_timestamp", f"'{key}' is not an ISO-8601 date and time."
        ) from exc

    # A time with no offset is read as UTC, as Segment does.
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:
        # 0001-01-01T00:00:00+01:00 would be in year 0 in UTC.
        raise ItemRejected(
            "invalid_timestamp", f"'{key}' is outside the years 1 to 9999 in UTC."
        ) from exc


def _events_store(
    *, drafts: list[EventDraft], result: IngestResult, careful: bool
) -> None:
    unique: dict[str, EventDraft] = {}
    for draft in drafts:
        if draft["message_id"] in unique:
            result.duplicates += 1
        else:
            unique[draft["message_id"]] = draft
    if not unique:
        return

    fresh = list(unique.values())
    if connection.vendor == "postgresql":
        result.stored = _events_insert(fresh, careful=careful)
    else:
        result.stored = _events_insert_with_orm(fresh)
    # Ids stored before (a retried request, or a concurrent one) are duplicates.
    result.duplicates += len(fresh) - result.stored


# The quick claim: every id is new, or the COPY fails whole. A COPY of the ids as
# text lines costs the API's Python about half of what inserting them from an array
# parameter did (psycopg dumps an array in Python), and the database about as much.
_MESSAGES_COPY_SQL = "COPY profiles_eventmessage (message_id) FROM STDIN"
# What COPY's text lines write escaped: an id may hold any text.
_COPY_TEXT_ESCAPES = str.maketrans(
    {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
)
# The careful claim skips the ids already claimed; one that another transaction is
# claiming is waited for, and skipped if it commits. Every careful request claims
# its ids in the same order: two that share some wait for one another in turn,
# never each for the other.
_MESSAGES_CLAIM_NEW_SQL = """
INSERT INTO profiles_eventmessage (message_id)
SELECT m FROM unnest(%s::text[]) AS m ORDER BY m
ON CONFLICT (message_id) DO NOTHING
RETURNING message_id
"""

_EVENTS_COPY_SQL = (
    f"COPY profiles_event ({', '.join(STORED_COLUMNS)}, processing_error) "
    "FROM STDIN (FORMAT BINARY)"
)
# jsonb's binary form is a version byte, 1, before the JSON text. Written as bytes
# already in that form, a value skips psycopg's jsonb dumper, which took a fifth of
# the API's time storing a request's events.
_EVENTS_COPY_TYPES = [
    *("bytea" if kind == "jsonb" else kind for kind in STORED_COLUMNS.values()),
    "text",
]
_JSONB_VERSION = b"\x01"
_JSONB_AT = [at for at, kind in enumerate(STORED_COLUMNS.values()) if kind == "jsonb"]
_draft_values = operator.itemgetter(*STORED_COLUMNS)


def _events_insert(fresh: list[EventDraft], *, careful: bool) -> int:
    """Store the drafts whose messageId is new; return how many were stored.

    In the caller's transaction: the ids claimed here stand only with their events.
    Unless `careful`, an id claimed before raises UniqueViolation.
    """
    ids = [draft["message_id"] for draft in fresh]
    with server_bound_cursor() as cursor:
        if not careful:
            with cursor.copy(_MESSAGES_COPY_SQL) as copy:
                copy.write(_copy_text_lines(ids))
        else:
            cursor.execute(_MESSAGES_CLAIM_NEW_SQL, [ids])
            claimed = {message_id for (message_id,) in cursor.fetchall()}
            fresh = [draft for draft in fresh if draft["message_id"] in claimed]
    if fresh:
        # Binary COPY: several times less of the database's work than an INSERT.
        _events_copy(fresh)
    return len(fresh)


def _copy_text_lines(values: list[str]) -> str:
    return "".join(f"{value.translate(_COPY_TEXT_ESCAPES)}\n" for value in values)


def _events_copy(fresh: list[EventDraft]) -> None:
    with server_bound_cursor() as cursor, cursor.copy(_EVENTS_COPY_SQL) as copy:
        copy.set_types(_EVENTS_COPY_TYPES)
        for draft in fresh:
            row = [*_draft_values(draft), ""]
            for at in _JSONB_AT:
                row[at] = _jsonb(row[at])
            copy.write_row(row)


def _jsonb(value: Any) -> bytes | None:
    return None if value is None else _JSONB_VERSION + json_bytes(value)


def _events_insert_with_orm(fresh: list[EventDraft]) -> int:
    ids = [draft["message_id"] for draft in fresh]
    known = set(
        EventMessage.objects.filter(message_id__in=ids).values_list(
            "message_id", flat=True
        )
    )
    fresh = [draft for draft in fresh if draft["message_id"] not in known]
    if not fresh:
        return 0

    # A concurrent request may claim one of them between the check above and this
    # insert: the IntegrityError rolls this request back, and _stored redoes it.
    EventMessage.objects.bulk_create(
        [EventMessage(message_id=draft["message_id"]) for draft in fresh]
    )
    Event.objects.bulk_create([Event(**draft) for draft in fresh])
    return len(fresh)


def _rejections_store(
    *, items: list[Any], result: IngestResult, source: str, at: datetime
) -> None:
    rows = [
        RejectedEvent(
            source=source,
            message_id=rejection.message_id,
            code=rejection.code,
            message=rejection.message[:500],
            payload=_storable(items[rejection.index], rejection.code),
            received_at=at,
        )
        for rejection in [*result.rejected, *result.warnings]
    ]
    RejectedEvent.objects.bulk_create(rows)


def _storable(item: Any, code: str) -> Any:
    # Text or numbers PostgreSQL refuses cannot be kept; the code says why it is
    # missing (an item that is not an object may hold them too).
    if code in ("invalid_characters", "invalid_number"):
        return None
    if isinstance(item, dict) and "writeKey" in item:
        # A single call may carry its write key in the body: the admin shows
        # the kept item, and a key is shown once, when it is made.
        item = {**item, "writeKey": "(not kept)"}
    try:
        data = orjson.dumps(item)
    except orjson.JSONEncodeError:
        return None
    return None if ESCAPED_NUL.search(data) else item
