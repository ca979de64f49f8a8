"""Templates, campaigns, the message log and the local outbox."""

from anymail.exceptions import AnymailInvalidAddress
from anymail.utils import parse_address_list
from django.core.exceptions import ValidationError
from django.db import models


class EmailTemplate(models.Model):
    """A Liquid template for the subject, HTML and text parts of an email."""

    name = models.CharField(max_length=200, unique=True)
    subject = models.CharField(max_length=500)
    html = models.TextField()
    text = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name


class CampaignStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SCHEDULED = "scheduled", "Scheduled"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"


def from_address_check(value: str) -> None:
    """Refuse a From no message could be sent from ("Shop <shop@example.com>" is one)."""
    try:
        found = parse_address_list([value])
    except AnymailInvalidAddress as exc:
        raise ValidationError(
            f"{value!r} is not an address a message can be sent from: {exc}"
        ) from exc
    if len(found) != 1:
        raise ValidationError(f"{value!r} holds {len(found)} addresses; give one.")


class Campaign(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    template = models.ForeignKey(EmailTemplate, on_delete=models.PROTECT)
    segment = models.ForeignKey("segments.Segment", on_delete=models.PROTECT)
    from_email = models.CharField(
        max_length=254, blank=True, validators=[from_address_check]
    )
    status = models.CharField(
        max_length=10, choices=CampaignStatus.choices, default=CampaignStatus.DRAFT
    )
    scheduled_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class MessageStatus(models.TextChoices):
    PENDING = "pending", "Waiting to send"
    SENDING = "sending", "Handed to the ESP"
    SENT = "sent", "Sent"
    SKIPPED = "skipped", "Skipped"
    FAILED = "failed", "Failed"
    # The process died between handing the message over and recording the answer:
    # it may or may not have gone out, so it is shown and never resent by itself.
    UNKNOWN = "unknown", "Outcome unknown"


class SkipReason(models.TextChoices):
    NO_EMAIL = "no_email", "Profile has no email address"
    UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
    CLEANED = "cleaned", "Address bounced (cleaned)"
    NOT_SUBSCRIBED = "not_subscribed", "Never gave consent"
    SUPPRESSED = "suppressed", "Suppressed (address listed, or profile marked)"
    RENDER_ERROR = "render_error", "Template failed to render"
    NEEDS_SMTPUTF8 = "needs_smtputf8", "Address needs an ESP with SMTPUTF8"


class Message(models.Model):
    """One campaign's email to one profile; the unique pair is what stops a double send."""

    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="messages"
    )
    profile = models.ForeignKey(
        "profiles.Profile", on_delete=models.CASCADE, related_name="messages"
    )
    status = models.CharField(
        max_length=10, choices=MessageStatus.choices, default=MessageStatus.PENDING
    )
    skip_reason = models.CharField(
        max_length=20, choices=SkipReason.choices, blank=True
    )
    error = models.TextField(blank=True)
    to_email = models.CharField(max_length=254, blank=True)
    subject = models.CharField(max_length=500, blank=True)
    esp_message_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # What the ESP's tracking webhooks said of it, each the first time
    # (campaigns/tracking.py); a machine open is no open.
    delivered_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)
    bounced_at = models.DateTimeField(null=True, blank=True)
    complained_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "profile"], name="message_once_per_campaign"
            ),
        ]
        indexes = [
            models.Index(fields=["campaign", "status"]),
            # An ESP's tracking event names the message by the ESP's id.
            models.Index(
                fields=["esp_message_id"],
                name="message_esp_id",
                condition=~models.Q(esp_message_id=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id}/{self.profile_id} {self.status}"


class OutboxEmail(models.Model):
    """An email the local outbox backend accepted instead of handing it to an ESP."""

    esp_message_id = models.CharField(max_length=64, unique=True)
    from_email = models.CharField(max_length=254)
    to = models.JSONField(default=list)
    subject = models.CharField(max_length=500)
    text = models.TextField(blank=True)
    html = models.TextField(blank=True)
    headers = models.JSONField(default=dict)
    metadata = models.JSONField(default=dict)
    tags = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.subject
