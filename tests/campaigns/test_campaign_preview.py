"""A draft campaign's page shows the email as one of its recipients would get it."""

import html

import pytest
from django.urls import reverse

from campaigns.models import CampaignStatus, Message, OutboxEmail
from profiles.models import SubscriptionStatus
from tests.factories import (
    CampaignFactory,
    EmailTemplateFactory,
    ProfileFactory,
    SegmentFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(client, marketer):
    client.force_login(marketer)
    return client


@pytest.fixture
def campaign():
    segment = SegmentFactory(
        rule={"attribute": "email", "op": "contains", "value": "@shop.example"}
    )
    return CampaignFactory(segment=segment)


def page_of(client, campaign, **params) -> str:
    url = reverse("campaign_detail", kwargs={"slug": campaign.slug})
    return client.get(url, params).content.decode()


def test_a_draft_shows_the_email_for_its_first_recipient_and_sends_nothing(
    signed_in, campaign
):
    ProfileFactory(email="ana@shop.example", first_name="Ana")
    ProfileFactory(email="ben@shop.example", first_name="Ben")
    ProfileFactory(email="zoe@elsewhere.example", first_name="Zoe")

    page = page_of(signed_in, campaign)

    assert "<strong data-preview-subject>Hello Ana</strong>" in page
    assert 'sandbox="" title="The email as this recipient would see it"' in page
    assert html.escape("<p>Hi Ana</p>") in page
    assert "<pre data-preview-text>Hi Ana\n</pre>" in page
    assert "zoe@elsewhere.example" not in page
    assert Message.objects.count() == 0
    assert OutboxEmail.objects.count() == 0


def test_another_recipient_can_be_chosen(signed_in, campaign):
    ProfileFactory(email="ana@shop.example", first_name="Ana")
    ben = ProfileFactory(email="ben@shop.example", first_name="Ben")

    page = page_of(signed_in, campaign, preview=str(ben.pk))

    assert "<strong data-preview-subject>Hello Ben</strong>" in page
    assert f'<option value="{ben.pk}" selected>ben@shop.example</option>' in page


def test_a_recipient_who_would_be_skipped_is_marked_so(signed_in, campaign):
    ana = ProfileFactory(
        email="ana@shop.example",
        first_name="Ana",
        subscription_status=SubscriptionStatus.UNSUBSCRIBED,
    )

    page = page_of(signed_in, campaign, preview=str(ana.pk))

    assert "ana@shop.example (will be skipped: Unsubscribed)</option>" in page
    assert (
        "data-preview-skip>This recipient will not be sent this email: Unsubscribed."
        in page
    )


def test_someone_not_in_the_segment_is_not_previewed(signed_in, campaign):
    ProfileFactory(email="ana@shop.example", first_name="Ana")
    outsider = ProfileFactory(email="zoe@elsewhere.example", first_name="Zoe")

    page = page_of(signed_in, campaign, preview=str(outsider.pk))

    assert "<strong data-preview-subject>Hello Ana</strong>" in page


def test_a_template_that_fails_for_the_recipient_says_why(signed_in, campaign):
    ProfileFactory(email="ana@shop.example", traits={"orders": 0})
    campaign.template = EmailTemplateFactory(
        html="<p>{{ 10 | divided_by: profile.orders }}</p>"
    )
    campaign.save()

    page = page_of(signed_in, campaign)

    assert (
        "data-preview-error>This email cannot be rendered: html, line 1: "
        "divided_by: can&#x27;t divide by 0</p>"
    ) in page


def test_an_empty_segment_says_so(signed_in, campaign):
    assert "data-preview-empty" in page_of(signed_in, campaign)


def test_a_campaign_already_sending_shows_no_preview(signed_in, campaign):
    ProfileFactory(email="ana@shop.example", first_name="Ana")
    campaign.status = CampaignStatus.SENDING
    campaign.save()

    assert "<h2>Preview</h2>" not in page_of(signed_in, campaign)


def test_sending_is_refused_while_the_email_fails_for_a_first_recipient(
    signed_in, campaign
):
    # given a template that fails for one of the segment's first recipients
    ProfileFactory(email="ana@shop.example", traits={"orders": 2})
    ProfileFactory(email="ben@shop.example", traits={"orders": 0})
    campaign.template = EmailTemplateFactory(
        html="<p>{{ 10 | divided_by: profile.orders }}</p>"
    )
    campaign.save()

    # when Send now is pressed
    url = reverse("campaign_send", kwargs={"slug": campaign.slug})
    response = signed_in.post(url, follow=True)

    # then nothing is queued, and the page says for whom and why
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.DRAFT
    assert Message.objects.count() == 0
    assert (
        "Not sent: the email cannot be rendered for ben@shop.example: html, line 1: "
        "divided_by: can&#x27;t divide by 0. Fix the template, then send."
    ) in response.content.decode()


def test_the_render_check_reaches_past_members_who_would_be_skipped(
    signed_in, campaign
):
    # given the segment's first members all unsubscribed, then one who would be
    # sent the email, for whom it cannot be rendered
    for number in range(25):
        ProfileFactory(
            email=f"gone{number}@shop.example",
            traits={"orders": 0},
            subscription_status=SubscriptionStatus.UNSUBSCRIBED,
        )
    ProfileFactory(email="ana@shop.example", traits={"orders": 0})
    campaign.template = EmailTemplateFactory(
        html="<p>{{ 10 | divided_by: profile.orders }}</p>"
    )
    campaign.save()

    url = reverse("campaign_send", kwargs={"slug": campaign.slug})
    response = signed_in.post(url, follow=True)

    assert Message.objects.count() == 0
    assert "cannot be rendered for ana@shop.example" in response.content.decode()


def test_the_counts_add_up_while_a_message_is_being_handed_over(signed_in, campaign):
    ana = ProfileFactory(email="ana@shop.example")
    ben = ProfileFactory(email="ben@shop.example")
    Message.objects.create(campaign=campaign, profile=ana, status="sending")
    Message.objects.create(campaign=campaign, profile=ben, status="pending")

    page = page_of(signed_in, campaign)

    assert (
        '<div class="figure">1</div><div class="label">being handed to the ESP</div>'
        in page
    )


def test_the_campaigns_page_says_where_campaigns_are_made(signed_in):
    page = signed_in.get(reverse("campaign_list")).content.decode()

    assert 'href="/admin/campaigns/emailtemplate/add/">new template</a>' in page
    assert 'href="/admin/campaigns/campaign/add/">new campaign</a>' in page


def test_the_dashboard_counts_the_suppressed(signed_in):
    from django.utils import timezone

    ProfileFactory(email="kept@example.com", subscription_status="subscribed")
    ProfileFactory(
        email="blocked@example.com",
        subscription_status="subscribed",
        suppressed_at=timezone.now(),
    )

    page = signed_in.get(reverse("dashboard")).content.decode()

    assert '<div class="figure bad" data-count="suppressed">1</div>' in page
