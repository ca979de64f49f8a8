"""Reads for the marketer pages: counts per status, as plain values."""

from django.db.models import Count, Q

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
    by_status["results"] = campaign_results(campaign)
    by_status["results_any"] = any(result["count"] for result in by_status["results"])
    return by_status


# What the ESP reported of a campaign's messages, in the order the page shows it.
RESULTS = (
    ("delivered", "delivered_at", "delivered"),
    ("opened", "opened_at", "opened (a click counts; machine opens do not)"),
    ("clicked", "clicked_at", "clicked"),
    ("bounced", "bounced_at", "bounced (address suppressed)"),
    ("complained", "complained_at", "marked as spam (address suppressed)"),
    ("unsubscribed", "unsubscribed_at", "unsubscribed at the ESP"),
)


def campaign_results(campaign: Campaign) -> list[dict[str, object]]:
    """Return how many of the campaign's messages each ESP outcome reached, and rates.

    A rate is over the messages sent; the ESP reports come through its tracking
    webhooks, so they are empty until those are set up (docs/esp-webhooks.md).
    """
    counts = campaign.messages.aggregate(
        sent=Count("id", filter=Q(status=MessageStatus.SENT)),
        **{key: Count(field) for key, field, _ in RESULTS},
    )
    sent = counts["sent"]
    return [
        {
            "key": key,
            "label": label,
            "count": counts[key],
            "rate": f"{100 * counts[key] / sent:.1f} %" if sent else "",
        }
        for key, _, label in RESULTS
    ]


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
