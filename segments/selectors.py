"""Reads on segments for other apps and pages: counts and member ids as plain values."""

from collections.abc import Iterator

from django.db.models import QuerySet

from profiles.models import Profile
from segments.compiler import rule_compile
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
