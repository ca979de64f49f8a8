"""The health counts keep refused items apart from warnings on stored events.

A retried batch stores its rows again; each item is counted once per code.
"""

import base64
import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils.timezone import now as timezone_now

from profiles.health import rejected_events_count, sources_health
from profiles.models import Event, RejectedEvent, WriteKey

pytestmark = pytest.mark.django_db

SOURCE = "segment:Shop site"
BATCH = {
    "batch": [
        # Refused: neither userId nor anonymousId.
        {"type": "track", "event": "Product Viewed", "messageId": "m-refused"},
        # Stored, with a warning: the email trait is no address.
        {
            "type": "identify",
            "userId": "usr_1001",
            "traits": {"email": "not-an-address"},
            "messageId": "m-warned",
        },
        {
            "type": "track",
            "userId": "usr_1001",
            "event": "Cart Viewed",
            "messageId": "m-stored",
        },
    ]
}


@pytest.fixture
def shop_key():
    WriteKey.objects.create(name="Shop site", key="shop-key")


def batch_send(client) -> dict:
    token = base64.b64encode(b"shop-key:").decode()
    response = client.post(
        "/v1/batch",
        data=json.dumps(BATCH),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Basic {token}",
    )
    assert response.status_code == 200
    return response.json()


def source_health(name: str) -> dict:
    return next(source for source in sources_health() if source["name"] == name)


def groups(rows: list[dict]) -> list[tuple[str, int]]:
    return [(row["code"], row["count"]) for row in rows]


def test_a_retried_batch_counts_each_refused_item_and_warning_once(client, shop_key):
    first = batch_send(client)
    batch_send(client)

    health = source_health(SOURCE)
    assert [r["code"] for r in first["rejected"]] == ["no_user_anon_id"]
    assert [w["code"] for w in first["warnings"]] == ["invalid_email_trait"]
    assert groups(health["rejections"]) == [("no_user_anon_id", 1)]
    assert groups(health["notices"]) == [("invalid_email_trait", 1)]
    assert health["rejected_last_hour"] == 1
    assert rejected_events_count() == {"refused": 1, "notices": 1}
    # Every attempt stays on record; only the count is distinct.
    assert RejectedEvent.objects.count() == 4
    assert Event.objects.count() == 2


def test_processing_notices_are_warnings_not_rejections(shop_key):
    rows = [
        ("merge_refused", "m-1"),
        ("email_taken", "m-2"),
        ("email_not_changed", "m-3"),
        ("trait_invalid:not_allowed", "m-4"),
        ("order_amount_unreadable", "m-5"),
        ("invalid_type", "m-6"),
    ]
    for code, message_id in rows:
        RejectedEvent.objects.create(
            source=SOURCE,
            message_id=message_id,
            code=code,
            message=f"About {message_id}.",
            received_at=timezone_now(),
        )

    health = source_health(SOURCE)

    assert groups(health["rejections"]) == [("invalid_type", 1)]
    assert sorted(groups(health["notices"])) == [
        ("email_not_changed", 1),
        ("email_taken", 1),
        ("merge_refused", 1),
        ("order_amount_unreadable", 1),
        ("trait_invalid:not_allowed", 1),
    ]
    assert health["rejected_last_hour"] == 1
    assert rejected_events_count() == {"refused": 1, "notices": 5}


def test_rows_without_a_message_id_each_count(shop_key):
    for _ in range(2):
        RejectedEvent.objects.create(
            source=SOURCE, code="invalid_json", message="x", received_at=timezone_now()
        )

    assert groups(source_health(SOURCE)["rejections"]) == [("invalid_json", 2)]


def test_the_pages_label_both_counts(client, marketer, shop_key):
    batch_send(client)
    batch_send(client)
    client.force_login(marketer)

    sources = client.get(reverse("sources_health")).content.decode()
    dashboard = client.get(reverse("dashboard")).content.decode()

    assert (
        '<tr data-code="no_user_anon_id"><td><code>no_user_anon_id</code></td>'
        "<td>1</td>" in sources
    )
    assert "Warnings on stored events, last 30 days" in sources
    assert (
        '<tr data-notice="invalid_email_trait"><td><code>invalid_email_trait</code>'
        "</td><td>1</td>" in sources
    )
    assert '<div class="figure bad" data-count="events_rejected">1</div>' in dashboard
    assert '<div class="figure" data-count="events_noticed">1</div>' in dashboard
    assert "warnings on stored events" in dashboard


def test_each_code_shows_its_newest_message_with_no_lookup_per_row(shop_key):
    from datetime import timedelta

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    start = timezone_now() - timedelta(minutes=10)
    for n, code in enumerate(["invalid_type", "invalid_type", "missing_event"] * 40):
        RejectedEvent.objects.create(
            source=SOURCE,
            code=code,
            message=f"{code} {n}",
            received_at=start + timedelta(seconds=n),
        )

    with CaptureQueriesContext(connection) as queries:
        rejections = source_health(SOURCE)["rejections"]

    assert [(r["code"], r["count"], r["message"]) for r in rejections] == [
        ("missing_event", 40, "missing_event 119"),
        ("invalid_type", 80, "invalid_type 118"),
    ]
    # A subquery in the grouping runs once per row: 50,000 refused items (one
    # request can send them) took the Sources page minutes.
    grouping = [
        q["sql"]
        for q in queries
        if "GROUP BY" in q["sql"] and "profiles_rejectedevent" in q["sql"]
    ]
    assert grouping
    assert not [sql for sql in grouping if "(SELECT" in sql]


ORDER_WARNINGS = [
    ("Order Completed", {"order_id": "1", "total": "abc"}),
    ("Order Completed", {"order_id": "2", "total": 1e-45}),
    ("Order Completed", {"order_id": "3", "total": "1e999"}),
    ("Order Completed", {"order_id": "4", "total": -5}),
    ("Order Completed", {"order_id": "5", "total": 5, "currency": "JPY"}),
    ("Order Refunded", {"total": 5}),
    ("Order Refunded", {"order_id": "1", "total": 5, "currency": "JPY"}),
    ("Order Refunded", {"order_id": "1", "total": "abc"}),
    ("Order Refunded", {"order_id": "1", "total": 1e-45}),
]


def test_every_warning_about_an_order_is_a_notice_not_a_refusal(client, shop_key):
    items = [
        {"type": "track", "userId": "u", "event": event, "properties": properties}
        for event, properties in ORDER_WARNINGS
    ]
    token = base64.b64encode(b"shop-key:").decode()

    answer = client.post(
        "/v1/batch",
        data=json.dumps({"batch": items}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Basic {token}",
    ).json()

    codes = [warning["code"] for warning in answer["warnings"]]
    assert len(set(codes)) == len(ORDER_WARNINGS)
    health = source_health(SOURCE)
    assert health["rejections"] == []
    assert sorted(groups(health["notices"])) == sorted((code, 1) for code in codes)


def test_an_event_placed_at_its_arrival_is_a_notice_not_a_refusal(client, shop_key):
    ahead = (timezone_now() + timedelta(hours=3)).isoformat()
    item = {"type": "track", "userId": "u", "event": "X", "timestamp": ahead}
    token = base64.b64encode(b"shop-key:").decode()

    answer = client.post(
        "/v1/batch",
        data=json.dumps({"batch": [item]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Basic {token}",
    ).json()

    assert [warning["code"] for warning in answer["warnings"]] == ["timestamp_ahead"]
    health = source_health(SOURCE)
    assert health["rejections"] == []
    assert groups(health["notices"]) == [("timestamp_ahead", 1)]
