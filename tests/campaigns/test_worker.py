"""A real Celery worker, on the Redis broker, sends a campaign that a request started."""

import time

import pytest
from celery.contrib.testing.worker import start_worker

from campaigns.models import CampaignStatus, MessageStatus, OutboxEmail
from campaigns.sending import campaign_start
from config.celery import app
from profiles.models import SubscriptionStatus
from tests.factories import CampaignFactory, ProfileFactory, SegmentFactory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

WAIT_SECONDS = 30


@pytest.fixture
def worker():
    app.control.purge()
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        yield


def wait_for(predicate) -> bool:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_worker_sends_every_batch_and_finishes_the_campaign(worker, settings):
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
