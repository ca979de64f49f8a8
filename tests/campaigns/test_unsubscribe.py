"""RFC 8058 one-click unsubscribe, replaying the request shapes in the shared fixtures."""

import pytest

from campaigns.models import Message
from campaigns.sending import unsubscribe_token
from profiles.models import ConsentRecord, SubscriptionStatus
from tests.factories import CampaignFactory, ProfileFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def message():
    profile = ProfileFactory(email="ana.souza@example.com")
    return Message.objects.create(
        campaign=CampaignFactory(name="Spring sale"), profile=profile
    )


def http_body(load_fixture, name: str) -> tuple[str, bytes]:
    """Return the Content-Type and body of a raw HTTP request fixture."""
    raw = load_fixture(f"unsubscribe/{name}").replace(b"\r\n", b"\n")
    head, body = raw.split(b"\n\n", 1)
    headers = dict(
        line.decode().split(": ", 1) for line in head.splitlines()[1:] if b": " in line
    )
    content_type = headers["Content-Type"]
    if content_type.startswith("multipart/"):
        # Multipart bodies frame their parts with CRLF on the wire.
        body = body.replace(b"\n", b"\r\n")
    return content_type, body


@pytest.mark.parametrize(
    "fixture", ["one_click_post_urlencoded.http", "one_click_post_multipart.http"]
)
def test_a_one_click_post_unsubscribes_without_redirect_or_cookies(
    client, message, load_fixture, fixture
):
    content_type, body = http_body(load_fixture, fixture)
    url = f"/u/{unsubscribe_token(message)}"

    first = client.generic("POST", url, body, content_type=content_type)
    again = client.generic("POST", url, body, content_type=content_type)

    message.profile.refresh_from_db()
    assert first.status_code == 200
    assert again.status_code == 200
    assert "Location" not in first.headers
    assert message.profile.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert ConsentRecord.objects.filter(profile=message.profile).count() == 1


def test_a_link_scanner_get_only_shows_a_confirmation(client, message):
    response = client.get(
        f"/u/{unsubscribe_token(message)}",
        HTTP_USER_AGENT="Mozilla/5.0 (compatible; ExampleSafeLinks/1.0)",
    )

    message.profile.refresh_from_db()
    assert response.status_code == 200
    assert b'<form method="post">' in response.content
    assert message.profile.subscription_status == SubscriptionStatus.SUBSCRIBED
    # Which address, partly hidden.
    assert "from us at a•••@example.com." in response.content.decode()


def test_a_forged_token_gets_404_and_changes_nothing(client, message, load_fixture):
    content_type, body = http_body(load_fixture, "forged_token_post.http")
    forged = "v1.usr_1001.spring_sale_2025.Zm9yZ2VkLXRva2Vu"
    tampered = unsubscribe_token(message)[:-2] + "xx"

    responses = [
        client.generic("POST", f"/u/{token}", body, content_type=content_type)
        for token in (forged, tampered)
    ]

    message.profile.refresh_from_db()
    assert [r.status_code for r in responses] == [404, 404]
    assert message.profile.subscription_status == SubscriptionStatus.SUBSCRIBED
    assert ConsentRecord.objects.count() == 0
