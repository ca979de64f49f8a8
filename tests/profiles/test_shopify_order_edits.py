"""An order edited in the shop counts at what it is worth after the edit.

Shopify sends each version of an order (`orders/updated`); an edit that changes what
the order comes to before its refunds (`current_total_price` plus what its refunds
returned) writes an `Order Updated`, and lifetime value and the average take the
order's latest amount. An edit that removes an item and refunds it lowers the value
once, whichever of the two arrives first.
"""

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.urls import reverse

from profiles.models import Event, Profile, ShopOrder
from profiles.processing import events_process_pending
from profiles.processing_traits import (
    COMPUTED_FIELDS,
    TraitsRefresh,
    _refresh_in_python,
)

pytestmark = pytest.mark.django_db

URL = "/webhooks/shopify"
SECRET = b"test_shopify_webhook_secret_DO_NOT_USE"
BEN = "ben.okafor@example.net"


@pytest.fixture(autouse=True)
def shop_secret(settings):
    settings.BESPOKE_SHOPIFY_WEBHOOK_SECRETS = [SECRET.decode()]


def _deliver(client, order: dict, *, topic: str, webhook_id: str) -> None:
    body = json.dumps(order).encode()
    signature = hmac.new(SECRET, body, hashlib.sha256).digest()
    response = client.post(
        URL,
        data=body,
        content_type="application/json",
        headers={
            "X-Shopify-Topic": topic,
            "X-Shopify-Webhook-Id": webhook_id,
            "X-Shopify-Shop-Domain": "example-outfitters.myshopify.com",
            "X-Shopify-Hmac-Sha256": base64.b64encode(signature).decode(),
        },
    )
    assert response.status_code == 200, response.content


def _figures() -> tuple:
    ben = Profile.objects.get(email=BEN)
    return ben.lifetime_value, ben.order_count, ben.average_order_value


def _edited(order: dict) -> dict:
    edited = json.loads(json.dumps(order))
    daypack = json.loads(json.dumps(order["line_items"][0]))
    daypack["id"] = daypack["id"] + 1
    edited["line_items"].append(daypack)
    edited["subtotal_price"] = "252.65"
    edited["total_line_items_price"] = "267.50"
    edited["total_price"] = "270.81"
    edited["current_total_price"] = "270.81"
    edited["updated_at"] = "2025-03-15T10:00:00-05:00"
    return edited


def test_an_order_edited_in_the_shop_counts_its_new_total(client, load_fixture):
    # Given Ben's order, counted at 152.29
    order = load_fixture("shopify/orders_create.json", as_json=True)
    _deliver(client, order, topic="orders/create", webhook_id="create")
    events_process_pending()
    assert Profile.objects.get(email=BEN).lifetime_value == Decimal("152.29")

    # When the merchant edits the order and the customer pays 270.81
    _deliver(client, _edited(order), topic="orders/updated", webhook_id="edit")
    events_process_pending()

    # Then the stored order and Ben's figures agree on it
    assert ShopOrder.objects.get().total == Decimal("270.81")
    ben = Profile.objects.get(email=BEN)
    assert (ben.lifetime_value, ben.order_count, ben.average_order_value) == (
        Decimal("270.81"),
        1,
        Decimal("270.81"),
    )


def _item_removed_and_refunded(order: dict, *, refund_id: int) -> dict:
    # The merchant takes the daypack's second unit off (52.29 with its tax and
    # share of shipping) and pays it back: Shopify's current total drops, the
    # original total stays, and the version carries the refund.
    edited = json.loads(json.dumps(order))
    edited["current_total_price"] = "100.00"
    edited["updated_at"] = "2025-03-15T10:00:00-05:00"
    edited["refunds"] = [_refund(order, refund_id)]
    return edited


def _refund(order: dict, refund_id: int) -> dict:
    return {
        "id": refund_id,
        "order_id": order["id"],
        "created_at": "2025-03-15T10:00:00-05:00",
        "transactions": [
            {
                "kind": "refund",
                "status": "success",
                "amount": "52.29",
                "currency": "USD",
            }
        ],
    }


def test_an_edit_that_removes_an_item_and_refunds_it_lowers_the_value_once(
    client, load_fixture
):
    order = load_fixture("shopify/orders_create.json", as_json=True)
    _deliver(client, order, topic="orders/create", webhook_id="create")
    events_process_pending()

    _deliver(
        client,
        _item_removed_and_refunded(order, refund_id=801),
        topic="orders/updated",
        webhook_id="edit",
    )
    events_process_pending()

    # Worth 152.29 before its refunds still: no edit is stored, the refund is.
    assert not Event.objects.filter(event="Order Updated").exists()
    assert _figures() == (Decimal("100.00"), 1, Decimal("100.00"))

    # The refund told again on its own topic changes nothing more.
    _deliver(client, _refund(order, 801), topic="refunds/create", webhook_id="refund")
    events_process_pending()
    assert _figures() == (Decimal("100.00"), 1, Decimal("100.00"))


def test_each_version_that_changes_the_worth_is_stored_once_and_the_latest_counts(
    client, load_fixture
):
    admin_client = Client()
    order = load_fixture("shopify/orders_create.json", as_json=True)
    _deliver(client, order, topic="orders/create", webhook_id="create")
    edited = _edited(order)
    _deliver(client, edited, topic="orders/updated", webhook_id="edit")
    # The same version again, as orders/paid and as Shopify's retry.
    _deliver(client, edited, topic="orders/paid", webhook_id="edit-paid")
    _deliver(client, edited, topic="orders/updated", webhook_id="edit-retry")
    events_process_pending()

    edits = Event.objects.filter(event="Order Updated")
    assert [e.properties["total"] for e in edits] == [270.81]
    assert edits.get().properties["previous_total"] == 152.29
    assert _figures() == (Decimal("270.81"), 1, Decimal("270.81"))
    ben = Profile.objects.get(email=BEN)
    admin_client.force_login(User.objects.create_superuser("admin", "", "x"))
    page = admin_client.get(reverse("profile_detail", kwargs={"pk": ben.pk}))
    timeline = page.content.decode()
    assert '<span class="muted">total</span> 270.81 USD' in timeline
    assert '<span class="muted">was</span> 152.29' in timeline

    # Edited back: the second daypack goes again.
    back = json.loads(json.dumps(order))
    back["updated_at"] = "2025-03-16T10:00:00-05:00"
    _deliver(client, back, topic="orders/updated", webhook_id="back")
    events_process_pending()

    assert Event.objects.filter(event="Order Updated").count() == 2
    assert _figures() == (Decimal("152.29"), 1, Decimal("152.29"))
    ben = Profile.objects.get(email=BEN)
    # The merchant's edit is no sign of Ben, and the order keeps its time.
    placed = datetime(2025, 3, 14, 14, 9, 42, tzinfo=UTC)
    assert ben.first_order_at == ben.last_order_at == placed
    assert ben.last_seen_at == placed


def test_the_python_refresh_reads_edits_as_the_sql_does(client, load_fixture):
    if connection.vendor != "postgresql":
        pytest.skip("compares the PostgreSQL statement with the Python fallback")
    order = load_fixture("shopify/orders_create.json", as_json=True)
    _deliver(client, order, topic="orders/create", webhook_id="create")
    _deliver(client, _edited(order), topic="orders/updated", webhook_id="edit")
    events_process_pending()
    ben = Profile.objects.get(email=BEN)
    by_sql = Profile.objects.values(*COMPUTED_FIELDS).get(pk=ben.pk)
    Profile.objects.filter(pk=ben.pk).update(
        lifetime_value=0, order_count=0, average_order_value=None, last_seen_at=None
    )

    _refresh_in_python(
        TraitsRefresh(profile_ids={ben.pk}, full_profile_ids={ben.pk}),
        now=ben.engagement_at,
    )

    by_python = Profile.objects.values(*COMPUTED_FIELDS).get(pk=ben.pk)
    assert by_python == by_sql
    assert by_sql["lifetime_value"] == Decimal("270.81")


@pytest.mark.parametrize("path", ["sql", "python"])
def test_the_sites_order_updated_and_an_edit_with_no_order_count_for_nothing(
    client, load_fixture, path
):
    if path == "sql" and connection.vendor != "postgresql":
        pytest.skip("the chunk statement is PostgreSQL's")
    order = load_fixture("shopify/orders_create.json", as_json=True)
    _deliver(client, order, topic="orders/create", webhook_id="create")
    events_process_pending()
    ben = Profile.objects.get(email=BEN)
    shown = {"order_id": str(order["id"]), "total": 999, "currency": "USD"}
    # The site's Order Updated of the order (the spec's, before or after it was
    # placed) is kept, and changes no figure; nor does the shop's edit of an order
    # no report placed.
    Event.objects.create(
        message_id="site-edit", type="track", event="Order Updated",
        profile=ben, properties=shown, timestamp=ben.created_at,
        received_at=ben.created_at,
    )  # fmt: skip
    Event.objects.create(
        message_id="shop-edit-alone", type="track", event="Order Updated",
        source="shopify", profile=ben,
        properties={**shown, "order_id": "unplaced"},
        timestamp=ben.created_at, received_at=ben.created_at,
    )  # fmt: skip
    events_process_pending()
    if path == "python":
        _refresh_in_python(
            TraitsRefresh(profile_ids={ben.pk}, full_profile_ids={ben.pk}),
            now=ben.created_at,
        )

    assert _figures() == (Decimal("152.29"), 1, Decimal("152.29"))


def test_a_cancelled_order_stores_no_edit(client, load_fixture):
    order = load_fixture("shopify/orders_create.json", as_json=True)
    _deliver(client, order, topic="orders/create", webhook_id="create")
    cancelled = json.loads(json.dumps(order))
    cancelled.update(
        cancelled_at="2025-03-15T10:00:00-05:00",
        updated_at="2025-03-15T10:00:00-05:00",
        current_total_price="0.00",
    )

    _deliver(client, cancelled, topic="orders/cancelled", webhook_id="cancel")
    events_process_pending()

    assert list(Event.objects.values_list("event", flat=True).order_by("id")) == [
        "Order Completed",
        "Order Cancelled",
    ]
    assert _figures() == (Decimal("0.00"), 0, None)
