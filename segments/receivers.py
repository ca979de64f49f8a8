"""What segments do when profiles change: re-evaluate those profiles' memberships."""

import logging

from segments.tasks import profile_memberships_refresh_task

logger = logging.getLogger(__name__)


def memberships_refresh_enqueue(
    sender, *, profile_ids: list[int], changed: set[str] | None, **kwargs
) -> None:
    """Queue the re-evaluation; the hourly refresh of every segment repairs a lost one."""
    words = None if changed is None else sorted(changed)
    try:
        profile_memberships_refresh_task.delay(profile_ids, words)
    except Exception:
        logger.warning(
            "Could not queue a membership refresh; the hourly refresh will repair it",
            exc_info=True,
            extra={"profiles": len(profile_ids)},
        )
