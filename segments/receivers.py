"""What segments do when profiles change: re-evaluate those profiles' memberships."""

import logging

from segments.tasks import profile_memberships_refresh_task, segments_refresh_all_task

logger = logging.getLogger(__name__)


def memberships_refresh_enqueue(
    sender, *, profile_ids: list[int] | None, changed: set[str] | None, **kwargs
) -> None:
    """Queue the re-evaluation; the hourly refresh of every segment repairs a lost one."""
    words = None if changed is None else sorted(changed)
    try:
        if profile_ids is None:
            # Many profiles at once (an import): whole-segment refreshes in SQL.
            segments_refresh_all_task.delay()
        else:
            profile_memberships_refresh_task.delay(profile_ids, words)
    except Exception:
        logger.warning(
            "Could not queue a membership refresh; the hourly refresh will repair it",
            exc_info=True,
            extra={"profiles": len(profile_ids)},
        )
