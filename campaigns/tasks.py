"""Celery tasks of the campaigns app: thin callers of the sending services."""

import logging

from celery import shared_task
from django.db.models import Exists, OuterRef
from django.utils import timezone

from campaigns.models import Campaign, CampaignStatus, Message, MessageStatus
from campaigns.sending import (
    CampaignNotStartable,
    campaign_render_problem,
    campaign_send_batch,
    campaign_start,
    messages_reconcile_stuck,
)
from campaigns.tracking import esp_events_process_pending

logger = logging.getLogger(__name__)

ESP_SWEEP_BATCH_SIZE = 500


@shared_task(acks_late=True)
def campaign_send_task(campaign_id: int) -> None:
    """Send one batch of the campaign, and queue the next batch while any remain."""
    report = campaign_send_batch(campaign_id=campaign_id)
    if report.remaining and (report.sent or report.skipped or report.failed):
        campaign_send_task.delay(campaign_id)


@shared_task
def campaign_start_task(campaign_id: int) -> None:
    """Start a campaign whose time has come (a second start is harmless).

    Its template may have changed since it was scheduled: while the email cannot
    be rendered for a first recipient, it goes back to draft, where its page
    shows why, instead of skipping each such recipient for good.
    """
    campaign = Campaign.objects.filter(
        pk=campaign_id, status=CampaignStatus.SCHEDULED
    ).first()
    problem = campaign_render_problem(campaign) if campaign else ""
    if problem:
        Campaign.objects.filter(pk=campaign_id, status=CampaignStatus.SCHEDULED).update(
            status=CampaignStatus.DRAFT
        )
        logger.warning(
            "Scheduled campaign not started: the email cannot be rendered for %s",
            problem,
            extra={"campaign_id": campaign_id},
        )
        return
    try:
        campaign_start(campaign_id=campaign_id)
    except CampaignNotStartable:
        logger.info("Campaign already started", extra={"campaign_id": campaign_id})


@shared_task
def campaigns_sweep_task() -> None:
    """Start due campaigns, resume sends a lost task left, and reconcile dead claims."""
    due = Campaign.objects.filter(
        status=CampaignStatus.SCHEDULED, scheduled_at__lte=timezone.now()
    ).values_list("pk", flat=True)
    for campaign_id in due:
        campaign_start_task.delay(campaign_id)

    pending = Message.objects.filter(
        campaign=OuterRef("pk"), status=MessageStatus.PENDING
    )
    stalled = Campaign.objects.filter(
        Exists(pending), status=CampaignStatus.SENDING
    ).values_list("pk", flat=True)
    for campaign_id in stalled:
        campaign_send_task.delay(campaign_id)

    messages_reconcile_stuck()


@shared_task
def esp_events_sweep_task() -> int:
    """Apply the ESP events kept and not yet applied; re-enqueue while it helps."""
    tried, finished, stored = esp_events_process_pending(limit=ESP_SWEEP_BATCH_SIZE)
    if stored:
        from profiles.tasks import events_process_enqueue

        events_process_enqueue()
    # A full batch that made progress (unsubscribes store no event) may have more
    # behind it; one that only failed again waits for the next beat.
    if tried == ESP_SWEEP_BATCH_SIZE and finished:
        esp_events_sweep_task.delay()
    return finished
