"""Celery tasks of the segments app: thin callers of segments.membership, taking ids."""

import logging
from datetime import datetime

from celery import shared_task
from django.db import OperationalError

from segments.membership import (
    SegmentBusy,
    profiles_memberships_refresh,
    segment_rebuild_batch,
    segment_refresh,
    segment_refreshes_reap,
    segments_time_dependent_ids,
)
from segments.models import Segment

logger = logging.getLogger(__name__)


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def segment_refresh_task(segment_id: int) -> int | None:
    """Refresh one segment's stays; return its size, or None if another worker has it."""
    try:
        return segment_refresh(segment_id=segment_id).size
    except SegmentBusy:
        # The worker that holds it reads the rule as it is now; nothing is lost.
        logger.info(
            "Segment refresh skipped: claimed", extra={"segment_id": segment_id}
        )
        return None


@shared_task
def segment_rebuild_task(segment_id: int, after_id: int, claimed_at: str) -> int:
    """Rebuild one range of a segment's stays and enqueue the next; return its end."""
    progress = segment_rebuild_batch(
        segment_id=segment_id,
        after_id=after_id,
        claimed_at=datetime.fromisoformat(claimed_at),
    )
    if not progress.done:
        segment_rebuild_task.delay(
            segment_id, progress.after_id, progress.claimed_at.isoformat()
        )
    return progress.after_id


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def profile_memberships_refresh_task(
    profile_ids: list[int], changed: list[str] | None = None
) -> int:
    """Re-evaluate each profile in the segments that read `changed`; return the moves."""
    words = None if changed is None else set(changed)
    # One read of the segments for the whole task, not one per profile.
    return len(profiles_memberships_refresh(profile_ids=profile_ids, changed=words))


@shared_task
def segments_time_refresh_task() -> int:
    """Release stuck refreshes, then enqueue a refresh of each time-window segment."""
    segment_refreshes_reap()
    segment_ids = segments_time_dependent_ids()
    for segment_id in segment_ids:
        segment_refresh_task.delay(segment_id)
    return len(segment_ids)


@shared_task
def segments_refresh_all_task() -> int:
    """Queue a refresh of every segment: the repair for any lost real-time update."""
    segment_ids = list(Segment.objects.values_list("pk", flat=True))
    for segment_id in segment_ids:
        segment_refresh_task.delay(segment_id)
    return len(segment_ids)
