"""A real Celery worker, on the Redis broker, sends a campaign that a request started."""

import pytest

from campaigns.models import CampaignStatus, MessageStatus, OutboxEmail
from campaigns.sending import campaign_start
from profiles.models import SubscriptionStatus
from tests.conftest import wait_for
from tests.factories import CampaignFactory, ProfileFactory, SegmentFactory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_worker_sends_every_batch_and_finishes_the_campaign(
    celery_worker_own_queue, settings
):
    settings.BESPOKE_SEND_BATCH_SIZE = 2
    for n in range(5):
        ProfileFactory(email=f"reader{n}@example.com", country_code="FR")
    ProfileFactory(
        email="gone@example.com",
        country_code="FR",
        subscription_status=SubscriptionStatus.UNSUBSCRIBED,
    )
    campaign = CampaignFactory(
        segment=SegmentFactory(
            rule={"attribute": "country_code", "op": "eq", "value": "FR"}
        )
    )

    created = campaign_start(campaign_id=campaign.pk)

    def finished() -> bool:
        campaign.refresh_from_db()
        return campaign.status == CampaignStatus.SENT

    assert created == 6
    assert wait_for(finished), "the worker did not finish the campaign"
    assert OutboxEmail.objects.count() == 5
    assert campaign.messages.filter(status=MessageStatus.SENT).count() == 5
    assert (
        campaign.messages.get(profile__email="gone@example.com").skip_reason
        == "unsubscribed"
    )
