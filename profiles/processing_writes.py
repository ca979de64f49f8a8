"""The writes of a processing chunk, one statement each for the whole chunk.

Django's bulk_update builds a CASE per field and row, which costs more Python time
than the database spends on it; on PostgreSQL these writes join the rows to arrays
instead. Other databases (the embedded SQLite) use the ORM.
"""

import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import orjson
import psycopg
from django.db import connection
from django.db.models.expressions import RawSQL
from django.utils import timezone

from profiles.models import PERSON_FIELDS, Event, Profile
from profiles.source_counts import source_hours_add

IDENTIFY_FIELDS = ("email", "email_display", *PERSON_FIELDS)

# Marks the events processed and, unless told not to, counts them for the Sources
# page by source and hour (profiles/source_counts.py) from the rows it returns: a
# second read of the chunk's events, by id, cost the workers more than the count.
_EVENTS_FINISH_SQL = """
WITH finished AS (
    UPDATE profiles_event AS e
    SET processed_at = %(now)s,
        processing_error = coalesce(f.error, ''),
        profile_id = coalesce(v.profile_id, e.profile_id)
    FROM unnest(%(ids)s::bigint[], %(attached)s::bigint[]) AS v(id, profile_id)
    LEFT JOIN unnest(%(failed)s::bigint[], %(errors)s::text[]) AS f(id, error)
        ON f.id = v.id
    WHERE e.id = v.id AND e.id = ANY(%(ids)s::bigint[])
    RETURNING e.id, e.profile_id, e.type, e.event, e.source, e.received_at,
        e.processing_error
),
counted AS (
    INSERT INTO profiles_sourcehour AS h
        (source, unit, hour, done, failed, noted, last_succeeded_at, first_id)
    SELECT d.source, 'events', date_trunc('hour', d.received_at, 'UTC'), count(*),
        count(*) FILTER (WHERE d.processing_error <> ''), 0,
        max(d.received_at) FILTER (WHERE d.processing_error = ''), min(d.id)
    FROM finished d
    WHERE %(count)s
    GROUP BY 1, 3
    -- Every writer locks the rows in this order: two never wait on each other.
    ORDER BY 1, 3
    ON CONFLICT (source, unit, hour) DO UPDATE SET
        done = h.done + excluded.done,
        failed = h.failed + excluded.failed,
        last_succeeded_at = greatest(h.last_succeeded_at, excluded.last_succeeded_at),
        first_id = least(h.first_id, excluded.first_id)
)
SELECT d.profile_id, d.type, d.event FROM finished d WHERE d.profile_id IS NOT NULL
"""

_PROFILES_WRITE_SQL = f"""
UPDATE profiles_profile AS p
SET {", ".join(f"{name} = v.{name}" for name in IDENTIFY_FIELDS)},
    traits = v.traits,
    value_times = v.value_times,
    updated_at = %s
FROM jsonb_to_recordset(%s::jsonb) AS v(
    id bigint, {", ".join(f"{name} text" for name in IDENTIFY_FIELDS)}, traits jsonb,
    value_times jsonb
)
WHERE p.id = v.id
"""  # noqa: S608 - only the field names above are formatted in

_IDENTITIES_INSERT_SQL = """
INSERT INTO profiles_profileidentity (profile_id, kind, value, created_at)
SELECT v.profile_id, v.kind, v.value, %s
FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS v(profile_id, kind, value)
ON CONFLICT (kind, value) DO NOTHING
RETURNING profile_id, kind, value
"""
_IDENTITIES_INSERT_VALUES_SQL = """
INSERT INTO profiles_profileidentity (profile_id, kind, value, created_at)
VALUES {rows}
ON CONFLICT (kind, value) DO NOTHING
RETURNING profile_id, kind, value
"""


@contextmanager
def server_bound_cursor() -> Iterator[psycopg.Cursor]:
    """Yield a cursor that sends its parameters apart from the SQL (PostgreSQL only).

    Django's cursors quote every parameter into the statement's text on the client:
    for a request's events sent as one JSON document, that quoting costs more than
    the database spends storing them. It runs in Django's current transaction.
    """
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        yield cursor


def driver_error(exc: BaseException) -> BaseException | None:
    """Return psycopg's error behind a database error: Django wraps it, raw cursors not."""
    return exc if isinstance(exc, psycopg.Error) else exc.__cause__


def json_bytes(value: Any) -> bytes:
    """Encode a jsonb value with orjson, several times faster than json.

    json takes over for what orjson refuses (an integer past 64 bits), and writes
    it as it came. Also the dumper of the binary COPYs of events and imports.
    """
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False).encode()


def json_value(text: str | None) -> Any:
    """Decode JSON text the database gave, with orjson: some times faster than json.

    orjson reads an integer past 64 bits as a float, losing its last digits: text
    with twenty digits in a row, or a minus and nineteen, goes to json, which keeps
    them.
    """
    if text is None:
        return None
    if _PAST_64_BITS.search(text):
        return json.loads(text)
    return orjson.loads(text)


_PAST_64_BITS = re.compile("[0-9]{20}|-[0-9]{19}")


def int_array(values: Iterable[int | None]) -> str:
    """Return ids as a PostgreSQL array literal, much faster than psycopg's dumper."""
    return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"


def among(values: Iterable[Any], *, of: str) -> list[Any] | RawSQL:
    """Return `values` for an `__in` filter: on PostgreSQL, one array parameter.

    `of` is the values' PostgreSQL type. Django binds a placeholder per value,
    which for the thousands of ids a chunk asks about costs more than the query.
    """
    if connection.vendor != "postgresql":
        return list(values)
    array = int_array(values) if of == "bigint" else list(values)
    return RawSQL(f"SELECT unnest(%s::{of}[])", [array])  # noqa: S611 - `of` is ours


def events_finish(
    *,
    event_ids: list[int],
    profiles: dict[int, int],
    failed: dict[int, str],
    count: bool = True,
) -> list[tuple[int, str, str]]:
    """Mark events processed, attach those in `profiles` and record the failures.

    Unless `count` is False (they will be finished again, and counted then), count
    them for the Sources page. Return the (profile pk, type, event name) of each of
    the events that has a profile now, whether attached here or earlier.
    """
    now = timezone.now()
    if connection.vendor != "postgresql":
        return _events_finish_orm(
            event_ids, profiles=profiles, failed=failed, now=now, count=count
        )

    ids = int_array(event_ids)
    params = {
        "now": now,
        "ids": ids,
        "attached": int_array(profiles.get(pk) for pk in event_ids),
        "failed": int_array(failed),
        "errors": list(failed.values()),
        "count": count,
    }
    with connection.cursor() as cursor:
        cursor.execute(_EVENTS_FINISH_SQL, params)
        return cursor.fetchall()


def _events_finish_orm(
    event_ids: list[int],
    *,
    profiles: dict[int, int],
    failed: dict[int, str],
    now: datetime,
    count: bool,
) -> list[tuple[int, str, str]]:
    attached = [
        Event(pk=pk, profile_id=profile_id) for pk, profile_id in profiles.items()
    ]
    Event.objects.bulk_update(attached, ["profile"])
    Event.objects.filter(pk__in=event_ids).update(processed_at=now, processing_error="")
    for event_id, error in failed.items():
        Event.objects.filter(pk=event_id).update(processing_error=error)
    if count:
        source_hours_add(event_ids=event_ids)

    finished = Event.objects.filter(pk__in=event_ids, profile__isnull=False)
    return list(finished.values_list("profile_id", "type", "event"))


def profiles_identify_write(*, profiles: Iterable[Profile]) -> None:
    """Write the identify fields and traits of these profiles as they are in memory."""
    profiles = list(profiles)
    if not profiles:
        return

    now = timezone.now()
    if connection.vendor != "postgresql":
        for profile in profiles:
            profile.updated_at = now
        Profile.objects.bulk_update(
            profiles, [*IDENTIFY_FIELDS, "traits", "value_times", "updated_at"]
        )
        return

    rows = [
        {
            "id": profile.pk,
            "traits": profile.traits,
            "value_times": profile.value_times,
            **{name: getattr(profile, name) for name in IDENTIFY_FIELDS},
        }
        for profile in profiles
    ]
    with connection.cursor() as cursor:
        cursor.execute(_PROFILES_WRITE_SQL, [now, json_bytes(rows).decode()])


def profiles_create(*, count: int) -> list[int]:
    """Create `count` empty profiles with one statement; return their pks in order."""
    if count == 0:
        return []
    if connection.vendor != "postgresql":
        return [
            profile.pk
            for profile in Profile.objects.bulk_create(
                [Profile() for _ in range(count)]
            )
        ]

    # One empty profile, prepared the way Django would save it, repeated.
    template = Profile()
    fields = [field for field in Profile._meta.concrete_fields if not field.primary_key]
    values = [
        field.get_db_prep_save(field.pre_save(template, add=True), connection)
        for field in fields
    ]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    placeholders = ", ".join("%s" for _ in fields)
    sql = (
        f"INSERT INTO profiles_profile ({columns}) "  # noqa: S608 - model column names
        f"SELECT {placeholders} FROM generate_series(1, %s) RETURNING id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, count])
        return sorted(row[0] for row in cursor.fetchall())


def identities_insert(*, rows: list[tuple[int, str, str]]) -> set[tuple[int, str, str]]:
    """Add (profile pk, kind, value) identities that nobody has; return those added."""
    if not rows:
        return set()

    now = timezone.now()
    if connection.vendor != "postgresql":
        values = ", ".join("(%s, %s, %s, %s)" for _ in rows)
        params = [item for row in rows for item in (*row, now)]
        sql = _IDENTITIES_INSERT_VALUES_SQL.format(rows=values)
    else:
        # Three arrays rather than a placeholder per value: thousands of
        # placeholders cost more to bind than the insert costs the database.
        profile_ids, kinds, texts = zip(*rows, strict=True)
        params = [now, int_array(profile_ids), list(kinds), list(texts)]
        sql = _IDENTITIES_INSERT_SQL
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {tuple(row) for row in cursor.fetchall()}
