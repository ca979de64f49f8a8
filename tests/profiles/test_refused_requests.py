"""Requests refused whole are counted by source, reason and hour, and shown on Sources.

Such a request stores nothing (the issue asks it of a bad Shopify signature), so
without these counts a feed whose key was revoked, or whose shop secret changed,
would only look quiet.
"""

import base64
import gzip
import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse

from profiles.health import sources_health
from profiles.keys import write_key_create, write_key_revoke
from profiles.models import Event, RefusedRequest, RejectedEvent, WebhookDelivery
from profiles.refusals import SOURCE_NO_KEY, request_refused_count

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 3, 14, 12, 30, tzinfo=UTC)
TRACK_BODY = {"userId": "usr_1001", "event": "Product Viewed", "messageId": "m-1"}


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def track(client, *, key: str | None, body: bytes | None = None, **headers: str):
    if key is not None:
        headers["HTTP_AUTHORIZATION"] = basic(key)
    return client.post(
        "/v1/track",
        data=body if body is not None else json.dumps(TRACK_BODY),
        content_type="application/json",
        **headers,
    )


def source_health(name: str) -> dict:
    return next(source for source in sources_health() if source["name"] == name)


def refused(name: str) -> list[tuple[str, int]]:
    return [(g["code"], g["count"]) for g in source_health(name)["refused_requests"]]


def section(html: str, source: str) -> str:
    start = html.index(f'data-source="{source}"')
    end = html.find("<section", start)
    return html[start : end if end != -1 else len(html)]


def test_a_revoked_keys_requests_are_counted_against_its_own_feed(signed_in):
    key = write_key_create(name="Shop site")
    write_key_revoke(write_key_id=key.pk)

    with time_machine.travel(NOW, tick=False):
        first = track(signed_in, key=key.key)
        track(signed_in, key=key.key)
        health = source_health("segment:Shop site")
        html = signed_in.get(reverse("sources_health")).content.decode()

    assert first.status_code == 401
    assert first.json()["code"] == "invalid_write_key"
    assert [(g["code"], g["count"]) for g in health["refused_requests"]] == [
        ("invalid_write_key", 2)
    ]
    assert health["refused_requests"][0]["message"] == first.json()["message"]
    assert health["refused_requests"][0]["last_at"] == NOW
    assert health["refused_recent"] == 2
    assert health["refused_warning"] is True
    assert Event.objects.count() == 0
    assert RejectedEvent.objects.count() == 0

    shop = section(html, "segment:Shop site")
    assert 'data-warning="refused"' in shop
    assert "2 requests refused whole since 11:00" in shop
    assert 'data-refused="invalid_write_key"' in shop


def test_requests_with_no_known_key_have_a_source_of_their_own(signed_in):
    track(signed_in, key="never-made")
    track(signed_in, key=None)

    html = signed_in.get(reverse("sources_health")).content.decode()

    assert refused(SOURCE_NO_KEY) == [("invalid_write_key", 2)]
    assert source_health(SOURCE_NO_KEY)["label"] == "Requests without a valid write key"
    no_key = section(html, SOURCE_NO_KEY)
    assert "Requests without a valid write key" in no_key
    assert 'data-refused="invalid_write_key"' in no_key
    # It has no feed of its own: no volume, lag or item rejections to show.
    assert "data-figure" not in no_key
    assert "Rejected, last 30 days" not in no_key


def test_a_key_named_like_the_no_key_feed_keeps_a_feed_of_its_own(signed_in):
    key = write_key_create(name="no valid key")

    track(signed_in, key=key.key, body=b"not json")
    track(signed_in, key="never-made")

    assert refused(SOURCE_NO_KEY) == [("invalid_write_key", 1)]
    assert refused("segment:no valid key") == [("invalid_json", 1)]
    assert source_health("segment:no valid key")["kind"] == "events"


def test_an_authorization_header_that_is_not_ascii_gets_the_json_401(client):
    response = client.post(
        "/v1/track",
        data=json.dumps(TRACK_BODY),
        content_type="application/json",
        HTTP_AUTHORIZATION="Basic \u00ff\u00fe",
    )

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_write_key"
    assert refused(SOURCE_NO_KEY) == [("invalid_write_key", 1)]


def test_a_source_that_refused_nothing_has_no_no_key_section(signed_in):
    write_key_create(name="Shop site")

    html = signed_in.get(reverse("sources_health")).content.decode()

    assert f'data-source="{SOURCE_NO_KEY}"' not in html
    assert "Nothing refused." in section(html, "segment:Shop site")


def test_a_body_refused_after_the_key_is_read_counts_against_that_key(client):
    key = write_key_create(name="Shop site")

    too_large = track(client, key=key.key, body=b"{" + b" " * 40_000 + b"}")
    unreadable = track(client, key=key.key, body=b"not json")
    bad_gzip = track(
        client, key=key.key, body=b"not gzip", HTTP_CONTENT_ENCODING="gzip"
    )
    stored = track(
        client,
        key=key.key,
        body=gzip.compress(json.dumps(TRACK_BODY).encode()),
        HTTP_CONTENT_ENCODING="gzip",
    )

    assert too_large.json()["code"] == "request_too_large"
    assert [unreadable.status_code, bad_gzip.status_code] == [400, 400]
    assert stored.status_code == 200
    assert sorted(refused("segment:Shop site")) == sorted(
        [
            (too_large.json()["code"], 1),
            (unreadable.json()["code"], 1),
            (bad_gzip.json()["code"], 1),
        ]
    )
    assert not RefusedRequest.objects.filter(source=SOURCE_NO_KEY).exists()


def test_a_key_in_the_body_of_an_unreadable_request_is_never_known(client):
    write_key_create(name="Shop site")

    response = track(client, key=None, body=b'{"writeKey": "')

    assert response.status_code == 400
    assert refused(SOURCE_NO_KEY) == [(response.json()["code"], 1)]


def test_counts_are_kept_by_the_hour_and_the_warning_reads_two_hours(client):
    with time_machine.travel(NOW - timedelta(hours=3), tick=False):
        track(client, key="old-key")
    with time_machine.travel(NOW - timedelta(hours=1), tick=False):
        track(client, key="old-key")
    with time_machine.travel(NOW, tick=False):
        track(client, key="old-key")
        track(client, key="old-key")
        health = source_health(SOURCE_NO_KEY)

    hours = RefusedRequest.objects.order_by("hour").values_list("hour", "count")
    assert list(hours) == [
        (datetime(2025, 3, 14, 9, tzinfo=UTC), 1),
        (datetime(2025, 3, 14, 11, tzinfo=UTC), 1),
        (datetime(2025, 3, 14, 12, tzinfo=UTC), 2),
    ]
    assert [(g["code"], g["count"]) for g in health["refused_requests"]] == [
        ("invalid_write_key", 4)
    ]
    # Since 11:00: the hour before this one, and this one so far.
    assert health["refused_recent"] == 3
    assert health["refused_recent_since"] == datetime(2025, 3, 14, 11, tzinfo=UTC)


def test_no_warning_once_the_refusals_are_two_hours_old(client):
    with time_machine.travel(NOW - timedelta(hours=2), tick=False):
        track(client, key="old-key")
    with time_machine.travel(NOW, tick=False):
        health = source_health(SOURCE_NO_KEY)

    assert health["refused_recent"] == 0
    assert health["refused_warning"] is False
    assert [(g["code"], g["count"]) for g in health["refused_requests"]] == [
        ("invalid_write_key", 1)
    ]


def test_counts_older_than_thirty_days_go_when_a_new_hour_begins():
    request_refused_count(
        source="shopify",
        code="invalid_signature",
        message="old",
        at=NOW - timedelta(days=31),
    )
    request_refused_count(
        source="shopify", code="invalid_signature", message="new", at=NOW
    )

    assert list(RefusedRequest.objects.values_list("message", "count")) == [("new", 1)]


def test_a_count_begun_by_another_request_first_is_added_to(monkeypatch):
    # The other request's row lands between this one's update and its insert: the
    # unique constraint refuses the insert, and the count goes on that row.
    from profiles import refusals

    def updated_nothing_then_raced(fields, *, message, at):
        if not RefusedRequest.objects.filter(**fields).exists():
            RefusedRequest.objects.create(**fields, count=5, last_at=at, message="x")
            return False
        return original(fields, message=message, at=at)

    original = refusals._counted
    monkeypatch.setattr(refusals, "_counted", updated_nothing_then_raced)

    request_refused_count(source="shopify", code="invalid_signature", message="m")

    assert list(RefusedRequest.objects.values_list("count", "message")) == [(6, "m")]


# Shopify ---------------------------------------------------------------------------

SHOPIFY_URL = "/webhooks/shopify"


@pytest.fixture
def shop_headers(load_fixture):
    return load_fixture("shopify/webhook_headers.json", as_json=True)


def deliver(client, load_fixture, headers: dict, name: str = "orders_create.json"):
    sent = dict(headers)
    sent.pop("Content-Type", None)
    return client.post(
        SHOPIFY_URL,
        data=load_fixture(f"shopify/{name}"),
        content_type="application/json",
        headers=sent,
    )


def test_a_shop_whose_signatures_fail_shows_on_the_shopify_feed(
    signed_in, load_fixture, shop_headers
):
    headers = shop_headers["bad_signature_example"]

    with time_machine.travel(NOW, tick=False):
        responses = [deliver(signed_in, load_fixture, headers) for _ in range(3)]
        html = signed_in.get(reverse("sources_health")).content.decode()
        groups = refused("shopify")

    assert {response.status_code for response in responses} == {401}
    assert WebhookDelivery.objects.count() == 0
    assert groups == [("invalid_signature", 3)]
    shop = section(html, "shopify")
    assert "3 requests refused whole since 11:00" in shop
    assert "X-Shopify-Hmac-Sha256 does not match the body." in shop


def test_a_shop_with_no_secret_set_counts_its_refusals(
    client, load_fixture, shop_headers, settings
):
    settings.BESPOKE_SHOPIFY_WEBHOOK_SECRETS = []

    response = deliver(
        client, load_fixture, shop_headers["deliveries"]["orders_create.json"]
    )

    assert response.status_code == 401
    assert refused("shopify") == [("invalid_signature", 1)]
    assert source_health("shopify")["unconfigured"] is True


def test_a_signed_delivery_refused_for_its_headers_is_counted(
    client, load_fixture, shop_headers
):
    headers = dict(shop_headers["deliveries"]["orders_create.json"])
    del headers["X-Shopify-Webhook-Id"]

    response = deliver(client, load_fixture, headers)

    assert response.status_code == 400
    assert refused("shopify") == [("missing_webhook_id", 1)]


def test_an_accepted_delivery_and_a_get_count_as_no_refusal(
    client, load_fixture, shop_headers
):
    accepted = deliver(
        client, load_fixture, shop_headers["deliveries"]["orders_create.json"]
    )
    wrong_method = client.get(SHOPIFY_URL)

    assert accepted.status_code == 200
    assert wrong_method.status_code == 405
    assert RefusedRequest.objects.count() == 0


def test_the_admin_lists_the_counts_and_changes_none(admin_client):
    request_refused_count(source="shopify", code="invalid_signature", message="m")
    row = RefusedRequest.objects.get()

    listing = admin_client.get(reverse("admin:profiles_refusedrequest_changelist"))
    change = admin_client.post(
        reverse("admin:profiles_refusedrequest_change", args=[row.pk]),
        {"count": "0"},
    )

    assert listing.status_code == 200
    assert "invalid_signature" in listing.content.decode()
    assert change.status_code == 403
    assert RefusedRequest.objects.get().count == 1
