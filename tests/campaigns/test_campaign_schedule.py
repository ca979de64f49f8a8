"""A campaign given a time to send in the admin is sent by the beat sweep then."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from campaigns import sending, tasks
from campaigns.models import Campaign, CampaignStatus
from tests.factories import EmailTemplateFactory, ProfileFactory, SegmentFactory

pytestmark = pytest.mark.django_db


def save_in_admin(admin_client, *, scheduled_at: str, pk: int | None = None):
    template = EmailTemplateFactory()
    segment = SegmentFactory()
    data = {
        "name": "Spring",
        "slug": "spring",
        "template": template.pk,
        "segment": segment.pk,
        "from_email": "",
        "scheduled_at_0": scheduled_at[:10],
        "scheduled_at_1": scheduled_at[11:19],
    }
    url = (
        reverse("admin:campaigns_campaign_change", args=[pk])
        if pk
        else reverse("admin:campaigns_campaign_add")
    )
    response = admin_client.post(url, data)
    assert response.status_code == 302, re.findall(
        r"errorlist.*?</ul>", response.content.decode(), re.S
    )
    return Campaign.objects.get(slug="spring")


def test_a_time_to_send_makes_it_scheduled_and_the_sweep_starts_it(
    admin_client, monkeypatch
):
    ProfileFactory(email="ana@example.com")
    past = (timezone.now() - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    # The sweep's task runs here, not in a worker.
    monkeypatch.setattr(
        tasks.campaign_start_task, "delay", lambda pk: tasks.campaign_start_task(pk)
    )
    monkeypatch.setattr(sending, "_enqueue_send", lambda pk: None)

    campaign = save_in_admin(admin_client, scheduled_at=past)
    assert campaign.status == CampaignStatus.SCHEDULED

    tasks.campaigns_sweep_task()

    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.SENDING
    assert campaign.messages.count() == 1


def test_clearing_the_time_makes_it_a_draft_again(admin_client):
    future = (timezone.now() + timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S")
    campaign = save_in_admin(admin_client, scheduled_at=future)
    assert campaign.status == CampaignStatus.SCHEDULED

    campaign = save_in_admin(admin_client, scheduled_at="", pk=campaign.pk)

    assert campaign.status == CampaignStatus.DRAFT


def test_a_time_to_send_is_refused_while_the_email_fails_for_a_recipient(
    admin_client,
):
    # given a segment whose first recipient has no orders, and a template that
    # divides by them; an unsubscribed one, never sent it, is no reason to refuse
    ProfileFactory(
        email="gone@example.com",
        traits={"orders": 0},
        subscription_status="unsubscribed",
    )
    ProfileFactory(email="ana@example.com", traits={"orders": 0})
    template = EmailTemplateFactory(html="<p>{{ 10 | divided_by: profile.orders }}</p>")
    later = (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    data = {
        "name": "Spring",
        "slug": "spring",
        "template": template.pk,
        "segment": SegmentFactory().pk,
        "from_email": "",
        "scheduled_at_0": later[:10],
        "scheduled_at_1": later[11:19],
    }

    response = admin_client.post(reverse("admin:campaigns_campaign_add"), data)

    page = response.content.decode()
    assert response.status_code == 200
    assert "The email cannot be rendered for ana@example.com: html, line 1" in page
    assert not Campaign.objects.exists()


def test_a_campaign_whose_template_broke_after_scheduling_goes_back_to_draft(
    admin_client, monkeypatch
):
    # given a campaign scheduled with a template that rendered, then broken
    ProfileFactory(email="ana@example.com", traits={"orders": 0})
    monkeypatch.setattr(
        tasks.campaign_start_task, "delay", lambda pk: tasks.campaign_start_task(pk)
    )
    monkeypatch.setattr(sending, "_enqueue_send", lambda pk: None)
    past = (timezone.now() - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    campaign = save_in_admin(admin_client, scheduled_at=past)
    template = campaign.template
    template.html = "<p>{{ 10 | divided_by: profile.orders }}</p>"
    template.save()

    # when the sweep's time comes
    tasks.campaigns_sweep_task()

    # then it is not started: it is a draft again, and nobody was skipped for good
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.DRAFT
    assert campaign.messages.count() == 0
