"""Sending campaigns: fan out one Message per member, then send each exactly once.

Every message is claimed with a conditional update (pending -> sending) before it
is handed to the ESP, so retries, a second worker or a double click never send it
twice. Consent and suppression are checked right after the claim, at the moment of
sending, not when the audience was chosen. A message left in 'sending' by a crash
is marked 'unknown' by the sweep and shown, never resent by itself.
"""

import logging
import re
from dataclasses import dataclass, field
from datetime import timedelta
from email.headerregistry import Address

from anymail.exceptions import (
    AnymailError,
    AnymailInvalidAddress,
    AnymailSerializationError,
    AnymailUnsupportedFeature,
)
from anymail.message import AnymailMessage
from django.conf import settings
from django.core import signing
from django.core.mail import get_connection
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from campaigns.models import (
    Campaign,
    CampaignStatus,
    Message,
    MessageStatus,
    SkipReason,
)
from campaigns.rendering import (
    RenderedEmail,
    TemplateError,
    email_render,
    profile_context,
    text_from_html,
)
from profiles.models import Profile, SubscriptionStatus
from profiles.selectors import profile_suppressed
from segments.selectors import segment_member_ids, segment_members

logger = logging.getLogger(__name__)

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")

FAN_OUT_CHUNK_SIZE = 2000
# A message still 'sending' this long after its claim was lost with its worker.
SENDING_STALE_AFTER_SECONDS = 15 * 60
UNSUBSCRIBE_SALT = "bespoke.unsubscribe"

# The page shows this explanation, kept in the message's error, beside the reason.
SKIP_NEEDS_SMTPUTF8 = SkipReason.NEEDS_SMTPUTF8
_SKIP_DETAILS = {
    SKIP_NEEDS_SMTPUTF8: (
        "The address has non-ASCII characters before the @, which needs an ESP "
        "that supports SMTPUTF8; set BESPOKE_SMTPUTF8 if yours does."
    ),
}

_SKIP_FOR_STATUS = {
    SubscriptionStatus.UNSUBSCRIBED: SkipReason.UNSUBSCRIBED,
    SubscriptionStatus.CLEANED: SkipReason.CLEANED,
    SubscriptionStatus.NOT_SUBSCRIBED: SkipReason.NOT_SUBSCRIBED,
}


class CampaignNotStartable(ValueError):
    """The campaign is already sending or sent, so it cannot be started again."""


@dataclass
class SendReport:
    sent: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    unknown: int = 0
    remaining: int = 0

    def add_skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def campaign_schedule(*, campaign_id: int) -> None:
    """Make a campaign not started yet follow its `scheduled_at`.

    With a time it is scheduled (the beat sweep starts it once the time has come);
    without one it is a draft again. A campaign already sending or sent is left
    as it is.
    """
    waiting = Campaign.objects.filter(
        pk=campaign_id, status__in=[CampaignStatus.DRAFT, CampaignStatus.SCHEDULED]
    )
    waiting.filter(scheduled_at__isnull=False).update(status=CampaignStatus.SCHEDULED)
    waiting.filter(scheduled_at__isnull=True).update(status=CampaignStatus.DRAFT)


def campaign_start(*, campaign_id: int) -> int:
    """Claim a draft or scheduled campaign, create its messages, and queue the send.

    Returns the number of messages created. Raises CampaignNotStartable if another
    caller started it first.
    """
    claimed = Campaign.objects.filter(
        pk=campaign_id, status__in=[CampaignStatus.DRAFT, CampaignStatus.SCHEDULED]
    ).update(status=CampaignStatus.SENDING, started_at=timezone.now())
    if claimed != 1:
        raise CampaignNotStartable(f"campaign {campaign_id} is already sending or sent")

    campaign = Campaign.objects.get(pk=campaign_id)
    created = campaign_fan_out(campaign=campaign)
    logger.info(
        "Campaign started",
        extra={"campaign_id": campaign_id, "messages": created},
    )
    _enqueue_send(campaign_id)
    return created


def campaign_fan_out(*, campaign: Campaign) -> int:
    """Create a pending message for each current member; existing ones are kept."""
    created = 0
    chunk: list[Message] = []
    for profile_id in segment_member_ids(campaign.segment_id):
        chunk.append(Message(campaign=campaign, profile_id=profile_id))
        if len(chunk) >= FAN_OUT_CHUNK_SIZE:
            created += _insert_messages(chunk)
            chunk = []
    created += _insert_messages(chunk)
    return created


def _insert_messages(messages: list[Message]) -> int:
    if not messages:
        return 0
    # ignore_conflicts: the unique (campaign, profile) pair makes a second fan-out a no-op.
    before = Message.objects.filter(campaign_id=messages[0].campaign_id).count()
    Message.objects.bulk_create(messages, ignore_conflicts=True)
    return Message.objects.filter(campaign_id=messages[0].campaign_id).count() - before


def _enqueue_send(campaign_id: int) -> None:
    from campaigns.tasks import campaign_send_task

    transaction.on_commit(lambda: campaign_send_task.delay(campaign_id))


def campaign_send_batch(
    *, campaign_id: int, batch_size: int | None = None
) -> SendReport:
    """Send up to one batch of the campaign's pending messages and report what happened."""
    batch_size = batch_size or settings.BESPOKE_SEND_BATCH_SIZE
    campaign = Campaign.objects.select_related("template").get(pk=campaign_id)
    report = SendReport()
    if campaign.status != CampaignStatus.SENDING:
        return report

    pending = list(
        Message.objects.filter(campaign=campaign, status=MessageStatus.PENDING)
        .order_by("pk")
        .values_list("pk", flat=True)[:batch_size]
    )
    with get_connection() as connection:
        for message_id in pending:
            _send_one(campaign, message_id, connection, report)

    report.remaining = Message.objects.filter(
        campaign=campaign, status=MessageStatus.PENDING
    ).count()
    if report.remaining == 0:
        _campaign_finish(campaign_id)
    logger.info(
        "Campaign batch sent",
        extra={
            "campaign_id": campaign_id,
            "sent": report.sent,
            "skipped": sum(report.skipped.values()),
            "failed": report.failed,
            "unknown": report.unknown,
            "remaining": report.remaining,
        },
    )
    return report


def campaign_send_all(*, campaign_id: int) -> SendReport:
    """Send every pending message now, batch after batch, and return the totals."""
    total = SendReport()
    while True:
        report = campaign_send_batch(campaign_id=campaign_id)
        total.sent += report.sent
        total.failed += report.failed
        total.unknown += report.unknown
        for reason, count in report.skipped.items():
            total.skipped[reason] = total.skipped.get(reason, 0) + count
        total.remaining = report.remaining
        if report.remaining == 0 or not (
            report.sent or report.skipped or report.failed
        ):
            return total


def _campaign_finish(campaign_id: int) -> None:
    Campaign.objects.filter(pk=campaign_id, status=CampaignStatus.SENDING).update(
        status=CampaignStatus.SENT, finished_at=timezone.now()
    )


def _claim(message_id: int) -> bool:
    claimed = Message.objects.filter(
        pk=message_id, status=MessageStatus.PENDING
    ).update(status=MessageStatus.SENDING, claimed_at=timezone.now())
    return claimed == 1


def _send_one(
    campaign: Campaign, message_id: int, connection, report: SendReport
) -> None:
    if not _claim(message_id):
        return

    message = Message.objects.get(pk=message_id)
    profile = Profile.objects.prefetch_related("tags").get(pk=message.profile_id)
    reason = message_skip_reason(profile)
    if reason:
        _mark(
            message,
            status=MessageStatus.SKIPPED,
            skip_reason=reason,
            error=_SKIP_DETAILS.get(reason, ""),
        )
        report.add_skip(reason)
        return

    try:
        rendered = _campaign_render(
            campaign,
            message_context(campaign=campaign, profile=profile, message=message),
        )
    except TemplateError as exc:
        _mark(
            message,
            status=MessageStatus.SKIPPED,
            skip_reason=SkipReason.RENDER_ERROR,
            error=str(exc),
        )
        report.add_skip(SkipReason.RENDER_ERROR)
        return

    _deliver(campaign, message, profile, rendered, connection, report)


def _email_build(campaign, message, profile, rendered, connection) -> AnymailMessage:
    email = AnymailMessage(
        subject=rendered.subject,
        body=rendered.text or text_from_html(rendered.html),
        from_email=campaign.from_email or settings.DEFAULT_FROM_EMAIL,
        to=[_recipient(profile)],
        headers=_list_unsubscribe_headers(message),
        metadata={
            "campaign_id": str(campaign.pk),
            "profile_id": str(profile.pk),
            "message_id": str(message.pk),
        },
        tags=[campaign.slug],
        connection=connection,
    )
    email.attach_alternative(rendered.html, "text/html")
    return email


# What Anymail raises before it sends the ESP a request (a From it cannot parse, a
# feature the ESP lacks, a payload it cannot encode).
REFUSED_BEFORE_SENDING = (
    AnymailInvalidAddress,
    AnymailUnsupportedFeature,
    AnymailSerializationError,
)


def _deliver(campaign, message, profile, rendered, connection, report) -> None:
    try:
        email = _email_build(campaign, message, profile, rendered, connection)
    except ValueError as exc:
        _not_sent(campaign, message, report, exc, "Message could not be built")
        return

    try:
        email.send()
    except REFUSED_BEFORE_SENDING as exc:
        # Anymail refused it while building the ESP's request.
        _not_sent(campaign, message, report, exc, "Message refused before the ESP")
        return
    except AnymailError as exc:
        # An ESP that answered refused the message; one that did not may have sent it.
        answered = getattr(exc, "response", None) is not None
        status = MessageStatus.FAILED if answered else MessageStatus.UNKNOWN
        _mark(message, status=status, error=str(exc)[:2000], subject=rendered.subject)
        if answered:
            report.failed += 1
        else:
            report.unknown += 1
        logger.warning(
            "ESP did not accept a message",
            extra={
                "campaign_id": campaign.pk,
                "message_id": message.pk,
                "status": status,
            },
        )
        return

    anymail_status = email.anymail_status
    if anymail_status.status and anymail_status.status <= {
        "sent",
        "queued",
        "scheduled",
    }:
        _mark(
            message,
            status=MessageStatus.SENT,
            esp_message_id=anymail_status.message_id or "",
            subject=rendered.subject,
            to_email=profile.email,
            sent_at=timezone.now(),
        )
        report.sent += 1
        return

    _mark(
        message,
        status=MessageStatus.FAILED,
        subject=rendered.subject,
        error=f"ESP answered {sorted(anymail_status.status or [])}",
    )
    report.failed += 1


def _not_sent(campaign, message, report, exc: Exception, what: str) -> None:
    # Refused before anything reached the ESP: certainly not sent.
    _mark(message, status=MessageStatus.FAILED, error=f"Not sent: {exc}"[:2000])
    report.failed += 1
    logger.warning(what, extra={"campaign_id": campaign.pk, "message_id": message.pk})


def _mark(message: Message, **fields) -> None:
    Message.objects.filter(pk=message.pk).update(**fields)


def _recipient(profile: Profile) -> str:
    # Anymail encodes the display name and the IDN domain for the wire; this only
    # quotes the name where it holds specials such as the comma in "Smith, Jr.".
    # A line break or other control character in a stored name would make a header
    # of its own: it becomes a space.
    name = " ".join(CONTROL_CHARACTERS.sub(" ", profile.full_name).split())
    if not name:
        return profile.email

    # The parts, not addr_spec: the standard library's parser refuses a non-ASCII
    # local part, which is valid where the ESP supports SMTPUTF8.
    local, _, domain = profile.email.rpartition("@")
    return str(Address(display_name=name, username=local, domain=domain))


def message_skip_reason(profile: Profile) -> str:
    """Return why this profile must not be emailed now, or '' if it may be."""
    if not profile.email:
        return SkipReason.NO_EMAIL
    if profile.subscription_status in _SKIP_FOR_STATUS:
        return _SKIP_FOR_STATUS[profile.subscription_status]
    if profile_suppressed(profile):
        return SkipReason.SUPPRESSED
    if email_needs_smtputf8(profile.email) and not settings.BESPOKE_SMTPUTF8:
        return SKIP_NEEDS_SMTPUTF8
    return ""


def email_needs_smtputf8(address: str) -> bool:
    """Return whether the address's local part has non-ASCII characters."""
    return not address.rpartition("@")[0].isascii()


def message_context(*, campaign: Campaign, profile: Profile, message: Message) -> dict:
    """Return the template context for one message: plain data and signed links."""
    return _template_context(
        campaign, profile, unsubscribe_url=unsubscribe_link(message)
    )


def _campaign_render(campaign: Campaign, context: dict) -> RenderedEmail:
    """Render the campaign's template with a recipient's context (TemplateError)."""
    template = campaign.template
    return email_render(
        subject=template.subject,
        html=template.html,
        text=template.text,
        context=context,
    )


def _template_context(
    campaign: Campaign, profile: Profile, *, unsubscribe_url: str
) -> dict:
    return {
        "profile": profile_context(profile),
        "campaign": {"name": campaign.name, "slug": campaign.slug},
        "unsubscribe_url": unsubscribe_url,
        "preferences_url": unsubscribe_url,
        "web_version_url": "",
    }


PREVIEW_RECIPIENTS = 20


@dataclass
class CampaignPreview:
    """One recipient's email as the campaign would render it, or why it cannot."""

    # (profile pk, email, why it would be skipped or '') of the first few
    recipients: list[tuple[int, str, str]]
    profile_id: int | None
    skip: str = ""
    subject: str = ""
    html: str = ""
    text: str = ""
    error: str = ""


def campaign_preview(*, campaign: Campaign, profile_id: int | None) -> CampaignPreview:
    """Render the campaign for one of its segment's first recipients (nothing is sent).

    The unsubscribe link points nowhere: no message exists yet to sign it for.
    """
    members = segment_members(campaign.segment).exclude(email=None).order_by("pk")
    profiles = {profile.pk: profile for profile in members[:PREVIEW_RECIPIENTS]}
    # Checked as at sending, so the marketer sees who would be skipped, and why.
    labels = dict(SkipReason.choices)
    skips = {
        pk: labels.get(reason, reason) if (reason := message_skip_reason(p)) else ""
        for pk, p in profiles.items()
    }
    recipients = [(pk, p.email, skips[pk]) for pk, p in profiles.items()]
    chosen = profile_id if profile_id in profiles else next(iter(profiles), None)
    preview = CampaignPreview(recipients=recipients, profile_id=chosen)
    if chosen is None:
        return preview

    preview.skip = skips[chosen]
    context = _template_context(
        campaign,
        profiles[chosen],
        unsubscribe_url="#unsubscribe-link-in-the-sent-email",
    )
    try:
        rendered = _campaign_render(campaign, context)
    except TemplateError as exc:
        preview.error = str(exc)
        return preview
    preview.subject, preview.html = rendered.subject, rendered.html
    # As it is sent: the template's text part, or one made from the HTML.
    preview.text = rendered.text or text_from_html(rendered.html)
    return preview


# How many of a segment's first members the render check looks through for the
# PREVIEW_RECIPIENTS it renders for (those who would be sent the email).
RENDER_CHECK_SCAN = 1000


def campaign_render_problem(campaign: Campaign) -> str:
    """Say for which of the first recipients the email cannot be rendered, and why.

    Empty when it renders for each of the segment's first PREVIEW_RECIPIENTS who
    would be sent it: a recipient it fails for at sending is skipped for good.
    """
    members = segment_members(campaign.segment).exclude(email=None).order_by("pk")
    checked = 0
    for profile in members[:RENDER_CHECK_SCAN]:
        if checked == PREVIEW_RECIPIENTS:
            break
        if message_skip_reason(profile):
            continue  # never rendered: not sent this email
        checked += 1
        context = _template_context(campaign, profile, unsubscribe_url="#")
        try:
            _campaign_render(campaign, context)
        except TemplateError as exc:
            return f"{profile.email}: {exc}"
    return ""


def unsubscribe_token(message: Message) -> str:
    """Return the signed, opaque token that names a message in its unsubscribe link."""
    return signing.dumps({"m": message.pk}, salt=UNSUBSCRIBE_SALT, compress=True)


def unsubscribe_link(message: Message) -> str:
    path = reverse("unsubscribe", args=[unsubscribe_token(message)])
    return f"{settings.BESPOKE_PUBLIC_URL}{path}"


def _list_unsubscribe_headers(message: Message) -> dict[str, str]:
    # RFC 8058: one HTTPS URI and the One-Click POST marker (Gmail and Yahoo require it).
    return {
        "List-Unsubscribe": f"<{unsubscribe_link(message)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def messages_reconcile_stuck(
    *, older_than_seconds: int = SENDING_STALE_AFTER_SECONDS
) -> int:
    """Mark messages whose worker died mid-send as 'unknown', so they are shown, not resent."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    count = Message.objects.filter(
        status=MessageStatus.SENDING, claimed_at__lt=cutoff
    ).update(
        status=MessageStatus.UNKNOWN,
        error="The worker stopped after claiming this message; it may or may not have "
        "been sent. Check the ESP's log before sending it again.",
    )
    if count:
        logger.warning("Messages left mid-send marked unknown", extra={"count": count})
    return count
