"""Writing merged rows on PostgreSQL with COPY: the same result as writing.py, faster.

`contact_rows_copy` keeps the contract of `contact_rows_write` (one batch, the
caller's transaction, the same counts, notes and erased rows) and decides every row
with the same consent rules, but moves the data without model objects: existing
profiles are found by COPYing the batch's keys into a temporary table, new profiles
are COPYed (in binary) straight into their table, then their tags and consent
records under the ids the same keys find, and stored profiles are updated from a
COPYed staging table in one set-based UPDATE that fills only what the row states.
"""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from django.db import connection, transaction
from django.db.models import Model
from django.utils import timezone
from psycopg import Copy, Cursor
from psycopg.errors import UniqueViolation
from psycopg.types.json import set_json_dumps

from profiles.emails import traits_flagged
from profiles.importing.layouts import ConsentFact
from profiles.importing.mapping import ContactRow
from profiles.importing.writing import (
    BatchOutcome,
    PendingWrites,
    consents_apply,
    dated_at,
    suppressions_read,
    traits_in_parts_keep,
)
from profiles.models import (
    PERSON_FIELDS,
    ConsentRecord,
    Profile,
    ProfileTag,
    SubscriptionStatus,
)
from profiles.names import TAG_MAX_CHARS, tags_distinct
from profiles.processing_writes import json_bytes
from profiles.services import suppression_hash
from profiles.value_times import FLOOR, value_time_text

# What COPY's text format escapes; a key has none unless the address is quoted.
COPY_TEXT_SPECIAL = re.compile(r"[\\\t\r]")
TEXT_FIELDS = PERSON_FIELDS
PROFILE_COLUMNS = (
    "email",
    "email_display",
    *TEXT_FIELDS,
    "traits",
    "value_times",
    "subscription_status",
    "subscription_changed_at",
    "created_at",
    "updated_at",
)
CONSENT_COLUMNS = (
    "profile_id",
    "status",
    "source",
    "occurred_at",
    "recorded_at",
    "ip_address",
    "wording",
    "evidence",
    "address",
)
TAG_COLUMNS = ("profile_id", "name")
CHANGE_COLUMNS = (
    "profile_id",
    "email_display",
    *TEXT_FIELDS,
    "traits",
    "subscription_status",
    "subscription_changed_at",
    "status_changed",
)
# A status as plain text, whether a member or its value: psycopg dumps an Enum by name.
STATUS_VALUES = {status: status.value for status in SubscriptionStatus}

# Temporary tables live until the batch's transaction commits.
KEYS_TABLE_SQL = "CREATE TEMP TABLE bespoke_import_key (email_key text) ON COMMIT DROP"
CHANGES_TABLE_SQL = """
CREATE TEMP TABLE bespoke_import_change (
    profile_id bigint PRIMARY KEY,
    email_display text NOT NULL,
    first_name text, last_name text, phone text, city text, region text,
    country_code text, timezone text,
    traits jsonb NOT NULL,
    subscription_status text NOT NULL,
    subscription_changed_at timestamptz,
    status_changed boolean NOT NULL
) ON COMMIT DROP
"""
TAGS_TABLE_SQL = (
    "CREATE TEMP TABLE bespoke_import_tag (seq int, profile_id bigint, name text) "
    "ON COMMIT DROP"
)
COLUMN_TYPES_SQL = """
SELECT attname, atttypid FROM pg_attribute
WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped
"""
DROP_TABLES_SQL = (
    "DROP TABLE IF EXISTS bespoke_import_key, bespoke_import_change, bespoke_import_tag"
)
# Each key is looked up through the unique index on lower(email): LIMIT and OFFSET
# keep the planner from hashing the whole profile table (or every consent record)
# to join one batch.
# The batch's stored profiles, locked (in pk order, as event processing locks
# them) until the batch commits: a consent or trait written meanwhile by a webhook
# or an unsubscribe link is read before the batch decides, never overwritten by it.
# With each, which of the batch's traits it holds in parts (writing.py
# traits_in_parts_keep).
EXISTING_SQL = """
WITH found AS (
    SELECT k.email_key, p.id
    FROM bespoke_import_key k
    CROSS JOIN LATERAL (
        SELECT id FROM profiles_profile
        WHERE lower(email) = lower(k.email_key)
        LIMIT 1
    ) p
),
locked AS MATERIALIZED (
    SELECT p.id, p.email, p.subscription_status, p.subscription_changed_at,
        ARRAY(
            SELECT name FROM unnest(%s::text[]) AS name
            WHERE jsonb_typeof(p.traits -> name) = 'object'
        ) AS in_parts
    FROM profiles_profile p
    WHERE p.id IN (SELECT id FROM found)
    ORDER BY p.id
    FOR UPDATE OF p
)
SELECT f.email_key, l.id, l.email, l.subscription_status, l.subscription_changed_at,
    l.in_parts
FROM found f JOIN locked l ON l.id = f.id
"""
# Ids for the batch's new profiles, taken from the table's own sequence up front so
# that their tags and consent records need no lookup by address afterwards.
NEW_IDS_SQL = (
    "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)"
)
# The consent facts on record for the batch's stored profiles (locked above), and
# the time each one dated in the future was written with (writing.dated_at), kept
# under services.OCCURRED_AT_CLAIMED.
RECORDED_SQL = """
SELECT c.profile_id, c.status, c.occurred_at, c.claimed
FROM unnest(%s::bigint[]) AS p(id)
CROSS JOIN LATERAL (
    SELECT profile_id, status, occurred_at,
        evidence ->> 'occurred_at_claimed' AS claimed
    FROM profiles_consentrecord
    WHERE profile_id = p.id AND source = %s
    OFFSET 0
) c
"""
# A row that moves the person to another city or country without naming a region
# clears the old one, as writing.py's _profile_fill does.
_REGION = """CASE
        WHEN s.region IS NULL AND (lower(s.city) <> lower(p.city)
          OR upper(s.country_code) <> upper(p.country_code))
        THEN '' ELSE COALESCE(s.region, p.region) END"""
# What the row changes is dated by the import (profiles/value_times.py): its own
# times go, and the floor, the time of the values without one, is the import's, as
# _profile_fill and value_times.values_imported do.
_RESTATED_FIELDS = ", ".join(
    f"CASE WHEN s.{name} <> p.{name} THEN '{name}' END"
    for name in ("first_name", "last_name", "phone", "city", "country_code", "timezone")
)
_RESTATED_NAMES = f"""(array_remove(ARRAY[{_RESTATED_FIELDS},
            CASE WHEN {_REGION} <> p.region THEN 'region' END], NULL)
        || ARRAY(SELECT k.key FROM jsonb_each(s.traits) k
            WHERE p.traits -> k.key IS DISTINCT FROM k.value))"""  # noqa: S608
_RESTATED = f"""CASE WHEN cardinality({_RESTATED_NAMES}) = 0 THEN p.value_times
        ELSE (p.value_times - {_RESTATED_NAMES}) || jsonb_build_object(
            '{FLOOR}', greatest(coalesce(p.value_times ->> '{FLOOR}', ''), %(floor)s))
        END"""
# A blank never erases: a field the row does not state (NULL here) keeps its value,
# and traits are merged key by key, as _profile_fill does one profile at a time.
UPDATE_SQL = f"""
UPDATE profiles_profile p SET
    email_display = s.email_display,
    first_name = COALESCE(s.first_name, p.first_name),
    last_name = COALESCE(s.last_name, p.last_name),
    phone = COALESCE(s.phone, p.phone),
    city = COALESCE(s.city, p.city),
    region = {_REGION},
    country_code = COALESCE(s.country_code, p.country_code),
    timezone = COALESCE(s.timezone, p.timezone),
    traits = p.traits || s.traits,
    value_times = {_RESTATED},
    subscription_status = s.subscription_status,
    subscription_changed_at = s.subscription_changed_at,
    updated_at = %(now)s
FROM bespoke_import_change s
WHERE p.id = s.profile_id AND (
    s.status_changed
    OR p.email_display <> s.email_display
    OR p.first_name <> COALESCE(s.first_name, p.first_name)
    OR p.last_name <> COALESCE(s.last_name, p.last_name)
    OR p.phone <> COALESCE(s.phone, p.phone)
    OR p.city <> COALESCE(s.city, p.city)
    OR p.region <> {_REGION}
    OR p.country_code <> COALESCE(s.country_code, p.country_code)
    OR p.timezone <> COALESCE(s.timezone, p.timezone)
    OR p.traits <> p.traits || s.traits
)
"""  # noqa: S608 - only this module's constant fragment is formatted in
TAGS_MERGE_SQL = """
INSERT INTO profiles_profiletag (profile_id, name)
SELECT profile_id, name FROM bespoke_import_tag ORDER BY seq
ON CONFLICT DO NOTHING
"""
SUPPRESSIONS_SQL = """
INSERT INTO profiles_suppression (email_hash, reason, source, created_at)
SELECT email_hash, reason, %s, %s
FROM unnest(%s::text[], %s::text[]) AS s(email_hash, reason)
ON CONFLICT DO NOTHING
"""
SUPPRESSED_AT_SQL = """
UPDATE profiles_profile SET suppressed_at = %s
WHERE id = ANY(%s::bigint[]) AND suppressed_at IS NULL
"""


@dataclass(slots=True)
class ProfileState:
    """The part of a stored (or about to be stored) profile the consent rules move."""

    pk: int | None
    email: str | None
    subscription_status: str
    subscription_changed_at: datetime | None
    # The traits of the batch's rows that the profile holds in parts (an object).
    in_parts: list[str] = dataclass_field(default_factory=list)


@dataclass
class _Batch:
    """The rows of one batch sorted into what each COPY will carry."""

    source: str
    filename: str
    import_id: int | None
    now: datetime
    states: dict[str, ProfileState]
    recorded: set[tuple[int, str, datetime]]
    new_profiles: list[tuple[Any, ...]]
    new_states: list[ProfileState]
    changes: list[tuple[Any, ...]]
    new_tags: list[tuple[ProfileState, str]]
    old_tags: list[tuple[int, int, str]]
    # The value times of what the batch writes: dated by the import (value_times).
    floor: dict[str, str] = dataclass_field(default_factory=dict)


def contact_rows_copy(
    rows: list[ContactRow], *, source: str, filename: str, import_id: int | None = None
) -> BatchOutcome:
    """Write one batch of merged rows with COPY, as contact_rows_write would."""
    outcome = BatchOutcome()
    rows, listed = suppressions_read(rows, outcome)
    if not rows:
        return outcome

    connection.ensure_connection()
    with connection.connection.cursor() as cursor:
        set_json_dumps(json_bytes, context=cursor)
        batch = _batch_load(cursor, rows, source=source, filename=filename)
        batch.import_id = import_id
        pending = PendingWrites()
        for row in rows:
            _row_sort(batch, row, pending, outcome)

        _new_ids_take(cursor, batch)
        _profiles_copy(cursor, batch)
        _changes_apply(cursor, batch)
        _tags_copy(cursor, batch)
        _consents_copy(cursor, batch, pending.consents)
        _suppressions_insert(cursor, batch, pending.suppressed, listed)
        # ON COMMIT DROP does not fire when the caller's transaction is a savepoint.
        cursor.execute(DROP_TABLES_SQL)

    outcome.created = len(batch.new_profiles)
    outcome.updated = len(rows) - len(batch.new_profiles)
    return outcome


def _batch_load(
    cursor: Cursor, rows: list[ContactRow], *, source: str, filename: str
) -> _Batch:
    """Find the batch's stored profiles and the consent facts already on record."""
    cursor.execute(KEYS_TABLE_SQL)
    keys = "\n".join(row.email.key for row in rows)
    with cursor.copy("COPY bespoke_import_key (email_key) FROM STDIN") as copy:
        if COPY_TEXT_SPECIAL.search(keys) or keys.count("\n") != len(rows) - 1:
            for row in rows:
                copy.write_row((row.email.key,))
        else:
            # One line per key needs no escaping: write the block at once.
            copy.write(keys + "\n")

    traits = sorted({name for row in rows for name in row.traits})
    cursor.execute(EXISTING_SQL, [traits])
    states = {
        key: ProfileState(pk, email, status, changed_at, in_parts)
        for key, pk, email, status, changed_at, in_parts in cursor.fetchall()
    }
    recorded: set[tuple[int, str, datetime]] = set()
    if states:
        pks = [state.pk for state in states.values()]
        cursor.execute(RECORDED_SQL, [pks, source])
        recorded = {
            (profile_id, status, dated_at(occurred_at, claimed))
            for profile_id, status, occurred_at, claimed in cursor.fetchall()
        }
    now = timezone.now()
    batch = _Batch(source, filename, None, now, states, recorded, [], [], [], [], [])
    batch.floor = {FLOOR: value_time_text(now)}
    return batch


def _row_sort(
    batch: _Batch,
    row: ContactRow,
    pending: PendingWrites,
    outcome: BatchOutcome,
) -> None:
    """Decide one row's consent with the shared rules and queue what it writes."""
    email = row.email
    state = batch.states.get(email.key)
    is_new = state is None
    if state is None:
        state = ProfileState(None, email.key, SubscriptionStatus.NOT_SUBSCRIBED, None)
    elif state.in_parts:
        in_parts = [name for name in state.in_parts if name in row.traits]
        traits_in_parts_keep(row, in_parts, outcome)
    status_changed = bool(consents_apply(state, row, batch.recorded, pending, outcome))
    if is_new:
        batch.states[email.key] = state
        batch.new_states.append(state)
    _profile_queue(batch, state, row, is_new=is_new, status_changed=status_changed)
    _tags_queue(batch, state, row.tags, is_new=is_new)


def _profile_queue(
    batch: _Batch,
    state: ProfileState,
    row: ContactRow,
    *,
    is_new: bool,
    status_changed: bool,
) -> None:
    """Queue a new profile's row, or what a stored one's row states (None if blank)."""
    email = row.email
    traits = traits_flagged(row.traits, email)
    fields = row.fields
    status = STATUS_VALUES[state.subscription_status]
    if is_new:
        texts = [fields.get(name, "") for name in TEXT_FIELDS]
        batch.new_profiles.append(
            (
                email.key,
                email.display,
                *texts,
                traits,
                # Dated by the import if it gives the person anything but an address.
                batch.floor if row.traits or any(fields.values()) else {},
                status,
                state.subscription_changed_at,
            )
        )
    else:
        texts = [fields.get(name) for name in TEXT_FIELDS]
        batch.changes.append(
            (
                state.pk,
                email.display,
                *texts,
                traits,
                status,
                state.subscription_changed_at,
                status_changed,
            )
        )


def _tags_queue(
    batch: _Batch, state: ProfileState, names: list[str], *, is_new: bool
) -> None:
    if not names:
        return

    kept = names
    if max(map(len, names)) > TAG_MAX_CHARS:
        # Cut to the column's length, a cut name may repeat another: keep the first.
        kept = tags_distinct(name[:TAG_MAX_CHARS] for name in names)
    if is_new:
        batch.new_tags.extend((state, name) for name in kept)
    else:
        seq = len(batch.old_tags)
        batch.old_tags.extend(
            (seq + offset, state.pk, name) for offset, name in enumerate(kept)
        )


def _new_ids_take(cursor: Cursor, batch: _Batch) -> None:
    """Give each new profile's state the id its row will be stored under."""
    if not batch.new_states:
        return

    cursor.execute(NEW_IDS_SQL, [Profile._meta.db_table, len(batch.new_states)])
    for state, (pk,) in zip(batch.new_states, cursor.fetchall(), strict=True):
        state.pk = pk


def _profiles_copy(cursor: Cursor, batch: _Batch) -> None:
    if not batch.new_profiles:
        return

    columns, defaults = _copy_plan(Profile, ("id", *PROFILE_COLUMNS))
    stamps = (batch.now, batch.now)
    with _copy_binary(cursor, Profile._meta.db_table, columns) as copy:
        for state, values in zip(batch.new_states, batch.new_profiles, strict=True):
            copy.write_row((state.pk, *values, *stamps, *defaults))


def _changes_apply(cursor: Cursor, batch: _Batch) -> None:
    if not batch.changes:
        return

    cursor.execute(CHANGES_TABLE_SQL)
    with _copy_binary(cursor, "bespoke_import_change", CHANGE_COLUMNS) as copy:
        for values in batch.changes:
            copy.write_row(values)
    cursor.execute(UPDATE_SQL, {"now": batch.now, "floor": batch.floor[FLOOR]})


def _tags_copy(cursor: Cursor, batch: _Batch) -> None:
    new_tags = batch.new_tags
    if new_tags:
        # New profiles have no tags yet: COPY, in a savepoint. The database's
        # lower() makes two spellings one tag, and tags_distinct comes close, but
        # a collation may lower a letter otherwise: then those tags are merged too.
        try:
            with transaction.atomic():
                columns, defaults = _copy_plan(ProfileTag, TAG_COLUMNS)
                with _copy_binary(cursor, ProfileTag._meta.db_table, columns) as copy:
                    for state, name in new_tags:
                        copy.write_row((state.pk, name, *defaults))
            new_tags = []
        except UniqueViolation:
            pass
    if not (new_tags or batch.old_tags):
        return

    # A stored profile may have the tag already: merge with ON CONFLICT.
    cursor.execute(TAGS_TABLE_SQL)
    columns = ("seq", "profile_id", "name")
    with _copy_binary(cursor, "bespoke_import_tag", columns) as copy:
        for values in batch.old_tags:
            copy.write_row(values)
        first = len(batch.old_tags)
        for seq, (state, name) in enumerate(new_tags, start=first):
            copy.write_row((seq, state.pk, name))
    cursor.execute(TAGS_MERGE_SQL)


def _consents_copy(
    cursor: Cursor, batch: _Batch, consents: list[tuple[Any, ConsentFact]]
) -> None:
    if not consents:
        return

    columns, defaults = _copy_plan(ConsentRecord, CONSENT_COLUMNS)
    file_evidence = {"file": batch.filename, "import": batch.import_id}
    table = ConsentRecord._meta.db_table
    with _copy_binary(cursor, table, columns) as copy:
        for state, fact in consents:
            evidence = {**file_evidence, **fact.evidence}
            copy.write_row(
                (
                    state.pk,
                    STATUS_VALUES[fact.status],
                    batch.source,
                    fact.occurred_at,
                    batch.now,
                    _ip_address(fact.ip_address),
                    fact.wording,
                    evidence,
                    state.email or "",
                    *defaults,
                )
            )


def _suppressions_insert(
    cursor: Cursor, batch: _Batch, suppressed: list[tuple[str, str]], listed: set[str]
) -> None:
    # `listed`: the keys already on the list, whose profiles are marked too.
    if suppressed:
        hashes = [suppression_hash(key) for key, _ in suppressed]
        reasons = [str(reason) for _, reason in suppressed]
        cursor.execute(SUPPRESSIONS_SQL, [batch.source, batch.now, hashes, reasons])
    keys = {key for key, _ in suppressed} | listed
    if keys:
        ids = [batch.states[key].pk for key in keys]
        cursor.execute(SUPPRESSED_AT_SQL, [batch.now, ids])


def _copy_plan(
    model: type[Model], given: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple]:
    """Return a COPY column list (given ones first) and the defaults of the others.

    A column added to the model later gets its default here instead of breaking
    the import; one without a default has to be given by the import.
    """
    columns = list(given)
    defaults = []
    for field in model._meta.concrete_fields:
        if field.column in given or field.primary_key:
            continue
        default = field.get_default()
        if default is None and not field.null:
            raise LookupError(f"{model.__name__}.{field.name} has no default to COPY")
        columns.append(field.column)
        defaults.append(field.to_python(default))
    return tuple(columns), tuple(defaults)


@contextmanager
def _copy_binary(
    cursor: Cursor, table: str, columns: tuple[str, ...]
) -> Iterator[Copy]:
    """Open a binary COPY into the table's columns, typed as the table declares them."""
    # Binary rows cost the server no text parsing: half the time of text COPY.
    cursor.execute(COLUMN_TYPES_SQL, [table])
    oids = dict(cursor.fetchall())
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    with cursor.copy(statement) as copy:
        copy.set_types([oids[column] for column in columns])
        yield copy


def _ip_address(text: str | None) -> IPv4Address | IPv6Address | None:
    # The binary inet dumper takes address objects; the fact holds a checked text.
    return ip_address(text) if text else None
