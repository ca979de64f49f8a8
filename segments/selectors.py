"""Reads on segments for other apps and pages: counts and member ids as plain values."""

from collections.abc import Iterator

from django.db.models import QuerySet

from profiles.models import Profile
from segments.compiler import RuleInvalid, rule_compile
from segments.models import Segment


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
