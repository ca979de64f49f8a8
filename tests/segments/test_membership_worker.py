"""A real Celery worker, on the Redis broker, rebuilds a segment batch after batch."""

from datetime import UTC, datetime

import pytest

from profiles.models import Profile
from segments.membership import segment_rebuild_start
from segments.models import Segment, SegmentMembership
from tests.conftest import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

EARLIER = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_worker_rebuilds_every_range_and_releases_the_segment(
    celery_worker_own_queue, settings
):
    settings.BESPOKE_SEGMENT_REBUILD_BATCH_SIZE = 2
    french = [
        Profile.objects.create(email=f"fr{n}@example.com", country_code="FR")
        for n in range(5)
    ]
    german = Profile.objects.create(email="de@example.com", country_code="DE")
    french_segment = Segment.objects.create(
        name="French",
        slug="french",
        rule={"attribute": "country_code", "op": "eq", "value": "FR"},
    )
    # Stays gone wrong: one open for a German, one French profile already inside.
    SegmentMembership.objects.create(
        segment=french_segment, profile=german, entered_at=EARLIER
    )
    SegmentMembership.objects.create(
        segment=french_segment, profile=french[0], entered_at=EARLIER
    )

    segment_rebuild_start(segment_id=french_segment.pk)

    def finished() -> bool:
        french_segment.refresh_from_db()
        return french_segment.refreshed_at is not None

    assert wait_for(finished), "the worker did not finish the rebuild"
    assert french_segment.refresh_started_at is None
    assert french_segment.refresh_error == ""
    assert french_segment.member_count == 5
    open_stays = SegmentMembership.objects.filter(
        segment=french_segment, left_at__isnull=True
    )
    assert set(open_stays.values_list("profile_id", flat=True)) == {
        profile.pk for profile in french
    }
    assert open_stays.get(profile=french[0]).entered_at == EARLIER
    assert SegmentMembership.objects.get(profile=german).left_at is not None
