"""Requests refused whole: counted per source, reason and hour for the Sources page.

The tracking API and the Shopify webhook refuse some requests before anything of
them is stored: a missing, wrong or revoked write key, a signature that does not
match the shop's secret, a body too large or unreadable. Such a feed stores
nothing at all, so without these counts the Sources page would only show it gone
quiet. A sender retrying for hours costs one row an hour, not one a try.
"""

import logging
from datetime import UTC, datetime, timedelta

from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from profiles.models import RefusedRequest

logger = logging.getLogger(__name__)

# Where a tracking request goes when no write key says whose it is. A key's feed is
# "segment:<its name>", so no key can be named into this one.
SOURCE_NO_KEY = "tracking:no valid key"
# The ESPs' tracking webhooks (campaigns/tracking.py): refusals are counted under
# it, and each ESP's deliveries and events carry it with the ESP: "esp:mailgun".
SOURCE_ESP = "esp"
# Counts older than this are deleted as new hours' counts begin; the page shows 30
# days.
REFUSALS_KEPT_DAYS = 30


def request_refused_count(
    *, source: str, code: str, message: str, at: datetime | None = None
) -> None:
    """Count one refused request against its source, reason and hour.

    Never raises: the refused sender gets its answer even if the count is lost.
    """
    at = at or timezone.now()
    hour = refusal_hour(at)
    fields = {"source": source[:100], "code": code[:50], "hour": hour}
    try:
        with transaction.atomic():
            if not _counted(fields, message=message, at=at):
                _hour_begin(fields, message=message, at=at)
    except DatabaseError:
        logger.warning(
            "A refused request could not be counted",
            exc_info=True,
            extra={"source": source, "code": code},
        )


def refusal_hour(at: datetime) -> datetime:
    """Return the start of the UTC hour that `at` falls in."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _counted(fields: dict, *, message: str, at: datetime) -> bool:
    updated = RefusedRequest.objects.filter(**fields).update(
        count=F("count") + 1, last_at=at, message=message[:500]
    )
    return bool(updated)


def _hour_begin(fields: dict, *, message: str, at: datetime) -> None:
    try:
        with transaction.atomic():
            RefusedRequest.objects.create(
                **fields, count=1, last_at=at, message=message[:500]
            )
    except IntegrityError:
        # Another request began the hour first: count on its row.
        _counted(fields, message=message, at=at)
        return

    kept_from = fields["hour"] - timedelta(days=REFUSALS_KEPT_DAYS)
    RefusedRequest.objects.filter(hour__lt=kept_from).delete()
