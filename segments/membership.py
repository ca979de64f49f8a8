"""Segment membership: who is in each segment now, and the stays that record it.

Three ways keep the stays current, all ending in the same kind of write (close the
open stays of those who no longer match, open one for those who newly match):

- ``segment_refresh``: the whole segment at once, the difference taken in SQL by
  one UPDATE and one INSERT ... SELECT built from the compiled rule;
- ``segment_rebuild_start`` and ``segment_rebuild_batch``: the same, range by range
  of profile ids, as a cancellable repair job;
- ``profile_memberships_refresh``: one profile, only in the segments whose rule
  reads what changed, right after its events are processed.

A segment's refresh state lives on the Segment row. ``refresh_started_at`` is the
claim: it is set by a conditional update, so two workers never refresh or rebuild
one segment at once, and a claim older than SEGMENT_REFRESH_STALE_AFTER_SECONDS is
taken to be abandoned (see ``segment_refreshes_reap``).
"""

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from profiles.models import Profile
from segments.compiler import rule_compile
from segments.language import RuleInvalid, SegmentLookup
from segments.models import Segment, SegmentMembership
from segments.signals import segment_membership_changed, segment_refreshed

logger = logging.getLogger(__name__)

SEGMENT_REFRESH_STALE_AFTER_SECONDS = 600

ENTERED = "entered"
LEFT = "left"


class SegmentBusy(Exception):
    """Another worker holds the segment's refresh claim."""


@dataclass(frozen=True)
class RefreshResult:
    entered: int
    left: int
    size: int
    seconds: float


@dataclass(frozen=True)
class MembershipChange:
    segment_id: int
    profile_id: int
    change: str  # ENTERED or LEFT
    at: datetime


@dataclass(frozen=True)
class RebuildProgress:
    done: bool
    after_id: int  # the last profile id rebuilt so far
    claimed_at: datetime | None  # the claim to pass to the next batch


class _Lookup(SegmentLookup):
    """Find other segments' rules in one database, from rules already loaded if given."""

    def __init__(self, using: str, rules: dict[str, dict] | None = None) -> None:
        super().__init__()
        self.using = using
        self.rules = rules
        # Changes whenever any rule does, so SQL compiled from the rules is reused
        # only while every rule it may have inlined is the same.
        self.fingerprint = hash(json.dumps(rules, sort_keys=True)) if rules else None

    def database(self) -> str:
        return self.using

    def rule_of(self, slug: str) -> dict | None:
        if self.rules is not None:
            return self.rules.get(slug)
        rules = Segment.objects.using(self.using).filter(slug=slug)
        return rules.values_list("rule", flat=True).first()


# Whole segment ---------------------------------------------------------------------


def segment_refresh(
    *, segment_id: int, now: datetime | None = None, using: str = DEFAULT_DB_ALIAS
) -> RefreshResult:
    """Bring the segment's stays in line with its rule; raise SegmentBusy if claimed.

    Records member_count and refreshed_at, or refresh_error when the rule cannot be
    evaluated, and always releases the claim it took.
    """
    now = now or timezone.now()
    claimed_at = _claim(segment_id=segment_id, using=using)
    started = time.monotonic()

    try:
        segment = Segment.objects.using(using).get(pk=segment_id)
        with transaction.atomic(using=using):
            entered, left = _apply_rule(segment, now=now, using=using)
            size = _open_stays(segment_id, using=using).count()
    except Exception as error:
        _release(segment_id, claimed_at=claimed_at, using=using, refresh_error=error)
        logger.exception("Segment refresh failed", extra={"segment_id": segment_id})
        raise

    result = RefreshResult(entered, left, size, round(time.monotonic() - started, 3))
    _release(
        segment_id,
        claimed_at=claimed_at,
        using=using,
        member_count=size,
        refreshed_at=now,
    )
    logger.info(
        "Segment refreshed: %s entered, %s left, %s members in %ss",
        entered,
        left,
        size,
        result.seconds,
        extra={"segment_id": segment_id, "entered": entered, "left": left},
    )
    transaction.on_commit(
        lambda: segment_refreshed.send(
            sender=Segment, segment_id=segment_id, result=result, at=now
        ),
        using=using,
    )
    return result


def _claim(*, segment_id: int, using: str) -> datetime:
    claimed_at = timezone.now()
    stale = claimed_at - timedelta(seconds=SEGMENT_REFRESH_STALE_AFTER_SECONDS)
    claimed = (
        Segment.objects.using(using)
        .filter(pk=segment_id)
        .filter(Q(refresh_started_at__isnull=True) | Q(refresh_started_at__lt=stale))
        .update(refresh_started_at=claimed_at, refresh_cancel_requested=False)
    )
    if claimed != 1:
        raise SegmentBusy(f"segment {segment_id} is being refreshed by another worker")
    return claimed_at


def _release(
    segment_id: int,
    *,
    claimed_at: datetime,
    using: str,
    refresh_error: Exception | str = "",
    **fields,
) -> bool:
    # Only the holder releases: a claim the reaper gave away is someone else's now.
    released = (
        Segment.objects.using(using)
        .filter(pk=segment_id, refresh_started_at=claimed_at)
        .update(
            refresh_started_at=None,
            refresh_cancel_requested=False,
            refresh_error=str(refresh_error),
            **fields,
        )
    )
    return released == 1


def _open_stays(segment_id: int, *, using: str):
    return SegmentMembership.objects.using(using).filter(
        segment_id=segment_id, left_at__isnull=True
    )


def _apply_rule(
    segment: Segment,
    *,
    now: datetime,
    using: str,
    id_range: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """Close and open stays so they match the rule; return (entered, left).

    Two statements whatever the size: an UPDATE for those who left and an
    INSERT ... SELECT for those who entered, both reading the compiled rule as a
    derived table. The same SQL runs on PostgreSQL and SQLite.
    """
    members_sql, members_params = _members_sql(
        segment, now=now, using=using, id_range=id_range
    )
    connection = connections[using]
    at = connection.ops.adapt_datetimefield_value(now)
    stays = connection.ops.quote_name(SegmentMembership._meta.db_table)
    in_range, range_params = "", []
    if id_range is not None:
        in_range = f"AND {stays}.profile_id > %s AND {stays}.profile_id <= %s"
        range_params = list(id_range)

    # Only table names and the compiler's own SQL are interpolated; every value
    # travels as a parameter.
    leave_sql = (
        f"UPDATE {stays} SET left_at = %s "  # noqa: S608
        f"WHERE {stays}.segment_id = %s AND {stays}.left_at IS NULL {in_range} "
        f"AND NOT EXISTS (SELECT 1 FROM ({members_sql}) AS members "
        f"WHERE members.member_id = {stays}.profile_id)"
    )
    # ON CONFLICT: a profile entered on the real-time path since the SELECT began.
    enter_sql = (
        f"INSERT INTO {stays} (segment_id, profile_id, entered_at) "  # noqa: S608
        f"SELECT %s, members.member_id, %s FROM ({members_sql}) AS members "
        f"WHERE NOT EXISTS (SELECT 1 FROM {stays} AS stay "
        "WHERE stay.segment_id = %s AND stay.profile_id = members.member_id "
        "AND stay.left_at IS NULL) "
        "ON CONFLICT DO NOTHING"
    )
    with connection.cursor() as cursor:
        cursor.execute(leave_sql, [at, segment.pk, *range_params, *members_params])
        left = cursor.rowcount
        cursor.execute(enter_sql, [segment.pk, at, *members_params, segment.pk])
        entered = cursor.rowcount
    return entered, left


def _members_sql(
    segment: Segment,
    *,
    now: datetime,
    using: str,
    id_range: tuple[int, int] | None = None,
    lookup: SegmentLookup | None = None,
    one_profile: bool = False,
) -> tuple[str, list]:
    lookup = lookup or _Lookup(using)
    rule = rule_compile(
        segment.rule, now=now, lookup=lookup, slug=segment.slug, one_profile=one_profile
    )
    members = Profile.objects.using(using).filter(rule)
    if id_range is not None:
        members = members.filter(pk__gt=id_range[0], pk__lte=id_range[1])

    # Named explicitly: the statements around it read the column as member_id.
    query = members.annotate(member_id=F("pk")).values_list("member_id").order_by()
    query = query.query
    try:
        sql, params = query.get_compiler(using=using).as_sql()
    except EmptyResultSet:
        # The rule can match no one (an empty 'any'): a query that selects nothing.
        table = connections[using].ops.quote_name(Profile._meta.db_table)
        return f"SELECT {table}.id AS member_id FROM {table} WHERE 1 = 0", []  # noqa: S608
    return sql, list(params)


# Rebuild, range by range ------------------------------------------------------------


def segment_rebuild_start(*, segment_id: int) -> datetime:
    """Claim the segment and enqueue its rebuild from the first profile id.

    Return the claim's time, which each batch carries; raise SegmentBusy if a
    refresh or another rebuild holds the segment.
    """
    from segments.tasks import segment_rebuild_task

    claimed_at = _claim(segment_id=segment_id, using=DEFAULT_DB_ALIAS)
    logger.info("Segment rebuild started", extra={"segment_id": segment_id})
    transaction.on_commit(
        lambda: segment_rebuild_task.delay(segment_id, 0, claimed_at.isoformat())
    )
    return claimed_at


def segment_rebuild_cancel(*, segment_id: int) -> bool:
    """Ask a running rebuild to stop after its current batch; False if none runs."""
    asked = Segment.objects.filter(
        pk=segment_id, refresh_started_at__isnull=False
    ).update(refresh_cancel_requested=True)
    return asked == 1


def segment_rebuild_batch(
    *,
    segment_id: int,
    after_id: int,
    claimed_at: datetime,
    now: datetime | None = None,
    batch_size: int | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> RebuildProgress:
    """Rebuild the stays of the next batch_size profile ids after after_id.

    Stops without writing if the claim was lost, and finishes (releasing the claim)
    when a cancel was asked for, when no profile is left or when the rule fails.
    Each batch is one transaction, so the ranges done are consistent whatever
    happens to the ones after them.
    """
    now = now or timezone.now()
    batch_size = batch_size or _rebuild_batch_size()
    segment = Segment.objects.using(using).filter(pk=segment_id).first()
    if segment is None or segment.refresh_started_at != claimed_at:
        logger.warning(
            "Segment rebuild lost its claim", extra={"segment_id": segment_id}
        )
        return RebuildProgress(done=True, after_id=after_id, claimed_at=None)

    if segment.refresh_cancel_requested:
        _rebuild_finish(
            segment, claimed_at, now=now, using=using, cancelled_after=after_id
        )
        return RebuildProgress(done=True, after_id=after_id, claimed_at=None)

    # Ranges start at the next profile that exists, so gaps in the ids cost nothing.
    next_id = (
        Profile.objects.using(using)
        .filter(pk__gt=after_id)
        .order_by("pk")
        .values_list("pk", flat=True)
        .first()
    )
    if next_id is None:
        _rebuild_finish(segment, claimed_at, now=now, using=using)
        return RebuildProgress(done=True, after_id=after_id, claimed_at=None)

    upper = next_id - 1 + batch_size
    try:
        with transaction.atomic(using=using):
            entered, left = _apply_rule(
                segment, now=now, using=using, id_range=(after_id, upper)
            )
    except Exception as error:
        _release(segment_id, claimed_at=claimed_at, using=using, refresh_error=error)
        logger.exception("Segment rebuild failed", extra={"segment_id": segment_id})
        raise

    # Renewing the claim is the heartbeat that keeps the reaper away from a long job.
    renewed_at = timezone.now()
    Segment.objects.using(using).filter(
        pk=segment_id, refresh_started_at=claimed_at
    ).update(refresh_started_at=renewed_at)
    logger.info(
        "Segment rebuild batch done up to profile %s: %s entered, %s left",
        upper,
        entered,
        left,
        extra={"segment_id": segment_id, "entered": entered, "left": left},
    )
    return RebuildProgress(done=False, after_id=upper, claimed_at=renewed_at)


def _rebuild_batch_size() -> int:
    return settings.BESPOKE_SEGMENT_REBUILD_BATCH_SIZE


def _rebuild_finish(
    segment: Segment,
    claimed_at: datetime,
    *,
    now: datetime,
    using: str,
    cancelled_after: int | None = None,
) -> None:
    size = _open_stays(segment.pk, using=using).count()
    error = ""
    if cancelled_after is not None:
        error = (
            f"Rebuild cancelled: profiles up to id {cancelled_after} were rebuilt, "
            "those after it were not."
        )
    _release(
        segment.pk,
        claimed_at=claimed_at,
        using=using,
        refresh_error=error,
        member_count=size,
        **({} if cancelled_after is not None else {"refreshed_at": now}),
    )
    logger.info(
        "Segment rebuild %s with %s members",
        "cancelled" if cancelled_after is not None else "finished",
        size,
        extra={"segment_id": segment.pk, "size": size},
    )


# Beat: time windows and stuck claims -------------------------------------------------


def segment_refreshes_reap(*, now: datetime | None = None) -> int:
    """Release the refresh claims held longer than the stale limit, saying so."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=SEGMENT_REFRESH_STALE_AFTER_SECONDS)
    reaped = 0
    for segment_id, slug, started_at in Segment.objects.filter(
        refresh_started_at__lt=stale
    ).values_list("pk", "slug", "refresh_started_at"):
        error = (
            f"The refresh of segment '{slug}' started at {started_at.isoformat()} "
            f"did not finish within {SEGMENT_REFRESH_STALE_AFTER_SECONDS} seconds "
            "and was released."
        )
        reaped += _release(
            segment_id,
            claimed_at=started_at,
            using=DEFAULT_DB_ALIAS,
            refresh_error=error,
        )
        logger.warning(
            "Stuck segment refresh released", extra={"segment_id": segment_id}
        )
    return reaped


def segments_time_dependent_ids() -> list[int]:
    """Return the segments the clock alone can change that no worker holds now."""
    segments = Segment.objects.filter(
        time_dependent=True, refresh_started_at__isnull=True
    )
    return list(segments.order_by("pk").values_list("pk", flat=True))


# One profile, in real time ----------------------------------------------------------


def profile_memberships_refresh(
    *,
    profile_id: int,
    changed: set[str] | None = None,
    now: datetime | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> list[MembershipChange]:
    """Re-evaluate one profile in the segments that read what changed; return moves.

    ``changed`` holds dependency words ('event:Order Completed', 'trait:tier',
    'segment:<slug>'...; see segments.language.rule_dependencies); None means every
    segment. A move into or out of segment A then re-evaluates the segments that
    depend on 'segment:A'. Listeners of segment_membership_changed hear the moves
    once the transaction commits.
    """
    return profiles_memberships_refresh(
        profile_ids=[profile_id], changed=changed, now=now, using=using
    )


def profiles_memberships_refresh(
    *,
    profile_ids: list[int],
    changed: set[str] | None = None,
    now: datetime | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> list[MembershipChange]:
    """Re-evaluate several profiles as profile_memberships_refresh does each one.

    The segments are read once for all of them, so profiles whose change no
    segment reads cost no query at all.
    """
    now = now or timezone.now()
    segments = list(
        Segment.objects.using(using).only("pk", "slug", "rule", "dependencies")
    )
    lookup = _Lookup(using, rules={segment.slug: segment.rule for segment in segments})
    changes: list[MembershipChange] = []
    for profile_id in profile_ids:
        changes += _profile_memberships_refresh(
            profile_id, segments, changed, now=now, using=using, lookup=lookup
        )

    if changes:
        transaction.on_commit(
            lambda: segment_membership_changed.send(
                sender=SegmentMembership, changes=changes
            ),
            using=using,
        )
    return changes


def _profile_memberships_refresh(
    profile_id: int,
    segments: list[Segment],
    changed: set[str] | None,
    *,
    now: datetime,
    using: str,
    lookup: "_Lookup",
) -> list[MembershipChange]:
    slugs = {segment.pk: segment.slug for segment in segments}
    evaluated: set[int] = set()
    words = None if changed is None else set(changed)
    changes: list[MembershipChange] = []

    while words is None or words:
        candidates = [
            segment
            for segment in segments
            if segment.pk not in evaluated
            and (words is None or words.intersection(segment.dependencies))
        ]
        if not candidates:
            break

        evaluated.update(segment.pk for segment in candidates)
        moved = _profile_apply(
            profile_id, candidates, now=now, using=using, lookup=lookup
        )
        changes.extend(moved)
        words = {f"segment:{slugs[change.segment_id]}" for change in moved}
    return changes


def _profile_apply(
    profile_id: int,
    segments: list[Segment],
    *,
    now: datetime,
    using: str,
    lookup: SegmentLookup,
) -> list[MembershipChange]:
    state = _profile_state(profile_id, segments, now=now, using=using, lookup=lookup)
    if state is None:
        return []

    entering = [pk for pk, (matches, inside) in state.items() if matches and not inside]
    leaving = [pk for pk, (matches, inside) in state.items() if inside and not matches]
    if not entering and not leaving:
        return []

    try:
        with transaction.atomic(using=using):
            entered = _stays_open(profile_id, entering, now=now, using=using)
            left = _stays_close(profile_id, leaving, now=now, using=using)
    except IntegrityError:
        # A merge took the profile away after its state was read (the new stay's
        # foreign key is checked at commit): it has no memberships to move.
        if Profile.objects.using(using).filter(pk=profile_id).exists():
            raise
        logger.info(
            "Profile merged away during its refresh", extra={"profile": profile_id}
        )
        return []

    return [
        *(MembershipChange(pk, profile_id, ENTERED, now) for pk in sorted(entered)),
        *(MembershipChange(pk, profile_id, LEFT, now) for pk in sorted(left)),
    ]


def _profile_state(
    profile_id: int,
    segments: list[Segment],
    *,
    now: datetime,
    using: str,
    lookup: "_Lookup",
) -> dict[int, tuple[bool, bool]] | None:
    """Return {segment id: (rule matches, stay open)} from one query; None if no profile.

    Each segment adds two EXISTS columns to a query over the one profile: one over
    its members' SQL narrowed to this profile, one over its open stay.
    """
    connection = connections[using]
    stays = connection.ops.quote_name(SegmentMembership._meta.db_table)
    profiles = connection.ops.quote_name(Profile._meta.db_table)
    columns, params, segment_ids = [], [], []
    for segment in segments:
        members = _members_sql_cached(segment, now=now, using=using, lookup=lookup)
        if members is None:
            continue

        members_sql, members_params = members
        columns.append(
            f"EXISTS (SELECT 1 FROM ({members_sql}) AS members "  # noqa: S608
            "WHERE members.member_id = target.id)"
        )
        columns.append(
            f"EXISTS (SELECT 1 FROM {stays} AS stay WHERE stay.segment_id = %s "  # noqa: S608
            "AND stay.profile_id = target.id AND stay.left_at IS NULL)"
        )
        params.extend([*members_params, segment.pk])
        segment_ids.append(segment.pk)
    if not columns:
        return {}

    selected = ", ".join(columns)
    sql = f"SELECT {selected} FROM {profiles} AS target WHERE target.id = %s"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, profile_id])
        row = cursor.fetchone()
    if row is None:
        return None
    return {
        pk: (bool(row[2 * n]), bool(row[2 * n + 1])) for n, pk in enumerate(segment_ids)
    }


# Compiling 50 rules and rendering their SQL costs far more than running it, so the
# SQL is kept per process for a few seconds: the rules' windows are then measured
# from the start of that slice, never more than RULE_SQL_REUSE_SECONDS old.
RULE_SQL_REUSE_SECONDS = 10
_rule_sql: dict = {"key": None, "sql": {}}


def _members_sql_cached(
    segment: Segment, *, now: datetime, using: str, lookup: "_Lookup"
) -> tuple[str, list] | None:
    epoch = int(now.timestamp()) // RULE_SQL_REUSE_SECONDS * RULE_SQL_REUSE_SECONDS
    as_of = datetime.fromtimestamp(epoch, tz=now.tzinfo or UTC)
    key = (using, as_of, lookup.fingerprint)
    if _rule_sql["key"] != key:
        _rule_sql["key"], _rule_sql["sql"] = key, {}
    if segment.pk in _rule_sql["sql"]:
        return _rule_sql["sql"][segment.pk]

    try:
        members = _members_sql(
            segment, now=as_of, using=using, lookup=lookup, one_profile=True
        )
    except RuleInvalid:
        logger.warning(
            "Segment rule no longer compiles", extra={"segment_id": segment.pk}
        )
        members = None
    _rule_sql["sql"][segment.pk] = members
    return members


def _stays_open(
    profile_id: int, segment_ids: list[int], *, now: datetime, using: str
) -> list[int]:
    if not segment_ids:
        return []

    connection = connections[using]
    at = connection.ops.adapt_datetimefield_value(now)
    stays = connection.ops.quote_name(SegmentMembership._meta.db_table)
    rows = ", ".join(["(%s, %s, %s)"] * len(segment_ids))
    params = [value for pk in segment_ids for value in (pk, profile_id, at)]
    # ON CONFLICT: a whole-segment refresh may have opened the stay meanwhile.
    sql = (
        f"INSERT INTO {stays} (segment_id, profile_id, entered_at) VALUES {rows} "  # noqa: S608
        "ON CONFLICT DO NOTHING RETURNING segment_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [pk for (pk,) in cursor.fetchall()]


def _stays_close(
    profile_id: int, segment_ids: list[int], *, now: datetime, using: str
) -> list[int]:
    if not segment_ids:
        return []

    connection = connections[using]
    at = connection.ops.adapt_datetimefield_value(now)
    stays = connection.ops.quote_name(SegmentMembership._meta.db_table)
    marks = ", ".join(["%s"] * len(segment_ids))
    sql = (
        f"UPDATE {stays} SET left_at = %s WHERE profile_id = %s "  # noqa: S608
        f"AND left_at IS NULL AND segment_id IN ({marks}) RETURNING segment_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [at, profile_id, *segment_ids])
        return [pk for (pk,) in cursor.fetchall()]
