"""An event that arrives through the API moves its profile into a segment at once."""

import base64
import json

import pytest

from profiles.processing import events_process_pending
from segments.models import SegmentMembership
from segments.services import segment_save
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db

AUTH = "Basic " + base64.b64encode(b"test-env-write-key:").decode()


def track(client, payload: dict) -> None:
    response = client.post(
        "/v1/track",
        data=json.dumps(payload),
        content_type="application/json",
        HTTP_AUTHORIZATION=AUTH,
    )
    assert response.status_code == 200


def test_an_order_moves_the_buyer_into_the_segment_and_only_that_segment(
    client, tasks_inline, django_capture_on_commit_callbacks
):
    ProfileFactory(email="buyer@example.com")
    buyers = segment_save(name="Buyers", rule={"event": "Order Completed"})
    french = segment_save(
        name="French", rule={"attribute": "country_code", "op": "eq", "value": "FR"}
    )
    identify = {
        "type": "identify",
        "userId": "u-1",
        "traits": {"email": "buyer@example.com"},
    }

    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            "/v1/identify",
            data=json.dumps(identify),
            content_type="application/json",
            HTTP_AUTHORIZATION=AUTH,
        )
        events_process_pending()
    with django_capture_on_commit_callbacks(execute=True):
        track(
            client,
            {"userId": "u-1", "event": "Order Completed", "properties": {"total": 20}},
        )
        events_process_pending()

    stays = SegmentMembership.objects.filter(profile__email="buyer@example.com")
    assert list(stays.values_list("segment_id", "left_at")) == [(buyers.pk, None)]
    assert not stays.filter(segment=french).exists()


def test_an_unsubscribe_and_an_import_move_profiles_out_of_and_into_segments(
    tasks_inline, django_capture_on_commit_callbacks
):
    from django.utils import timezone

    from profiles.importing import contact_import_file
    from profiles.models import SubscriptionStatus
    from profiles.services import consent_record
    from segments.membership import segment_refresh

    reader = ProfileFactory(email="reader@example.com")
    subscribed = segment_save(name="Subscribed", rule={"consent": "subscribed"})
    swedes = segment_save(
        name="Swedes", rule={"attribute": "country_code", "op": "eq", "value": "SE"}
    )
    segment_refresh(segment_id=subscribed.pk)

    with django_capture_on_commit_callbacks(execute=True):
        consent_record(
            profile=reader,
            status=SubscriptionStatus.UNSUBSCRIBED,
            source="unsubscribe_link",
            occurred_at=timezone.now(),
        )
    with django_capture_on_commit_callbacks(execute=True):
        contact_import_file(
            filename="swedes.csv", data=b"Email,Country\nsven@example.com,SE\n"
        )

    open_stays = SegmentMembership.objects.filter(left_at=None)
    assert not open_stays.filter(segment=subscribed, profile=reader).exists()
    assert list(
        open_stays.filter(segment=swedes).values_list("profile__email", flat=True)
    ) == ["sven@example.com"]
