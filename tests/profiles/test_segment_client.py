"""The real segment-analytics-python client against a live Bespoke server."""

import pytest
from segment.analytics.client import Client
from segment.analytics.request import APIError

from config.celery import app as celery_app
from profiles.models import Event, IdentityKind, ProfileIdentity

ENV_KEY = "test-env-write-key"


@pytest.fixture
def celery_eager():
    # Processing runs in the server thread right after the request commits.
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


@pytest.fixture
def segment_client(live_server, transactional_db, celery_eager):
    clients = []

    def make(*, key: str = ENV_KEY, **options) -> Client:
        client = Client(key, host=live_server.url, **options)
        clients.append(client)
        return client

    yield make
    # In sync mode the client has no consumer threads, and shutdown() fails on that.
    for client in clients:
        if not client.sync_mode:
            client.shutdown()


@pytest.mark.parametrize("use_gzip", [False, True])
def test_the_client_delivers_identify_and_track(segment_client, use_gzip):
    client = segment_client(sync_mode=True, gzip=use_gzip)

    client.identify(
        "usr_7001",
        {"email": "Noah.Wilson@example.com", "firstName": "Noah"},
        message_id=f"client-identify-{use_gzip}",
    )
    client.track(
        "usr_7001",
        "Product Viewed",
        {"product_id": "SKU-RAIN-01", "price": 89.0},
        message_id=f"client-track-{use_gzip}",
    )

    events = {event.message_id: event for event in Event.objects.all()}
    assert sorted(events) == [f"client-identify-{use_gzip}", f"client-track-{use_gzip}"]
    assert events[f"client-track-{use_gzip}"].properties == {
        "product_id": "SKU-RAIN-01",
        "price": 89.0,
    }
    assert events[f"client-track-{use_gzip}"].context["library"]["name"] == (
        "analytics-python"
    )
    profile = ProfileIdentity.objects.get(
        kind=IdentityKind.USER_ID, value="usr_7001"
    ).profile
    assert profile.email == "noah.wilson@example.com"
    assert profile.first_name == "Noah"
    assert (
        Event.objects.filter(profile=profile, processed_at__isnull=False).count() == 2
    )


def test_the_background_client_batches_into_one_request(segment_client):
    client = segment_client(gzip=True, upload_interval=0.05)

    for n in range(3):
        client.page(anonymous_id="anon-client", name=f"Page {n}", message_id=f"bg-{n}")
    client.flush()

    assert Event.objects.filter(message_id__startswith="bg-").count() == 3
    assert ProfileIdentity.objects.filter(value="anon-client").count() == 1


def test_a_wrong_key_reaches_on_error_with_our_code(segment_client):
    errors = []
    client = segment_client(
        key="not-a-key",
        on_error=lambda error, batch: errors.append((error, batch)),
        upload_interval=0.05,
    )

    client.track("usr_7002", "Product Viewed", message_id="refused-1")
    client.flush()

    assert len(errors) == 1
    error, batch = errors[0]
    assert isinstance(error, APIError)
    assert (error.status, error.code) == (401, "invalid_write_key")
    assert error.message == (
        "A valid write key is required (HTTP Basic or 'writeKey')."
    )
    assert [message["messageId"] for message in batch] == ["refused-1"]
    assert Event.objects.count() == 0


def test_a_wrong_key_raises_in_sync_mode(segment_client):
    client = segment_client(key="not-a-key", sync_mode=True)

    with pytest.raises(APIError) as caught:
        client.identify("usr_7003", {"firstName": "Olivia"})

    assert caught.value.code == "invalid_write_key"
    assert Event.objects.count() == 0
