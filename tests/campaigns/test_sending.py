from datetime import timedelta
from unittest import mock

import pytest
import requests
from anymail.exceptions import AnymailAPIError
from django.core.exceptions import ValidationError
from django.utils import timezone

from campaigns.models import (
    Campaign,
    CampaignStatus,
    Message,
    MessageStatus,
    OutboxEmail,
    from_address_check,
)
from campaigns.selectors import campaign_message_counts
from campaigns.sending import (
    CampaignNotStartable,
    campaign_send_all,
    campaign_send_batch,
    campaign_start,
    messages_reconcile_stuck,
)
from profiles.models import ProfileTag, SubscriptionStatus, SuppressionReason
from profiles.services import suppression_add
from tests.factories import CampaignFactory, ProfileFactory, SegmentFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def audience():
    """Everyone tagged 'Spring': one of each kind of recipient."""
    people = {
        "ok": ProfileFactory(
            email="ok@example.com", first_name="Ana", country_code="BR"
        ),
        "unsub": ProfileFactory(
            email="unsub@example.com",
            subscription_status=SubscriptionStatus.UNSUBSCRIBED,
        ),
        "cleaned": ProfileFactory(
            email="cleaned@example.com", subscription_status=SubscriptionStatus.CLEANED
        ),
        "never": ProfileFactory(
            email="never@example.com",
            subscription_status=SubscriptionStatus.NOT_SUBSCRIBED,
        ),
        "suppressed": ProfileFactory(email="complained@example.com"),
        "anonymous": ProfileFactory(email=None),
    }
    for profile in people.values():
        ProfileTag.objects.create(profile=profile, name="Spring")
    suppression_add(
        email_key="complained@example.com",
        reason=SuppressionReason.COMPLAINT,
        source="test",
    )
    return people


@pytest.fixture
def campaign(audience):
    segment = SegmentFactory(
        rule={"attribute": "tags", "op": "contains", "value": "Spring"}
    )
    return CampaignFactory(
        segment=segment,
        template__subject="{{ profile.first_name | default: 'Hello' }}, spring is here",
        template__html=(
            "<p>{% if profile.country_code == 'BR' %}Frete grátis{% else %}Hi{% endif %}</p>"
            "<a href='{{ unsubscribe_url }}'>Unsubscribe</a>"
        ),
    )


def test_it_sends_only_to_those_who_may_be_emailed(campaign, audience):
    campaign_start(campaign_id=campaign.pk)
    report = campaign_send_all(campaign_id=campaign.pk)

    assert report.sent == 1
    assert report.skipped == {
        "unsubscribed": 1,
        "cleaned": 1,
        "not_subscribed": 1,
        "suppressed": 1,
        "no_email": 1,
    }
    outbox = list(OutboxEmail.objects.all())
    assert len(outbox) == 1
    assert outbox[0].to == ["Ana <ok@example.com>"]
    assert outbox[0].subject == "Ana, spring is here"
    assert "Frete grátis" in outbox[0].html
    # No text part in the template: it is made from the HTML, links kept.
    unsubscribe_url = outbox[0].headers["List-Unsubscribe"].strip("<>")
    assert outbox[0].text == f"Frete grátis\n\n[Unsubscribe]({unsubscribe_url})\n"
    assert outbox[0].headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert (
        outbox[0]
        .headers["List-Unsubscribe"]
        .startswith("<https://bespoke.example.com/u/")
    )
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.SENT


def test_consent_is_checked_at_send_time_not_when_the_audience_was_chosen(
    campaign, audience
):
    campaign_start(campaign_id=campaign.pk)
    ok = audience["ok"]
    ok.subscription_status = SubscriptionStatus.UNSUBSCRIBED
    ok.save()

    report = campaign_send_all(campaign_id=campaign.pk)

    assert report.sent == 0
    assert OutboxEmail.objects.count() == 0
    assert Message.objects.get(profile=ok).skip_reason == "unsubscribed"


def test_a_campaign_cannot_be_started_twice(campaign):
    campaign_start(campaign_id=campaign.pk)

    with pytest.raises(CampaignNotStartable):
        campaign_start(campaign_id=campaign.pk)
    assert Message.objects.filter(campaign=campaign).count() == 6


def test_repeated_batches_and_a_second_worker_never_send_twice(campaign):
    campaign_start(campaign_id=campaign.pk)
    campaign_send_all(campaign_id=campaign.pk)

    again = campaign_send_batch(campaign_id=campaign.pk)
    Message.objects.filter(campaign=campaign).update(status=MessageStatus.SENDING)
    Campaign = type(campaign)
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.SENDING)
    third = campaign_send_batch(campaign_id=campaign.pk)

    assert again.sent == 0
    assert third.sent == 0
    assert OutboxEmail.objects.count() == 1


def test_an_esp_refusal_is_recorded_as_failed(campaign):
    campaign_start(campaign_id=campaign.pk)
    response = requests.Response()
    response.status_code, response.reason = 400, "Bad Request"
    response._content = b'{"message": "ESP said no"}'
    refusal = AnymailAPIError("Send refused", status_code=400, response=response)

    with mock.patch(
        "campaigns.outbox.OutboxEmailBackend.post_to_esp", side_effect=refusal
    ):
        report = campaign_send_all(campaign_id=campaign.pk)

    assert report.failed == 1
    failed = Message.objects.get(status=MessageStatus.FAILED)
    assert "ESP said no" in failed.error


def test_a_message_left_mid_send_is_marked_unknown_not_resent(campaign, audience):
    campaign_start(campaign_id=campaign.pk)
    message = Message.objects.get(profile=audience["ok"])
    Message.objects.filter(pk=message.pk).update(
        status=MessageStatus.SENDING, claimed_at=timezone.now() - timedelta(hours=1)
    )

    reconciled = messages_reconcile_stuck()
    campaign_send_all(campaign_id=campaign.pk)

    assert reconciled == 1
    message.refresh_from_db()
    assert message.status == MessageStatus.UNKNOWN
    assert OutboxEmail.objects.count() == 0


def test_an_esp_that_never_answered_leaves_the_outcome_unknown(campaign):
    campaign_start(campaign_id=campaign.pk)
    lost = AnymailAPIError("Connection reset while sending")

    with mock.patch(
        "campaigns.outbox.OutboxEmailBackend.post_to_esp", side_effect=lost
    ):
        report = campaign_send_all(campaign_id=campaign.pk)

    assert report.unknown == 1
    assert report.sent == 0
    assert Message.objects.filter(status=MessageStatus.UNKNOWN).count() == 1


def test_a_line_break_in_a_name_is_a_space_in_the_address(campaign, audience):
    eve = ProfileFactory(email="crlf@example.com", first_name="Eve\r\nBcc: x@y.z")
    ProfileTag.objects.create(profile=eve, name="Spring")

    campaign_start(campaign_id=campaign.pk)
    report = campaign_send_all(campaign_id=campaign.pk)

    assert report.sent == 2
    (to,) = [t for e in OutboxEmail.objects.all() for t in e.to if "crlf@" in t]
    assert "\n" not in to
    assert "\r" not in to
    assert to.endswith("<crlf@example.com>")


def test_a_message_that_cannot_be_built_fails_and_the_batch_goes_on(campaign, audience):
    with mock.patch(
        "campaigns.sending._recipient", side_effect=ValueError("bad address")
    ):
        campaign_start(campaign_id=campaign.pk)
        report = campaign_send_all(campaign_id=campaign.pk)

    assert report.failed == 1
    message = Message.objects.get(profile=audience["ok"])
    assert message.status == MessageStatus.FAILED
    assert message.error == "Not sent: bad address"


def test_it_skips_an_address_that_needs_smtputf8_when_the_esp_lacks_it(
    campaign, audience, settings
):
    # given an ESP without SMTPUTF8 and a subscribed member with a non-ASCII local part
    settings.BESPOKE_SMTPUTF8 = False
    jorg = ProfileFactory(email="sendtest.jörg@example.com", first_name="Jörg")
    ProfileTag.objects.create(profile=jorg, name="Spring")

    # when the campaign is sent
    campaign_start(campaign_id=campaign.pk)
    report = campaign_send_all(campaign_id=campaign.pk)

    # then that member is skipped with a reason that says why, and nothing is sent
    assert (report.sent, report.failed) == (1, 0)
    assert report.skipped["needs_smtputf8"] == 1
    message = Message.objects.get(profile=jorg)
    assert message.status == MessageStatus.SKIPPED
    assert message.skip_reason == "needs_smtputf8"
    assert message.error == (
        "The address has non-ASCII characters before the @, which needs an ESP "
        "that supports SMTPUTF8; set BESPOKE_SMTPUTF8 if yours does."
    )
    assert [e.to for e in OutboxEmail.objects.all()] == [["Ana <ok@example.com>"]]
    counts = campaign_message_counts(campaign)
    assert counts["skip_reasons"]["needs_smtputf8"] == 1
    # The campaign page names reasons as the message rows do.
    assert ("Address needs an ESP with SMTPUTF8", 1) in counts["skip_reason_rows"]


def test_it_sends_to_an_address_that_needs_smtputf8_when_the_esp_supports_it(
    campaign, audience, settings
):
    settings.BESPOKE_SMTPUTF8 = True
    jorg = ProfileFactory(email="sendtest.jörg@example.com", first_name="Jörg")
    ProfileTag.objects.create(profile=jorg, name="Spring")

    campaign_start(campaign_id=campaign.pk)
    report = campaign_send_all(campaign_id=campaign.pk)

    assert (report.sent, report.failed) == (2, 0)
    message = Message.objects.get(profile=jorg)
    assert (message.status, message.error) == (MessageStatus.SENT, "")
    assert message.to_email == "sendtest.jörg@example.com"
    assert sorted(t for e in OutboxEmail.objects.all() for t in e.to) == [
        "Ana <ok@example.com>",
        "Jörg <sendtest.jörg@example.com>",
    ]


def test_a_from_no_message_can_be_sent_from_is_refused_on_save():
    with pytest.raises(ValidationError, match="not an address a message can be sent"):
        from_address_check("Bad From <<>>")
    from_address_check("Spring shop <shop@example.com>")
    with pytest.raises(ValidationError, match="holds 2 addresses"):
        from_address_check("a@example.com, b@example.com")


def test_messages_anymail_refuses_before_sending_failed_not_unknown(campaign):
    # A From saved before it was checked: nothing ever reaches the ESP, so the
    # messages failed, with the reason, and are not left 'outcome unknown'.
    Campaign.objects.filter(pk=campaign.pk).update(from_email="Bad From <<>>")
    campaign_start(campaign_id=campaign.pk)

    report = campaign_send_all(campaign_id=campaign.pk)

    assert (report.failed, report.unknown, report.sent) == (1, 0, 0)
    failed = Message.objects.get(status=MessageStatus.FAILED)
    assert failed.error.startswith("Not sent: Invalid email address")
