"""Reads on profiles for other apps: plain values, never querysets to write through."""

from django.db.models import Count

from profiles.models import Profile, SubscriptionStatus, Suppression
from profiles.services import suppression_hash


def profile_is_suppressed(email_key: str) -> bool:
    """Return whether the address is on the suppression list."""
    return Suppression.objects.filter(email_hash=suppression_hash(email_key)).exists()


def profile_status_counts() -> dict[str, int]:
    """Return how many profiles have each subscription status, plus the totals."""
    counts = {status.value: 0 for status in SubscriptionStatus}
    rows = (
        Profile.objects.values("subscription_status").annotate(n=Count("id")).order_by()
    )
    for row in rows:
        counts[row["subscription_status"]] = row["n"]

    counts["total"] = sum(counts.values())
    counts["anonymous"] = Profile.objects.filter(email=None).count()
    counts["with_email"] = counts["total"] - counts["anonymous"]
    return counts
