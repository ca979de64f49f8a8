"""The tracking API as Segment's browser library, analytics.js, calls it.

analytics.js posts each call to the first letter of its type (/v1/t, /v1/i, ...)
and a batch to /v1/b, as text/plain with the write key in the body, from the
marketer's site: another origin, so the answers carry CORS headers.
"""

import json

import pytest

from profiles.models import Event

pytestmark = pytest.mark.django_db

KEY = "test-env-write-key"
SITE = "https://shop.example.com"


def browser_post(client, path: str, body: dict, **headers):
    return client.post(
        path,
        data=json.dumps({**body, "writeKey": KEY}),
        content_type="text/plain;charset=UTF-8",
        HTTP_ORIGIN=SITE,
        **headers,
    )


@pytest.mark.parametrize(
    ("letter", "body", "kind"),
    [
        ("t", {"event": "Product Viewed", "properties": {"sku": "A-1"}}, "track"),
        ("i", {"traits": {"email": "ana@example.com"}}, "identify"),
        ("p", {"name": "Home", "properties": {"path": "/"}}, "page"),
        ("s", {"name": "Home"}, "screen"),
        ("g", {"groupId": "acme"}, "group"),
        ("a", {"previousId": "anon-1"}, "alias"),
    ],
)
def test_each_call_to_its_letter_is_stored_as_its_type(client, letter, body, kind):
    sent = {**body, "userId": "usr_1", "messageId": f"ajs-{letter}"}

    response = browser_post(client, f"/v1/{letter}", sent)

    assert response.status_code == 200, response.content
    assert response["Access-Control-Allow-Origin"] == "*"
    event = Event.objects.get()
    assert (event.type, event.message_id) == (kind, f"ajs-{letter}")


def test_a_batch_to_b_is_stored_whole(client):
    batch = [
        {"type": "page", "anonymousId": "anon-1", "messageId": "ajs-1"},
        {"type": "track", "anonymousId": "anon-1", "event": "Cart Viewed"},
    ]

    response = browser_post(
        client, "/v1/b", {"batch": batch, "sentAt": "2026-01-01T00:00:00Z"}
    )

    assert response.status_code == 200, response.content
    assert response.json()["stored"] == 2


def test_a_refusal_is_readable_by_the_page_that_sent_it(client):
    response = client.post(
        "/v1/t",
        data=json.dumps({"writeKey": "revoked-long-ago", "userId": "u", "event": "E"}),
        content_type="text/plain",
        HTTP_ORIGIN=SITE,
    )

    assert response.status_code == 401
    assert response["Access-Control-Allow-Origin"] == "*"
    assert response.json()["code"]


def test_a_preflight_is_answered_for_the_headers_a_site_may_add(client):
    response = client.options(
        "/v1/batch",
        HTTP_ORIGIN=SITE,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type, "
        "content-encoding",
    )

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response["Access-Control-Allow-Methods"]
    allowed = {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "content-encoding"} <= allowed
    assert not Event.objects.exists()


def test_the_apps_own_pages_are_not_opened_to_other_sites(client):
    response = client.get("/login/", HTTP_ORIGIN=SITE)

    assert "Access-Control-Allow-Origin" not in response
