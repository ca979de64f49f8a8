"""Reads for the marketer pages: counts per status, as plain values."""

from django.db.models import Count

from campaigns.models import Campaign, Message, MessageStatus, SkipReason
from profiles.health import rejected_events_count
from profiles.models import ContactImport, Event
from profiles.selectors import profile_status_counts


def campaign_message_counts(campaign: Campaign) -> dict[str, object]:
    """Return a campaign's messages counted by status, and skips counted by reason."""
    by_status = {status.value: 0 for status in MessageStatus}
    rows = campaign.messages.values("status").annotate(n=Count("id")).order_by()
    for row in rows:
        by_status[row["status"]] = row["n"]

    skipped = (
        campaign.messages.filter(status=MessageStatus.SKIPPED)
        .values("skip_reason")
        .annotate(n=Count("id"))
        .order_by("-n", "skip_reason")
    )
    by_status["skip_reasons"] = {row["skip_reason"]: row["n"] for row in skipped}
    # As the message rows name them: "Unsubscribed", not "unsubscribed".
    labels = dict(SkipReason.choices)
    by_status["skip_reason_rows"] = [
        (labels.get(reason, reason), n)
        for reason, n in by_status["skip_reasons"].items()
    ]
    return by_status


def dashboard_counts() -> dict[str, object]:
    """Return the figures the dashboard shows: profiles, imports, events, messages."""
    imports = ContactImport.objects.all()
    rejected = rejected_events_count()
    return {
        "profiles": profile_status_counts(),
        "imports": imports.count(),
        "rows_rejected": sum(imports.values_list("rejected", flat=True)),
        "events": Event.objects.count(),
        "events_unprocessed": Event.objects.filter(processed_at=None).count(),
        "events_rejected": rejected["refused"],
        "events_noticed": rejected["notices"],
        "messages_sent": Message.objects.filter(status=MessageStatus.SENT).count(),
        "messages_skipped": Message.objects.filter(
            status=MessageStatus.SKIPPED
        ).count(),
        "messages_unknown": Message.objects.filter(
            status=MessageStatus.UNKNOWN
        ).count(),
    }
