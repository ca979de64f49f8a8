"""Reads on segments for other apps and pages: counts and member ids as plain values."""

from collections.abc import Iterator
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import CharField, Count, F, Q, QuerySet, Value
from django.utils import timezone

from profiles.models import Profile
from segments.compiler import RuleInvalid, rule_compile
from segments.models import Segment, SegmentMembership


def segment_members(segment: Segment) -> QuerySet[Profile]:
    """Return the profiles the segment's rule selects right now."""
    return Profile.objects.filter(rule_compile(segment.rule, slug=segment.slug))


def segment_count(segment: Segment) -> int:
    """Return how many profiles are in the segment right now."""
    return segment_members(segment).count()


def segment_member_ids(segment_id: int, *, chunk_size: int = 2000) -> Iterator[int]:
    """Yield the ids of the segment's members, streamed in chunks."""
    segment = Segment.objects.get(pk=segment_id)
    ids = segment_members(segment).order_by("pk").values_list("pk", flat=True)
    yield from ids.iterator(chunk_size=chunk_size)


def segments_containing(profile_id: int) -> list[dict]:
    """Return the segments the profile is in right now, by name.

    Each segment's rule is compiled and filtered to the one profile: one query per
    segment, fine for the tens of segments an account has. A segment whose rule no
    longer compiles is left out.
    """
    found = []
    for segment in Segment.objects.order_by("name", "pk"):
        try:
            rule = rule_compile(segment.rule, slug=segment.slug)
        except RuleInvalid:
            continue

        if Profile.objects.filter(rule, pk=profile_id).exists():
            found.append({"id": segment.pk, "slug": segment.slug, "name": segment.name})
    return found


def segment_size_history(
    *, segment_id: int, days: int = 30, now: datetime | None = None
) -> list[dict]:
    """Return the segment's size at the end of each of the last `days` days, oldest first.

    Days are the account's (BESPOKE_ACCOUNT_TIME_ZONE); today's size is the size now.
    One query counts, for each day's end, the stays open at that moment.
    """
    now = now or timezone.now()
    zone = ZoneInfo(settings.BESPOKE_ACCOUNT_TIME_ZONE)
    today = now.astimezone(zone).date()
    dates = [today - timedelta(days=n) for n in range(days - 1, -1, -1)]
    ends = [
        min(now, datetime.combine(day + timedelta(days=1), time(), tzinfo=zone))
        for day in dates
    ]

    def open_at(end: datetime) -> Q:
        return Q(entered_at__lt=end) & (Q(left_at__isnull=True) | Q(left_at__gte=end))

    stays = SegmentMembership.objects.filter(segment_id=segment_id).filter(
        Q(left_at__isnull=True) | Q(left_at__gte=ends[0]), entered_at__lt=ends[-1]
    )
    sizes = stays.aggregate(
        **{f"d{n}": Count("pk", filter=open_at(end)) for n, end in enumerate(ends)}
    )
    return [{"day": day, "size": sizes[f"d{n}"]} for n, day in enumerate(dates)]


def segment_recent_changes(*, segment_id: int, limit: int = 50) -> list[dict]:
    """Return the latest entries and exits of the segment, newest first.

    Two queries (the newest entries, the newest exits), merged here: SQLite cannot
    limit the parts of a UNION.
    """
    stays = SegmentMembership.objects.filter(segment_id=segment_id)
    fields = ("profile_id", "email", "change", "at")
    rows = []
    for change, column in (("entered", "entered_at"), ("left", "left_at")):
        newest = (
            stays.filter(**{f"{column}__isnull": False})
            .annotate(
                email=F("profile__email"),
                change=Value(change, output_field=CharField()),
                at=F(column),
            )
            .order_by(f"-{column}", "-pk")
            .values_list(*fields)[:limit]
        )
        rows.extend(newest)
    rows.sort(key=lambda row: (row[3], row[2] == "left"), reverse=True)
    return [dict(zip(fields, row, strict=True)) for row in rows[:limit]]
