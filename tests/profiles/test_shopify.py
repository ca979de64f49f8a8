"""Shopify webhooks, driven with the shared fixtures' exact bytes and headers."""

import base64
import hashlib
import hmac
import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from profiles import shopify, tasks
from profiles.health import sources_health
from profiles.importing import contact_import_file
from profiles.models import (
    AWAITS_ORDER,
    PAYLOAD_REFUSED,
    ConsentRecord,
    Event,
    IdentityKind,
    Profile,
    ProfileIdentity,
    ProfileTag,
    ShopCheckout,
    ShopOrder,
    SourceHour,
    SubscriptionStatus,
    SuppressionReason,
    TraitDefinition,
    TraitType,
    WebhookDelivery,
)
from profiles.processing import events_process_pending, profile_traits_compute
from profiles.processing_traits import TraitsRefresh, _refresh_in_python
from profiles.services import ProfileGone, consent_record, suppression_add
from profiles.source_counts import source_hours_rebuild
from profiles.tasks import shopify_deliveries_sweep_task
from tests.factories import ProfileFactory

URL = "/webhooks/shopify"
SECRET = b"test_shopify_webhook_secret_DO_NOT_USE"
COMPUTED = (
    "lifetime_value",
    "order_count",
    "average_order_value",
    "first_order_at",
    "last_order_at",
    "last_seen_at",
    "category_counts",
    "favourite_category",
)
BEN = "ben.okafor@example.net"
ANA_TOKEN = "b7d5a9e0f3c14a2e8d6b1c9f7e5a3d2b"
BEN_CHECKOUT_TOKEN = "e2c4a6b8d0f24e6a8c0e2a4c6e8a0c2e"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def sign(body: bytes) -> str:
    return base64.b64encode(hmac.new(SECRET, body, hashlib.sha256).digest()).decode()


@pytest.fixture
def shop_headers(load_fixture):
    return load_fixture("shopify/webhook_headers.json", as_json=True)


@pytest.fixture
def deliver(client, load_fixture, shop_headers):
    """Post a fixture body with its recorded headers, as Shopify would."""

    def send(name: str, *, headers: dict | None = None, body: bytes | None = None):
        data = load_fixture(f"shopify/{name}") if body is None else body
        sent = dict(headers or shop_headers["deliveries"][name])
        sent.pop("Content-Type")
        return client.post(
            URL, data=data, content_type="application/json", headers=sent
        )

    return send


def resigned(shop_headers, name: str, body: bytes, **changes: str) -> dict:
    headers = {**shop_headers["deliveries"][name], **changes}
    headers["X-Shopify-Hmac-Sha256"] = sign(body)
    return headers


def payload_deliver(
    deliver, shop_headers, payload: dict, *, topic: str, webhook_id: str, like: str
):
    """Post a payload under `topic`, with the headers of fixture `like`, signed."""
    body = json.dumps(payload).encode()
    headers = resigned(
        shop_headers,
        like,
        body,
        **{"X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": webhook_id},
    )
    return deliver(like, headers=headers, body=body)


def customer_updated(deliver, shop_headers, customer: dict, webhook_id: str):
    """Post a customers/update delivery of this customer, signed as Shopify would."""
    return payload_deliver(
        deliver,
        shop_headers,
        customer,
        topic="customers/update",
        webhook_id=webhook_id,
        like="customers_create.json",
    )


def refund_deliver(deliver, shop_headers, refund: dict, webhook_id: str):
    """Post a refunds/create delivery of this refund, signed as Shopify would."""
    return payload_deliver(
        deliver,
        shop_headers,
        refund,
        topic="refunds/create",
        webhook_id=webhook_id,
        like="orders_create.json",
    )


def test_it_refuses_a_bad_signature_and_stores_nothing(db, deliver, shop_headers):
    response = deliver(
        "orders_create.json", headers=shop_headers["bad_signature_example"]
    )

    assert response.status_code == 401
    assert response.json() == {
        "code": "invalid_signature",
        "message": "X-Shopify-Hmac-Sha256 does not match the body.",
    }
    assert WebhookDelivery.objects.count() == 0
    assert ShopOrder.objects.count() == 0
    assert Profile.objects.count() == 0
    assert Event.objects.count() == 0


def test_it_refuses_a_delivery_without_a_signature(db, deliver, shop_headers):
    headers = dict(shop_headers["deliveries"]["orders_create.json"])
    del headers["X-Shopify-Hmac-Sha256"]

    response = deliver("orders_create.json", headers=headers)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"
    assert WebhookDelivery.objects.count() == 0


def test_it_verifies_the_exact_bytes_not_the_parsed_json(db, deliver, load_fixture):
    # Re-serialising turns Chloé's raw UTF-8 'é' into \u00e9: same JSON, other bytes.
    parsed = load_fixture("shopify/customers_create.json", as_json=True)
    body = json.dumps(parsed, separators=(",", ":")).encode()

    response = deliver("customers_create.json", body=body)

    assert response.status_code == 401
    assert WebhookDelivery.objects.count() == 0
    assert Profile.objects.count() == 0


def test_it_accepts_a_secret_being_rotated_in(db, deliver, settings):
    settings.BESPOKE_SHOPIFY_WEBHOOK_SECRETS = [
        "the-new-secret",
        SECRET.decode(),
    ]

    response = deliver("customers_create.json")

    assert response.status_code == 200
    assert WebhookDelivery.objects.count() == 1


def test_it_refuses_everything_when_no_secret_is_configured(db, deliver, settings):
    settings.BESPOKE_SHOPIFY_WEBHOOK_SECRETS = []

    response = deliver("customers_create.json")

    assert response.status_code == 401
    assert response.json()["message"] == (
        "No Shopify webhook secret is set here, so no signature can match."
    )
    assert WebhookDelivery.objects.count() == 0
    # The sources page says why nothing arrives.
    from profiles.health import sources_health

    (shop,) = [s for s in sources_health() if s["name"] == "shopify"]
    assert shop["unconfigured"] is True


def test_it_refuses_a_signed_delivery_without_a_webhook_id(db, deliver, shop_headers):
    headers = dict(shop_headers["deliveries"]["customers_create.json"])
    del headers["X-Shopify-Webhook-Id"]

    response = deliver("customers_create.json", headers=headers)

    assert response.status_code == 400
    assert response.json() == {
        "code": "missing_webhook_id",
        "message": "X-Shopify-Webhook-Id is required.",
    }
    assert WebhookDelivery.objects.count() == 0


def test_it_refuses_a_webhook_id_too_long_to_keep_whole(db, deliver, shop_headers):
    headers = dict(shop_headers["deliveries"]["customers_create.json"])
    headers["X-Shopify-Webhook-Id"] = "w" * 256

    response = deliver("customers_create.json", headers=headers)

    assert response.status_code == 400
    assert response.json()["code"] == "webhook_id_too_long"
    assert WebhookDelivery.objects.count() == 0


def test_it_answers_get_with_a_json_405(db, client):
    response = client.get(URL)

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()["code"] == "method_not_allowed"


def test_it_reads_header_names_in_any_case(db, deliver, shop_headers):
    # HTTP/2 sends every header name in lower case.
    headers = {
        name.lower(): value
        for name, value in shop_headers["deliveries"]["customers_create.json"].items()
    }
    headers["Content-Type"] = "application/json"

    response = deliver("customers_create.json", headers=headers)

    assert response.status_code == 200
    delivery = WebhookDelivery.objects.get()
    assert delivery.topic == "customers/create"
    assert delivery.delivery_id == "9bd27bef-e0e1-5b70-8b68-6daa1f546761"


def test_it_stores_bens_order_as_the_fixture_says(db, deliver):
    response = deliver("orders_create.json")

    assert response.status_code == 200
    assert response.json() == {"success": True, "duplicate": False}
    ben = Profile.objects.get()
    order = ShopOrder.objects.get()
    assert order.shop_id == "5975551934712"
    assert order.name == "#1057"
    assert order.profile == ben
    assert order.email == BEN
    assert order.checkout_token == BEN_CHECKOUT_TOKEN
    assert order.financial_status == "paid"
    assert order.currency == "USD"
    assert order.subtotal == Decimal("133.65")
    assert order.discount == Decimal("14.85")
    assert order.shipping == Decimal("7.95")
    assert order.tax == Decimal("10.69")
    assert order.total == Decimal("152.29")
    assert order.discount_codes == [
        {"code": "SPRING10", "amount": "14.85", "type": "percentage"}
    ]
    assert order.line_items == [
        {
            "product_id": "8012345678903",
            "variant_id": "45012345678903",
            "sku": "S28-OLV",
            "title": "Summit 28L Daypack",
            "variant_title": "Olive",
            "price": "119.00",
            "quantity": 1,
        },
        {
            "product_id": "8012345678904",
            "variant_id": "45012345678904",
            "sku": "CFC-KHK",
            "title": "Canvas Field Cap",
            "variant_title": "Khaki",
            "price": "29.50",
            "quantity": 1,
        },
    ]
    assert order.buyer_accepts_marketing is True
    assert order.placed_at == utc("2025-03-14T14:09:42Z")


def test_it_upserts_bens_profile_from_the_order(db, deliver):
    deliver("orders_create.json")

    ben = Profile.objects.get()
    assert ben.email == BEN
    assert (ben.first_name, ben.last_name) == ("Ben", "Okafor")
    assert ben.phone == "+1 217-555-0147"
    assert (ben.city, ben.region, ben.country_code) == ("Springfield", "IL", "US")
    assert ben.traits == {"shopify_customer_id": "7412345678902"}


def test_it_writes_bens_order_completed_event_in_the_segment_shape(db, deliver):
    deliver("orders_create.json")

    event = Event.objects.get()
    assert event.message_id == "shopify:order:5975551934712"
    assert (event.type, event.event, event.source) == (
        "track",
        "Order Completed",
        "shopify",
    )
    assert event.profile == Profile.objects.get(email=BEN)
    assert event.timestamp == utc("2025-03-14T14:09:42Z")
    assert event.processed_at is None
    assert event.properties == {
        "order_id": "5975551934712",
        "checkout_id": BEN_CHECKOUT_TOKEN,
        "order_name": "#1057",
        "total": 152.29,
        "subtotal": 133.65,
        "revenue": 133.65,
        "shipping": 7.95,
        "tax": 10.69,
        "discount": 14.85,
        "coupon": "SPRING10",
        "currency": "USD",
        "products": [
            {
                "product_id": "8012345678903",
                "sku": "S28-OLV",
                "name": "Summit 28L Daypack",
                "variant": "Olive",
                "price": 119.0,
                "quantity": 1,
            },
            {
                "product_id": "8012345678904",
                "sku": "CFC-KHK",
                "name": "Canvas Field Cap",
                "variant": "Khaki",
                "price": 29.5,
                "quantity": 1,
            },
        ],
    }


def test_it_takes_the_orders_accepted_marketing_as_consent(db, deliver):
    deliver("orders_create.json")

    ben = Profile.objects.get()
    record = ConsentRecord.objects.get()
    assert record.profile == ben
    assert record.status == SubscriptionStatus.SUBSCRIBED
    assert record.source == "shopify"
    assert record.occurred_at == utc("2025-03-14T14:09:42Z")
    assert record.evidence["order_id"] == "5975551934712"
    assert record.evidence["buyer_accepts_marketing"] is True
    assert ben.subscription_status == SubscriptionStatus.SUBSCRIBED


def test_it_marks_the_delivery_processed(db, deliver):
    deliver("orders_create.json")

    delivery = WebhookDelivery.objects.get()
    assert delivery.source == "shopify"
    assert delivery.delivery_id == "1b061a29-7b29-5796-9c4a-23efbc57e5ae"
    assert delivery.topic == "orders/create"
    assert delivery.shop_domain == "example-outfitters.myshopify.com"
    assert delivery.api_version == "2026-07"
    assert delivery.payload["id"] == 5975551934712
    assert delivery.processed_at is not None
    assert delivery.error == ""


def test_a_retry_of_the_same_webhook_id_is_answered_and_not_processed_again(
    db, deliver, shop_headers
):
    deliver("orders_create.json")
    first = WebhookDelivery.objects.get()

    response = deliver(
        "orders_create.json", headers=shop_headers["retry_of_orders_create"]
    )

    assert response.status_code == 200
    assert response.json() == {"success": True, "duplicate": True}
    assert WebhookDelivery.objects.get().processed_at == first.processed_at
    assert ShopOrder.objects.count() == 1
    assert Event.objects.count() == 1
    assert ConsentRecord.objects.count() == 1


def test_orders_updated_for_the_same_order_stores_no_second_order_completed(
    db, deliver, load_fixture, shop_headers
):
    deliver("orders_create.json")
    refunded = (
        b'"financial_status":"paid"',
        b'"financial_status":"partially_refunded"',
    )

    order_update(deliver, load_fixture, shop_headers, "upd-1", a=refunded)

    assert ShopOrder.objects.get().financial_status == "partially_refunded"
    assert Event.objects.count() == 1
    assert ConsentRecord.objects.count() == 1
    assert WebhookDelivery.objects.filter(processed_at__isnull=False).count() == 2


def order_update(deliver, load_fixture, shop_headers, webhook_id: str, **replace):
    """Post Ben's order again as orders/updated, with bytes replaced."""
    body = load_fixture("shopify/orders_create.json")
    for old, new in replace.values():
        body = body.replace(old, new)
    headers = resigned(
        shop_headers,
        "orders_create.json",
        body,
        **{"X-Shopify-Topic": "orders/updated", "X-Shopify-Webhook-Id": webhook_id},
    )
    response = deliver("orders_create.json", headers=headers, body=body)
    assert response.status_code == 200
    return WebhookDelivery.objects.get(delivery_id=webhook_id)


def order_payload_update(
    deliver, load_fixture, shop_headers, webhook_id: str, *, topic: str, **changes
):
    """Post Ben's order again under `topic`, later, with fields changed."""
    payload = json.loads(load_fixture("shopify/orders_create.json"))
    payload.update(updated_at="2025-03-14T12:00:00-05:00", **changes)
    body = json.dumps(payload).encode()
    headers = resigned(
        shop_headers,
        "orders_create.json",
        body,
        **{"X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": webhook_id},
    )
    assert deliver("orders_create.json", headers=headers, body=body).status_code == 200
    return WebhookDelivery.objects.get(delivery_id=webhook_id)


def test_an_older_order_update_arriving_late_does_not_undo_a_refund(
    db, deliver, load_fixture, shop_headers
):
    deliver("orders_create.json")  # paid, updated 09:09:47
    refunded = (b'"financial_status":"paid"', b'"financial_status":"refunded"')
    later = (b'"updated_at":"2025-03-14T09:09:47', b'"updated_at":"2025-03-14T12:00:00')
    order_update(deliver, load_fixture, shop_headers, "r-1", a=refunded, b=later)

    # The first version again, delivered last.
    order_update(deliver, load_fixture, shop_headers, "late-1")

    order = ShopOrder.objects.get()
    assert order.financial_status == "refunded"
    assert order.shop_updated_at == utc("2025-03-14T17:00:00Z")


def test_an_order_update_without_an_address_keeps_the_orders_customer(
    db, deliver, load_fixture, shop_headers
):
    deliver("orders_create.json")

    delivery = order_payload_update(
        deliver, load_fixture, shop_headers, "n-1", topic="orders/updated",
        email=None, contact_email=None, customer=None,
    )  # fmt: skip

    order = ShopOrder.objects.get()
    assert order.profile == Profile.objects.get(email=BEN)
    assert order.email == BEN
    assert delivery.error == ""


def test_an_order_in_another_currency_is_noted_on_its_delivery(
    db, deliver, load_fixture, shop_headers
):
    euros = (b'"currency":"USD"', b'"currency":"EUR"')

    delivery = order_update(deliver, load_fixture, shop_headers, "eur-1", a=euros)

    assert "The order is in EUR, not USD" in delivery.error
    assert Profile.objects.get().lifetime_value == 0


def test_each_delivery_is_counted_for_the_sources_page_as_it_finishes(
    db, deliver, load_fixture, shop_headers, monkeypatch
):
    euros = (b'"currency":"USD"', b'"currency":"EUR"')

    def unreadable(delivery):
        raise shopify.ShopifyPayloadError("'lots' is not an amount")

    deliver("orders_create.json")
    order_update(deliver, load_fixture, shop_headers, "eur-1", a=euros)
    # A payload the topic's handler cannot read at all is finished refused.
    monkeypatch.setitem(shopify.TOPIC_HANDLERS, "orders/updated", unreadable)
    refused = order_update(deliver, load_fixture, shop_headers, "lots-1")

    assert refused.error.startswith(PAYLOAD_REFUSED)
    shop = next(s for s in sources_health() if s["name"] == "shopify")
    assert (shop["hourly_total"], shop["webhook_notes"]) == (3, 1)
    assert shop["failed"]["count"] == 1
    assert (
        shop["last_received_at"]
        == WebhookDelivery.objects.get(delivery_id="eur-1").received_at
    )
    kept = set(
        SourceHour.objects.values_list("source", "unit", "done", "failed", "noted")
    )
    assert ("shopify", "deliveries", 3, 1, 1) in kept
    source_hours_rebuild()
    assert (
        set(SourceHour.objects.values_list("source", "unit", "done", "failed", "noted"))
        == kept
    )


def test_anas_checkout_is_upserted_by_token_and_stays_abandoned(db, deliver):
    deliver("checkouts_create.json")
    deliver("checkouts_update.json")

    checkout = ShopCheckout.objects.get()
    ana = Profile.objects.get(email="ana.souza@example.com")
    assert checkout.token == ANA_TOKEN
    assert checkout.shop_id == "35870981865626"
    assert checkout.profile == ana
    assert checkout.email == "ana.souza@example.com"
    assert checkout.currency == "USD"
    assert checkout.subtotal == Decimal("113.00")
    assert checkout.shipping == Decimal("7.95")
    assert checkout.tax == Decimal("9.04")
    assert checkout.total == Decimal("129.99")
    assert [line["sku"] for line in checkout.line_items] == ["TRJ-NVY-M", "MCS-GRY-L"]
    assert checkout.shipping_address["country_code"] == "BR"
    assert checkout.shipping_address["city"] == "São Paulo"
    assert checkout.recovery_url == (
        "https://shop.example.com/70012345678/checkouts/ac/"
        "b7d5a9e0f3c14a2e8d6b1c9f7e5a3d2b/recover"
        "?key=fixture-recovery-key-not-real&locale=pt-BR"
    )
    assert checkout.buyer_accepts_marketing is True
    assert checkout.started_at == utc("2025-03-14T09:17:21Z")
    assert checkout.updated_at == utc("2025-03-14T09:19:02Z")
    assert checkout.completed_at is None
    assert checkout.order_shop_id == ""


def test_an_update_without_an_address_keeps_the_checkouts_person(
    db, deliver, load_fixture, shop_headers
):
    deliver("checkouts_create.json")
    update = json.loads(load_fixture("shopify/checkouts_update.json"))
    update["email"] = None
    body = json.dumps(update).encode()
    headers = resigned(
        shop_headers, "checkouts_update.json", body, **{"X-Shopify-Webhook-Id": "u-2"}
    )

    deliver("checkouts_update.json", headers=headers, body=body)

    checkout = ShopCheckout.objects.get()
    assert checkout.profile == Profile.objects.get(email="ana.souza@example.com")
    assert checkout.email == "ana.souza@example.com"
    assert checkout.updated_at == utc("2025-03-14T09:19:02Z")


def test_a_new_checkout_has_no_address_and_no_shipping_yet(db, deliver):
    deliver("checkouts_create.json")

    checkout = ShopCheckout.objects.get()
    assert checkout.total == Decimal("113.00")
    assert checkout.tax == Decimal("0.00")
    assert checkout.shipping is None
    assert checkout.shipping_address == {}
    assert len(checkout.line_items) == 2


def test_checkouts_create_writes_one_checkout_started(db, deliver):
    deliver("checkouts_create.json")
    deliver("checkouts_update.json")

    event = Event.objects.get()
    assert event.message_id == f"shopify:checkout:{ANA_TOKEN}"
    assert event.event == "Checkout Started"
    assert event.profile == Profile.objects.get(email="ana.souza@example.com")
    assert event.timestamp == utc("2025-03-14T09:17:21Z")
    assert event.processed_at is None
    assert event.properties["checkout_id"] == ANA_TOKEN
    assert event.properties["value"] == 113.0
    assert event.properties["currency"] == "USD"
    assert [p["sku"] for p in event.properties["products"]] == [
        "TRJ-NVY-M",
        "MCS-GRY-L",
    ]


def test_a_guests_checkout_gets_its_checkout_started_when_an_update_names_her(
    db, deliver, load_fixture, shop_headers
):
    payload = json.loads(load_fixture("shopify/checkouts_create.json"))
    payload.update(email=None, customer=None)
    body = json.dumps(payload).encode()
    headers = resigned(shop_headers, "checkouts_create.json", body)
    deliver("checkouts_create.json", headers=headers, body=body)
    assert not Event.objects.exists()

    deliver("checkouts_update.json")

    event = Event.objects.get()
    assert event.event == "Checkout Started"
    assert event.profile == Profile.objects.get(email="ana.souza@example.com")
    assert event.timestamp == utc("2025-03-14T09:17:21Z")


def test_an_older_checkout_update_arriving_late_changes_nothing(db, deliver):
    deliver("checkouts_update.json")
    deliver("checkouts_create.json")

    checkout = ShopCheckout.objects.get()
    assert checkout.total == Decimal("129.99")
    assert checkout.shipping == Decimal("7.95")
    assert checkout.updated_at == utc("2025-03-14T09:19:02Z")


def test_bens_order_completes_his_checkout_by_token(
    db, deliver, load_fixture, shop_headers
):
    body = (
        load_fixture("shopify/checkouts_create.json")
        .replace(ANA_TOKEN.encode(), BEN_CHECKOUT_TOKEN.encode())
        .replace(b"ana.souza@example.com", BEN.encode())
    )
    headers = resigned(
        shop_headers, "checkouts_create.json", body, **{"X-Shopify-Webhook-Id": "b-1"}
    )
    deliver("checkouts_create.json", headers=headers, body=body)
    deliver("checkouts_create.json")

    deliver("orders_create.json")

    bens = ShopCheckout.objects.get(token=BEN_CHECKOUT_TOKEN)
    assert bens.completed_at == utc("2025-03-14T14:09:42Z")
    assert bens.order_shop_id == "5975551934712"
    anas = ShopCheckout.objects.get(token=ANA_TOKEN)
    assert anas.completed_at is None
    assert anas.order_shop_id == ""


def test_a_checkout_arriving_after_its_order_is_completed(
    db, deliver, load_fixture, shop_headers
):
    deliver("orders_create.json")
    body = load_fixture("shopify/checkouts_update.json").replace(
        ANA_TOKEN.encode(), BEN_CHECKOUT_TOKEN.encode()
    )
    headers = resigned(shop_headers, "checkouts_update.json", body)

    deliver("checkouts_update.json", headers=headers, body=body)

    checkout = ShopCheckout.objects.get()
    assert checkout.order_shop_id == "5975551934712"
    assert checkout.completed_at == utc("2025-03-14T14:09:42Z")


def test_chloe_is_created_without_any_consent_inferred(db, deliver):
    response = deliver("customers_create.json")

    assert response.status_code == 200
    chloe = Profile.objects.get()
    assert chloe.email == "chloe.dubois@example.org"
    assert (chloe.first_name, chloe.last_name) == ("Chloé", "Dubois")
    assert chloe.phone == "+33 1 99 00 12 34"
    assert (chloe.city, chloe.country_code) == ("Paris", "FR")
    assert chloe.traits == {"shopify_customer_id": "7412345678903"}
    assert chloe.subscription_status == SubscriptionStatus.NOT_SUBSCRIBED
    assert chloe.subscription_changed_at is None
    assert ConsentRecord.objects.count() == 0
    assert ProfileTag.objects.count() == 0
    assert Event.objects.count() == 0


def test_a_customer_without_consent_leaves_an_existing_status_alone(db, deliver):
    ProfileFactory(
        email="chloe.dubois@example.org",
        subscription_status=SubscriptionStatus.UNSUBSCRIBED,
        subscription_changed_at=utc("2025-01-02T00:00:00Z"),
    )

    deliver("customers_create.json")

    chloe = Profile.objects.get()
    assert chloe.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert chloe.first_name == "Chloé"
    assert ConsentRecord.objects.count() == 0


def test_it_reads_the_legacy_customer_payload(db, deliver):
    deliver("customers_create_legacy_2024-10.json")

    chloe = Profile.objects.get()
    assert sorted(chloe.tags.values_list("name", flat=True)) == [
        "newsletter",
        "wishlist",
    ]
    assert chloe.traits == {
        "shopify_customer_id": "7412345678903",
        "shopify_orders_count": 0,
        "shopify_total_spent": 0.0,
    }
    record = ConsentRecord.objects.get()
    assert record.status == SubscriptionStatus.SUBSCRIBED
    assert record.source == "shopify"
    assert record.occurred_at == utc("2025-03-14T17:39:58Z")
    assert record.evidence["opt_in_level"] == "single_opt_in"
    assert chloe.subscription_status == SubscriptionStatus.SUBSCRIBED
    assert chloe.subscription_changed_at == utc("2025-03-14T17:39:58Z")


def test_the_same_legacy_consent_repeated_by_an_update_is_recorded_once(
    db, deliver, load_fixture, shop_headers
):
    deliver("customers_create_legacy_2024-10.json")
    body = load_fixture("shopify/customers_create_legacy_2024-10.json").replace(
        b'"note":null', b'"note":"VIP"', 1
    )
    headers = resigned(
        shop_headers,
        "customers_create_legacy_2024-10.json",
        body,
        **{"X-Shopify-Topic": "customers/update", "X-Shopify-Webhook-Id": "u-2"},
    )

    deliver("customers_create_legacy_2024-10.json", headers=headers, body=body)

    assert WebhookDelivery.objects.filter(processed_at__isnull=False).count() == 2
    assert ConsentRecord.objects.count() == 1
    assert ProfileTag.objects.count() == 2


def test_a_declared_trait_keeps_its_declared_type(db, deliver):
    TraitDefinition.objects.create(name="shopify_orders_count", type=TraitType.TEXT)
    TraitDefinition.objects.create(
        name="shopify_total_spent", type=TraitType.NUMBER, minimum=Decimal("1")
    )

    deliver("customers_create_legacy_2024-10.json")

    # 0 becomes the text "0"; 0.00 breaks the declared minimum and is left out.
    assert Profile.objects.get().traits == {
        "shopify_customer_id": "7412345678903",
        "shopify_orders_count": "0",
    }
    note = WebhookDelivery.objects.get().error
    assert note.startswith("shopify_total_spent 0.0 not stored: ")


def test_a_trait_declared_in_another_case_takes_the_shops_value(db, deliver):
    TraitDefinition.objects.create(
        name="Shopify_Total_Spent", type=TraitType.NUMBER, minimum=Decimal("1")
    )

    deliver("customers_create_legacy_2024-10.json")

    # Checked by the declared rule (0.00 is below its minimum), not kept beside it.
    assert Profile.objects.get().traits == {
        "shopify_customer_id": "7412345678903",
        "shopify_orders_count": 0,
    }
    assert WebhookDelivery.objects.get().error.startswith(
        "shopify_total_spent 0.0 not stored: "
    )


def test_a_signed_body_that_is_not_json_is_refused_and_not_stored(
    db, deliver, shop_headers
):
    body = b"not json"
    headers = resigned(shop_headers, "customers_create.json", body)

    response = deliver("customers_create.json", headers=headers, body=body)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"
    assert WebhookDelivery.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]", "The body is JSON, but not an object"),
        (b'"text"', "The body is JSON, but not an object"),
        (b"{", "The body is not JSON that can be stored: it does not parse"),
    ],
)
def test_a_signed_body_that_is_no_object_says_which_it_is(
    db, deliver, shop_headers, body, message
):
    headers = resigned(shop_headers, "customers_create.json", body)

    response = deliver("customers_create.json", headers=headers, body=body)

    assert response.status_code == 400
    assert response.json()["message"].startswith(message)
    assert WebhookDelivery.objects.count() == 0


def test_chloes_consent_update_subscribes_her_with_confirmed_opt_in(db, deliver):
    deliver("customers_create.json")

    response = deliver("customers_email_marketing_consent_update.json")

    assert response.status_code == 200
    chloe = Profile.objects.get()
    record = ConsentRecord.objects.get()
    assert record.profile == chloe
    assert record.status == SubscriptionStatus.SUBSCRIBED
    assert record.source == "shopify"
    assert record.occurred_at == utc("2025-03-14T17:41:07Z")
    assert record.evidence["opt_in_level"] == "confirmed_opt_in"
    assert record.evidence["webhook_id"] == "0756a167-afb0-5c61-a925-4ed45f2aec5a"
    assert chloe.subscription_status == SubscriptionStatus.SUBSCRIBED
    assert chloe.subscription_changed_at == utc("2025-03-14T17:41:07Z")


def test_an_unsubscribe_in_the_shop_unsubscribes(
    db, deliver, load_fixture, shop_headers
):
    name = "customers_email_marketing_consent_update.json"
    deliver(name)
    body = (
        load_fixture(f"shopify/{name}")
        .replace(b'"state":"subscribed"', b'"state":"unsubscribed"')
        .replace(b"12:41:07", b"13:05:00")
    )
    headers = resigned(shop_headers, name, body, **{"X-Shopify-Webhook-Id": "c-2"})

    deliver(name, headers=headers, body=body)

    chloe = Profile.objects.get()
    assert chloe.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert chloe.subscription_changed_at == utc("2025-03-14T18:05:00Z")
    assert ConsentRecord.objects.count() == 2


def test_an_order_after_an_unsubscribe_does_not_resubscribe(db, deliver):
    ProfileFactory(
        email=BEN,
        subscription_status=SubscriptionStatus.UNSUBSCRIBED,
        subscription_changed_at=utc("2025-03-01T10:00:00Z"),
    )

    response = deliver("orders_create.json")

    assert response.status_code == 200
    ben = Profile.objects.get()
    assert ben.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert ben.subscription_changed_at == utc("2025-03-01T10:00:00Z")
    assert ConsentRecord.objects.count() == 0
    assert ShopOrder.objects.count() == 1


def bens_consent(deliver, shop_headers, state: str, at: str, webhook_id: str):
    """Post a consent-topic delivery for Ben: his own choice in the shop."""
    name = "customers_email_marketing_consent_update.json"
    consent = {"state": state, "opt_in_level": "single_opt_in"}
    body = json.dumps(
        {
            "customer_id": 7412345678902,
            "email_address": BEN,
            "email_marketing_consent": {**consent, "consent_updated_at": at},
        }
    ).encode()
    headers = resigned(shop_headers, name, body, **{"X-Shopify-Webhook-Id": webhook_id})
    assert deliver(name, headers=headers, body=body).status_code == 200


def test_an_unsubscribe_from_before_the_order_arriving_after_it_wins(
    db, deliver, shop_headers
):
    """The order's ticked box would not have resubscribed him had it come second."""
    deliver("orders_create.json")  # 2025-03-14, buyer_accepts_marketing: true
    assert Profile.objects.get().subscription_status == SubscriptionStatus.SUBSCRIBED

    bens_consent(
        deliver, shop_headers, "unsubscribed", "2025-03-10T10:00:00-05:00", "u-1"
    )

    ben = Profile.objects.get()
    assert ben.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert ben.subscription_changed_at == utc("2025-03-10T15:00:00Z")


def test_his_own_later_subscription_outranks_an_older_unsubscribe_arriving_last(
    db, deliver, shop_headers
):
    bens_consent(
        deliver, shop_headers, "subscribed", "2025-03-12T10:00:00-05:00", "s-1"
    )
    deliver("orders_create.json")

    bens_consent(
        deliver, shop_headers, "unsubscribed", "2025-03-10T10:00:00-05:00", "u-1"
    )

    ben = Profile.objects.get()
    assert ben.subscription_status == SubscriptionStatus.SUBSCRIBED


def test_an_order_from_a_suppressed_address_records_no_consent(db, deliver):
    suppression_add(email_key=BEN, reason=SuppressionReason.COMPLAINT, source="test")

    deliver("orders_create.json")

    ben = Profile.objects.get()
    assert ben.subscription_status == SubscriptionStatus.NOT_SUBSCRIBED
    assert ConsentRecord.objects.count() == 0


@pytest.mark.parametrize(
    "topic", ["customers/redact", "customers/data_request", "shop/redact"]
)
def test_a_privacy_request_topic_is_noted_as_one(db, deliver, shop_headers, topic):
    body = b'{"shop_id":1,"customer":{"id":7412345678903,"email":"chloe@example.org"}}'
    headers = resigned(
        shop_headers,
        "customers_create.json",
        body,
        **{"X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": "priv-1"},
    )

    assert (
        deliver("customers_create.json", headers=headers, body=body).status_code == 200
    )

    assert WebhookDelivery.objects.get().error.startswith("PRIVACY REQUEST: ")


def test_an_unknown_topic_is_stored_and_noted(db, deliver, load_fixture, shop_headers):
    body = b'{"id":7412345678903,"orders_count":3}'
    headers = resigned(
        shop_headers,
        "customers_create.json",
        body,
        **{
            "X-Shopify-Topic": "customers/purchasing_summary",
            "X-Shopify-Webhook-Id": "p-1",
        },
    )

    response = deliver("customers_create.json", headers=headers, body=body)

    assert response.status_code == 200
    delivery = WebhookDelivery.objects.get()
    assert delivery.processed_at is not None
    assert delivery.error == (
        "Topic 'customers/purchasing_summary' is not used by Bespoke."
    )
    assert Profile.objects.count() == 0


def test_sms_marketing_consent_is_stored_and_noted(db, deliver, shop_headers):
    body = (
        b'{"id":7412345678903,"phone":"+33199001234","sms_marketing_consent":'
        b'{"state":"subscribed","opt_in_level":"single_opt_in",'
        b'"consent_updated_at":"2025-03-14T12:41:07-05:00"}}'
    )
    headers = resigned(
        shop_headers,
        "customers_email_marketing_consent_update.json",
        body,
        **{
            "X-Shopify-Topic": "customers_marketing_consent/update",
            "X-Shopify-Webhook-Id": "s-1",
        },
    )

    deliver("customers_create.json", headers=headers, body=body)

    delivery = WebhookDelivery.objects.get()
    assert delivery.processed_at is not None
    assert delivery.error == "The delivery holds no email marketing consent."
    assert ConsentRecord.objects.count() == 0


def test_bens_order_counts_once_from_the_site_and_the_shop(
    db, client, deliver, load_fixture
):
    # Given Ben identified on the site and his site sent Order Completed...
    auth = "Basic " + base64.b64encode(b"test-env-write-key:").decode()
    batch = load_fixture("segment/batch.json", as_json=True)["batch"]
    identify = next(
        item
        for item in batch
        if item["type"] == "identify" and item.get("userId") == "usr_1002"
    )
    for path, body in [
        ("/v1/identify", json.dumps(identify).encode()),
        ("/v1/track", load_fixture("segment/track_order_completed.json")),
    ]:
        response = client.post(
            path, data=body, content_type="application/json", HTTP_AUTHORIZATION=auth
        )
        assert response.status_code == 200

    # ...when the shop's webhook reports the same order...
    deliver("orders_create.json")
    events_process_pending()

    # ...then his one profile holds both events and counts the order once.
    ben = Profile.objects.get(email=BEN)
    assert ben.events.filter(event="Order Completed").count() == 2
    assert ben.lifetime_value == Decimal("152.29")
    assert ben.order_count == 1
    assert ben.first_order_at == utc("2025-03-14T14:09:42Z")


def assert_counted_alike(profile: Profile) -> None:
    """The kept figures are those of all events at once, in SQL and in Python."""
    kept = dict(Profile.objects.values(*COMPUTED).get(pk=profile.pk))
    profile_traits_compute(profile=profile)
    assert dict(Profile.objects.values(*COMPUTED).get(pk=profile.pk)) == kept
    with transaction.atomic():
        _refresh_in_python(TraitsRefresh(profile_ids={profile.pk}), now=timezone.now())
    assert dict(Profile.objects.values(*COMPUTED).get(pk=profile.pk)) == kept


def bens_site_order(client, load_fixture, *, shop_first: bool = False, **changes):
    """Ben identifies on the site, which reports his order with `changes`."""
    auth = "Basic " + base64.b64encode(b"test-env-write-key:").decode()
    batch = load_fixture("segment/batch.json", as_json=True)["batch"]
    identify = next(
        item
        for item in batch
        if item["type"] == "identify" and item.get("userId") == "usr_1002"
    )
    order = load_fixture("segment/track_order_completed.json", as_json=True)
    for name, value in changes.items():
        if value is None:
            order["properties"].pop(name, None)
        else:
            order["properties"][name] = value
    # A minute before the shop's own time for it: the site's report comes first.
    order["timestamp"] = "2025-03-14T14:08:42.000Z"
    for path, body in [("/v1/identify", identify), ("/v1/track", order)]:
        response = client.post(
            path,
            data=json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=auth,
        )
        assert response.status_code == 200
        if shop_first:
            events_process_pending()


@pytest.mark.parametrize(
    "site",
    [
        {"total": None, "revenue": 133.65},  # the spec's revenue: before shipping
        {"total": None, "revenue": None, "value": 152.29},  # no amount it reads
        {"total": "1,052.00"},  # an amount it cannot read
        {"total": 139.0, "currency": "EUR"},  # what the customer saw, in euros
    ],
    ids=["revenue", "no-amount", "unreadable", "other-currency"],
)
def test_the_shops_amount_for_an_order_is_what_counts(
    db, client, deliver, load_fixture, site
):
    bens_site_order(client, load_fixture, **site)
    deliver("orders_create.json")
    events_process_pending()

    # Whichever came first, the order counts once, at its first report's time,
    # with what the shop says was paid.
    ben = Profile.objects.get(email=BEN)
    assert (ben.order_count, ben.lifetime_value) == (1, Decimal("152.29"))
    assert ben.average_order_value == Decimal("152.29")
    assert ben.first_order_at == utc("2025-03-14T14:08:42Z")
    assert_counted_alike(ben)


def test_a_site_order_without_the_shop_keeps_its_own_amount(db, client, load_fixture):
    bens_site_order(client, load_fixture, total=None, revenue=133.65)
    events_process_pending()

    assert Profile.objects.get(email=BEN).lifetime_value == Decimal("133.65")


@pytest.mark.parametrize("shop_first", [True, False], ids=["shop-first", "site-first"])
def test_an_order_takes_its_categories_from_the_site_whoever_reported_first(
    db, client, deliver, load_fixture, shop_first
):
    if shop_first:
        deliver("orders_create.json")
        events_process_pending()
    bens_site_order(client, load_fixture)
    if not shop_first:
        events_process_pending()
        deliver("orders_create.json")
    events_process_pending()

    # The shop's products name no category; the site's name Bags and Accessories.
    ben = Profile.objects.get(email=BEN)
    assert sorted(ben.category_counts) == ["Accessories", "Bags"]
    assert ben.favourite_category in ("Accessories", "Bags")
    assert_counted_alike(ben)


def test_an_order_the_shop_gives_to_another_customer_takes_its_events_along(
    db, deliver, load_fixture, shop_headers
):
    deliver("orders_create.json")
    events_process_pending()
    ben = Profile.objects.get(email=BEN)
    assert ben.order_count == 1
    order = load_fixture("shopify/orders_create.json", as_json=True)
    yara = {**order["customer"], "id": 9100018, "email": "yara@example.com"}
    yara.update(first_name="Yara", last_name="Lind")

    delivery = order_payload_update(
        deliver, load_fixture, shop_headers, "moved-1", topic="orders/updated",
        email="yara@example.com", contact_email="yara@example.com", customer=yara,
    )  # fmt: skip
    refund_deliver(deliver, shop_headers, shop_refund(906, "70.00"), "rf-6")
    events_process_pending()

    assert "The shop gave order #1057 to another customer" in delivery.error
    yara = Profile.objects.get(email="yara@example.com")
    assert ShopOrder.objects.get().profile == yara
    assert set(
        Event.objects.filter(source="shopify").values_list("profile", flat=True)
    ) == {yara.pk}
    ben.refresh_from_db()
    assert (ben.order_count, ben.lifetime_value) == (0, Decimal("0.00"))
    # Seen at the order's time no more: it was never his.
    assert (ben.last_seen_at, ben.first_order_at) == (None, None)
    assert yara.last_seen_at == utc("2025-03-14T14:09:42Z")
    assert (yara.order_count, yara.lifetime_value) == (1, Decimal("82.29"))
    assert_counted_alike(ben)
    assert_counted_alike(yara)


def test_a_test_order_is_kept_and_counted_nowhere(
    db, deliver, load_fixture, shop_headers
):
    name = "orders_create.json"
    # before its order
    refund_deliver(deliver, shop_headers, shop_refund(905, "152.29"), "rf-5")
    order = load_fixture(f"shopify/{name}", as_json=True)
    order["test"] = True
    body = json.dumps(order).encode()

    response = deliver(name, headers=resigned(shop_headers, name, body), body=body)

    assert response.status_code == 200
    kept = ShopOrder.objects.get()
    assert kept.is_test
    assert WebhookDelivery.objects.get(topic="orders/create").error == (
        shopify.TEST_ORDER_NOTE
    )
    # The refund that waited for it is finished, and nothing counts anywhere.
    waited = WebhookDelivery.objects.get(delivery_id="rf-5")
    assert (waited.processed_at is not None, waited.error) == (
        True,
        shopify.TEST_ORDER_NOTE,
    )
    assert not Event.objects.exists()
    assert not Profile.objects.exists()


def shop_test_order(deliver, load_fixture, shop_headers) -> None:
    name = "orders_create.json"
    order = load_fixture(f"shopify/{name}", as_json=True)
    order["test"] = True
    body = json.dumps(order).encode()
    response = deliver(name, headers=resigned(shop_headers, name, body), body=body)
    assert response.status_code == 200


@pytest.mark.parametrize("site_first", [True, False])
def test_the_sites_report_of_a_test_order_counts_nowhere_either(
    db, client, deliver, load_fixture, shop_headers, site_first
):
    if site_first:
        bens_site_order(client, load_fixture)
        events_process_pending()
        ben = Profile.objects.get(email=BEN)
        assert (ben.order_count, ben.lifetime_value) == (1, Decimal("152.29"))

    shop_test_order(deliver, load_fixture, shop_headers)
    if not site_first:
        bens_site_order(client, load_fixture)
    events_process_pending()

    ben = Profile.objects.get(email=BEN)
    assert (ben.order_count, ben.lifetime_value, ben.first_order_at) == (
        0,
        Decimal("0.00"),
        None,
    )
    assert ben.favourite_category == ""
    # Seen on the site all the same.
    assert ben.last_seen_at is not None
    assert_counted_alike(ben)


def test_a_refund_told_by_the_site_and_the_shop_is_taken_off_once(
    db, client, deliver, load_fixture, shop_headers
):
    bens_site_order(client, load_fixture)
    deliver("orders_create.json")
    refund_deliver(deliver, shop_headers, shop_refund(904, "5.00"), "rf-4")
    # The spec's Order Refunded names the order and what was paid back, no refund_id.
    auth = "Basic " + base64.b64encode(b"test-env-write-key:").decode()
    told = {
        "userId": "usr_1002",
        "event": "Order Refunded",
        "properties": {"order_id": "5975551934712", "total": 5, "currency": "USD"},
    }
    response = client.post(
        "/v1/track",
        data=json.dumps(told),
        content_type="application/json",
        HTTP_AUTHORIZATION=auth,
    )
    assert response.status_code == 200
    events_process_pending()

    ben = Profile.objects.get(email=BEN)
    assert ben.lifetime_value == Decimal("147.29")
    # The merchant's refund is no sign of Ben: last seen stays his order's time.
    assert ben.last_seen_at == utc("2025-03-14T14:09:42Z")
    assert_counted_alike(ben)


def other_connection() -> psycopg.Connection:
    """A second connection to the test database, as another worker's."""
    db = connection.settings_dict
    return psycopg.connect(
        dbname=db["NAME"],
        user=db["USER"],
        password=db["PASSWORD"] or None,
        host=db["HOST"],
        port=db["PORT"] or None,
    )


@pytest.mark.django_db(transaction=True)
def test_a_failed_delivery_keeps_its_error_and_the_sweep_finishes_it(
    deliver, monkeypatch, caplog
):
    # Given another worker holds Ben's profile row (as a traits recompute does)...
    ben = ProfileFactory(email=BEN, first_name="Pat")
    monkeypatch.setattr(shopify, "PROCESS_LOCK_TIMEOUT_MS", 100)
    retries: list[dict] = []
    monkeypatch.setattr(
        tasks.shopify_deliveries_sweep_task,
        "apply_async",
        lambda *a, **k: retries.append(k),
    )
    runs: list[dict] = []
    monkeypatch.setattr(
        tasks.events_process_task, "apply_async", lambda *a, **k: runs.append(k)
    )
    with other_connection() as other, other.transaction():
        other.execute(
            "SELECT id FROM profiles_profile WHERE id = %s FOR UPDATE", [ben.pk]
        )

        # ...when the order arrives, it is stored and answered, but not applied.
        response = deliver("orders_create.json")

        assert response.status_code == 200
        delivery = WebhookDelivery.objects.get()
        assert delivery.processed_at is None
        assert delivery.error.startswith(
            "OperationalError: canceling statement due to lock timeout"
        )
        assert ShopOrder.objects.count() == 0
        assert Event.objects.count() == 0
        assert ConsentRecord.objects.count() == 0
        # A retry comes in a few seconds, not at the next sweep.
        assert retries == [{"countdown": tasks.SHOPIFY_RETRY_SECONDS}]
        # An expected wait is a warning without a traceback, not an error.
        (record,) = [r for r in caplog.records if r.name == "profiles.shopify"]
        assert (record.levelname, record.exc_info) == ("WARNING", None)
        assert "lock timeout" in record.getMessage()

    # Then, once the lock is gone, the sweep finishes it, once, and asks for its
    # event to be processed.
    assert shopify_deliveries_sweep_task() == 1
    assert shopify_deliveries_sweep_task() == 0
    assert len(runs) == 1

    delivery.refresh_from_db()
    assert delivery.processed_at is not None
    assert delivery.error == ""
    assert ShopOrder.objects.get().total == Decimal("152.29")
    assert Event.objects.get().message_id == "shopify:order:5975551934712"
    ben.refresh_from_db()
    assert ben.first_name == "Ben"


@pytest.mark.django_db(transaction=True)
def test_a_delivery_that_arrives_during_a_recount_of_hours_is_retried(
    deliver, monkeypatch
):
    # Given the Sources page's hours are being counted again (the lock the recount
    # holds), a delivery's count waits past the lock timeout...
    monkeypatch.setattr(shopify, "PROCESS_LOCK_TIMEOUT_MS", 100)
    monkeypatch.setattr(
        tasks.shopify_deliveries_sweep_task, "apply_async", lambda *a, **k: None
    )
    monkeypatch.setattr(tasks.events_process_task, "apply_async", lambda *a, **k: None)
    with other_connection() as other, other.transaction():
        other.execute("LOCK TABLE profiles_sourcehour IN EXCLUSIVE MODE")

        response = deliver("orders_create.json")

        # ...so it is answered, and nothing of it is applied or counted yet.
        assert response.status_code == 200
        delivery = WebhookDelivery.objects.get()
        assert delivery.processed_at is None
        assert "lock timeout" in delivery.error
        assert ShopOrder.objects.count() == 0

    assert shopify_deliveries_sweep_task() == 1
    shop = next(s for s in sources_health() if s["name"] == "shopify")
    assert (shop["hourly_total"], shop["unprocessed"]["count"]) == (1, 0)
    assert SourceHour.objects.get(unit="deliveries").done == 1


def test_a_checkout_whose_total_cannot_be_read_is_kept_without_it(
    db, deliver, load_fixture, shop_headers
):
    name = "checkouts_create.json"
    body = load_fixture(f"shopify/{name}").replace(
        b'"total_price":"113.00"', b'"total_price":"n/a"'
    )

    deliver(name, headers=resigned(shop_headers, name, body), body=body)

    checkout = ShopCheckout.objects.get()
    assert checkout.total is None
    assert WebhookDelivery.objects.get().error == (
        "total_price: 'n/a' is not an amount: the checkout is kept without it."
    )


def test_an_order_whose_line_price_and_time_cannot_be_read_is_kept_without_them(
    db, deliver, load_fixture, shop_headers
):
    name = "orders_create.json"
    order = json.loads(load_fixture(f"shopify/{name}"))
    order["line_items"][1]["price"] = "n/a"
    order["processed_at"] = order["created_at"] = "yesterday"
    order["shipping_lines"][0]["price"] = {"amount": "7.95"}
    body = json.dumps(order).encode()

    response = deliver(name, headers=resigned(shop_headers, name, body), body=body)

    # Kept and counted, as the shop meant it: only what cannot be read is left out.
    assert response.status_code == 200
    delivery = WebhookDelivery.objects.get()
    assert delivery.processed_at is not None
    assert not delivery.error.startswith(PAYLOAD_REFUSED)
    assert (
        "line_items[1].price: 'n/a' is not an amount; "
        "shipping_lines[0].price: {'amount': '7.95'} is not an amount; "
        "created_at: 'yesterday' is not an ISO-8601 time; "
        "processed_at: 'yesterday' is not an ISO-8601 time: "
        "the order is kept without them."
    ) in delivery.error
    kept = ShopOrder.objects.get()
    assert kept.total == Decimal("152.29")
    assert [line["price"] for line in kept.line_items] == ["119.00", ""]
    assert kept.placed_at is None
    completed = Event.objects.get(event="Order Completed")
    assert [p["price"] for p in completed.properties["products"]] == [119.0, None]
    assert completed.properties["shipping"] == 7.95  # the order's own shipping total
    assert completed.timestamp == delivery.received_at  # placed at its arrival
    events_process_pending()
    profile = Profile.objects.get()
    assert (profile.order_count, profile.lifetime_value) == (1, Decimal("152.29"))


def test_an_order_update_whose_time_cannot_be_read_is_applied_with_a_note(
    db, deliver, load_fixture, shop_headers
):
    deliver("orders_create.json")
    unread = (b'"updated_at":"2025-03-14T09:09:47-05:00"', b'"updated_at":"lots"')
    paid = (b'"financial_status":"paid"', b'"financial_status":"refunded"')

    delivery = order_update(
        deliver, load_fixture, shop_headers, "lots-1", a=unread, b=paid
    )

    assert delivery.error == (
        "updated_at: 'lots' is not an ISO-8601 time: the order is kept without it."
    )
    order = ShopOrder.objects.get()
    assert (order.financial_status, order.shop_updated_at) == ("refunded", None)


def test_a_refund_whose_amount_cannot_be_read_is_kept_and_returns_nothing(
    db, deliver, load_fixture, shop_headers
):
    deliver("orders_create.json")
    refund = shop_refund(903, "40.00", "about ten")
    refund["created_at"] = "soon"

    refund_deliver(deliver, shop_headers, refund, "rf-9")
    events_process_pending()

    delivery = WebhookDelivery.objects.get(delivery_id="rf-9")
    assert delivery.error == (
        "transactions[1].amount: 'about ten' is not an amount; "
        "created_at: 'soon' is not an ISO-8601 time: the refund is kept without them."
    )
    refunded = Event.objects.get(event="Order Refunded")
    assert refunded.properties["total"] == 40.0
    assert refunded.timestamp == delivery.received_at
    assert Profile.objects.get().lifetime_value == Decimal("112.29")


def test_a_customer_update_whose_times_cannot_be_read_is_applied_with_a_note(
    db, deliver, load_fixture, shop_headers
):
    customer = json.loads(load_fixture("shopify/customers_create.json"))
    customer["updated_at"] = "lots"
    customer["first_name"] = "Anabel"
    customer["total_spent"] = "1.234,50"  # the legacy shape's running total
    customer["email_marketing_consent"] = {
        "state": "subscribed",
        "opt_in_level": "single_opt_in",
        "consent_updated_at": "never",
    }

    customer_updated(deliver, shop_headers, customer, "cu-lots")

    delivery = WebhookDelivery.objects.get(delivery_id="cu-lots")
    assert delivery.processed_at is not None
    assert delivery.error.endswith(
        "total_spent: '1.234,50' is not an amount; "
        "updated_at: 'lots' is not an ISO-8601 time; "
        "email_marketing_consent.consent_updated_at: 'never' is not an ISO-8601 "
        "time: the customer is kept without them."
    )
    profile = Profile.objects.get()
    assert profile.first_name == "Anabel"
    # Undated, the consent is recorded as of its arrival.
    consent = ConsentRecord.objects.get(profile=profile, source="shopify")
    assert consent.occurred_at == delivery.received_at


def test_an_amount_too_large_finishes_the_delivery_with_its_reason(
    db, deliver, load_fixture, shop_headers
):
    huge = load_fixture("shopify/orders_create.json").replace(
        b'"total_price":"152.29"', b'"total_price":"99999999999999999.99"'
    )
    headers = resigned(
        shop_headers,
        "orders_create.json",
        huge,
        **{"X-Shopify-Webhook-Id": "huge-1"},
    )

    response = deliver("orders_create.json", headers=headers, body=huge)

    # The order is kept and counted, without its total, as the tracking API keeps
    # an order whose total it cannot read; the delivery's note says why.
    assert response.status_code == 200
    delivery = WebhookDelivery.objects.get(delivery_id="huge-1")
    assert delivery.processed_at is not None  # not retried for a week
    assert not delivery.error.startswith(PAYLOAD_REFUSED)
    assert (
        "total_price: '99999999999999999.99' is too large an amount "
        "(at most 999,999,999,999): the order is kept without it."
    ) in delivery.error
    assert ShopOrder.objects.get().total is None
    assert Event.objects.get(event="Order Completed").properties["total"] is None
    events_process_pending()
    assert Profile.objects.get().order_count == 1

    # The shop's next delivery for the same order, with a sound total, applies.
    deliver("orders_create.json")
    assert ShopOrder.objects.get().total == Decimal("152.29")


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": 1e999}',
        b'{"id": 5, "total_price": NaN}',
        b'{"x": "a\\u0000"}',
        b'{"id": 5, "total_price": 1e-5000}',
    ],
)
def test_a_body_no_database_can_keep_is_refused_in_json(
    db, deliver, shop_headers, body
):
    headers = resigned(
        shop_headers, "orders_create.json", body, **{"X-Shopify-Webhook-Id": "odd-1"}
    )

    response = deliver("orders_create.json", headers=headers, body=body)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"
    assert not WebhookDelivery.objects.exists()


def test_a_time_outside_the_calendar_finishes_the_delivery_with_its_reason(
    db, deliver, load_fixture, shop_headers
):
    order = json.loads(load_fixture("shopify/orders_create.json"))
    order["created_at"] = order["processed_at"] = "0001-01-01T00:00:00+01:00"
    body = json.dumps(order).encode()
    headers = resigned(
        shop_headers, "orders_create.json", body, **{"X-Shopify-Webhook-Id": "old-1"}
    )

    deliver("orders_create.json", headers=headers, body=body)

    delivery = WebhookDelivery.objects.get(delivery_id="old-1")
    assert delivery.processed_at is not None
    assert "is outside the years 1 to 9999 in UTC" in delivery.error


def test_an_amount_that_rounds_past_the_limit_finishes_the_delivery_with_its_reason(
    db, deliver, load_fixture, shop_headers
):
    order = json.loads(load_fixture("shopify/orders_create.json"))
    order["total_price"] = "999999999999.999"
    body = json.dumps(order).encode()
    headers = resigned(
        shop_headers, "orders_create.json", body, **{"X-Shopify-Webhook-Id": "big-1"}
    )

    deliver("orders_create.json", headers=headers, body=body)

    delivery = WebhookDelivery.objects.get(delivery_id="big-1")
    assert delivery.processed_at is not None
    assert "is too large an amount" in delivery.error


def test_a_quantity_written_as_text_is_read(db, deliver, load_fixture, shop_headers):
    order = json.loads(load_fixture("shopify/orders_create.json"))
    for line in order["line_items"]:
        line["quantity"] = str(line["quantity"])
    body = json.dumps(order).encode()
    headers = resigned(
        shop_headers, "orders_create.json", body, **{"X-Shopify-Webhook-Id": "qty-1"}
    )

    deliver("orders_create.json", headers=headers, body=body)

    sent = json.loads(load_fixture("shopify/orders_create.json"))["line_items"]
    event = Event.objects.get(event="Order Completed")
    assert [p["quantity"] for p in event.properties["products"]] == [
        line["quantity"] for line in sent
    ]


@pytest.mark.parametrize(
    ("quantity", "why"),
    [
        ("two", "'two' is not a whole number of items"),
        (2.5, "2.5 is not a whole number of items"),
        (-1, "-1 is not a number of items from 0 to 2,147,483,647"),
        (True, "True is not a whole number of items"),
    ],
)
def test_a_line_whose_quantity_cannot_be_read_is_kept_without_it(
    db, deliver, load_fixture, shop_headers, quantity, why
):
    name = "orders_create.json"
    order = json.loads(load_fixture(f"shopify/{name}"))
    order["line_items"][1]["quantity"] = quantity
    body = json.dumps(order).encode()

    response = deliver(name, headers=resigned(shop_headers, name, body), body=body)

    assert response.status_code == 200
    delivery = WebhookDelivery.objects.get()
    assert delivery.error == (
        f"line_items[1].quantity: {why}: the order is kept without it."
    )
    sent = [line["quantity"] for line in order["line_items"]]
    kept = ShopOrder.objects.get()
    assert [line["quantity"] for line in kept.line_items] == [sent[0], None]
    completed = Event.objects.get(event="Order Completed")
    assert [p["quantity"] for p in completed.properties["products"]] == [sent[0], None]


def test_a_checkout_line_whose_quantity_cannot_be_read_is_kept_without_it(
    db, deliver, load_fixture, shop_headers
):
    name = "checkouts_create.json"
    checkout = json.loads(load_fixture(f"shopify/{name}"))
    checkout["line_items"][0]["quantity"] = "a few"
    body = json.dumps(checkout).encode()

    response = deliver(name, headers=resigned(shop_headers, name, body), body=body)

    assert response.status_code == 200
    delivery = WebhookDelivery.objects.get()
    assert delivery.error == (
        "line_items[0].quantity: 'a few' is not a whole number of items: "
        "the checkout is kept without it."
    )
    assert ShopCheckout.objects.get().line_items[0]["quantity"] is None


# Undated consent ---------------------------------------------------------------

DMITRI = "d.volkov@example.com"
CONSENT_TOPIC = "customers_email_marketing_consent/update"


@pytest.fixture
def dmitri_unsubscribed(settings, tmp_path, load_fixture):
    """Dmitri as the Mailchimp export leaves him: unsubscribed on 2024-12-03."""
    settings.VAR_DIR = tmp_path
    name = "mailchimp/unsubscribed_members_export.csv"
    contact_import_file(filename=name.rsplit("/", 1)[-1], data=load_fixture(name))
    dmitri = Profile.objects.get(email=DMITRI)
    assert dmitri.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    return dmitri


def undated_consent(deliver, shop_headers, *, state: str, webhook_id: str):
    body = (
        b'{"customer_id":7412345678903,"email_address":"d.volkov@example.com",'
        b'"email_marketing_consent":{"state":"' + state.encode() + b'",'
        b'"opt_in_level":"single_opt_in","consent_updated_at":null}}'
    )
    name = "customers_email_marketing_consent_update.json"
    headers = resigned(
        shop_headers,
        name,
        body,
        **{"X-Shopify-Webhook-Id": webhook_id, "X-Shopify-Topic": CONSENT_TOPIC},
    )
    return deliver(name, headers=headers, body=body)


def test_an_undated_subscribe_does_not_lift_a_dated_unsubscribe(
    db, deliver, shop_headers, dmitri_unsubscribed
):
    unsubscribed_at = dmitri_unsubscribed.subscription_changed_at
    records_before = ConsentRecord.objects.filter(profile=dmitri_unsubscribed).count()

    response = undated_consent(
        deliver, shop_headers, state="subscribed", webhook_id="u-1"
    )

    assert response.status_code == 200
    dmitri = Profile.objects.get(email=DMITRI)
    assert dmitri.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert dmitri.subscription_changed_at == unsubscribed_at
    assert ConsentRecord.objects.filter(profile=dmitri).count() == records_before
    # Said on the delivery, as an import notes a resubscription it did not make.
    assert WebhookDelivery.objects.get(delivery_id="u-1").error == (
        "The email consent 'subscribed' has no date (consent_updated_at), so it does "
        "not replace the profile's status 'unsubscribed' and is not recorded."
    )


def test_an_undated_subscribe_is_recorded_undated_and_a_dated_fact_outranks_it(
    db, deliver, shop_headers
):
    undated_consent(deliver, shop_headers, state="subscribed", webhook_id="u-2")

    dmitri = Profile.objects.get(email=DMITRI)
    record = ConsentRecord.objects.get(profile=dmitri)
    assert dmitri.subscription_status == SubscriptionStatus.SUBSCRIBED
    assert dmitri.subscription_changed_at is None
    assert record.evidence["occurred_at_is_import_time"] is True

    # An unsubscribe that happened long ago, arriving later, still wins.
    consent_record(
        profile=dmitri,
        status=SubscriptionStatus.UNSUBSCRIBED,
        source="mailchimp",
        occurred_at=utc("2024-12-03T08:15:00Z"),
    )
    dmitri.refresh_from_db()
    assert dmitri.subscription_status == SubscriptionStatus.UNSUBSCRIBED


def test_an_undated_subscribe_does_not_redate_a_dated_subscription(
    db, deliver, shop_headers
):
    ProfileFactory(
        email=DMITRI,
        subscription_status=SubscriptionStatus.SUBSCRIBED,
        subscription_changed_at=utc("2025-01-10T09:00:00Z"),
    )

    undated_consent(deliver, shop_headers, state="subscribed", webhook_id="u-3")

    dmitri = Profile.objects.get()
    assert dmitri.subscription_changed_at == utc("2025-01-10T09:00:00Z")
    assert ConsentRecord.objects.count() == 0


def test_an_undated_unsubscribe_takes_effect(db, deliver, shop_headers):
    ProfileFactory(
        email=DMITRI,
        subscription_status=SubscriptionStatus.SUBSCRIBED,
        subscription_changed_at=utc("2025-01-10T09:00:00Z"),
    )

    undated_consent(deliver, shop_headers, state="unsubscribed", webhook_id="u-4")

    dmitri = Profile.objects.get()
    delivery = WebhookDelivery.objects.get(delivery_id="u-4")
    record = ConsentRecord.objects.get()
    assert dmitri.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert dmitri.subscription_changed_at == delivery.received_at
    assert record.occurred_at == delivery.received_at
    assert record.evidence["occurred_at_is_import_time"] is True


def test_an_undated_customer_update_does_not_lift_a_dated_unsubscribe(
    db, deliver, shop_headers, load_fixture, dmitri_unsubscribed
):
    name = "customers_create_legacy_2024-10.json"
    body = (
        load_fixture(f"shopify/{name}")
        .replace(b"chloe.dubois@example.org", DMITRI.encode())
        .replace(
            b'"consent_updated_at":"2025-03-14T12:39:58-05:00"',
            b'"consent_updated_at":null',
        )
    )
    headers = resigned(
        shop_headers,
        name,
        body,
        **{"X-Shopify-Webhook-Id": "u-5", "X-Shopify-Topic": "customers/update"},
    )

    deliver(name, headers=headers, body=body)

    dmitri = Profile.objects.get(email=DMITRI)
    assert dmitri.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert not ConsentRecord.objects.filter(source="shopify").exists()


def test_the_profile_page_marks_an_undated_shop_consent(
    db, client, marketer, deliver, shop_headers
):
    undated_consent(deliver, shop_headers, state="subscribed", webhook_id="u-6")
    dmitri = Profile.objects.get(email=DMITRI)
    client.force_login(marketer)

    url = reverse("profile_detail", kwargs={"pk": dmitri.pk})
    page = client.get(url).content.decode()

    assert "undated in the webhook: the time it was received" in page


def test_a_consent_dated_in_the_future_never_outranks_a_later_unsubscribe(
    db, deliver, load_fixture, shop_headers
):
    name = "customers_email_marketing_consent_update.json"
    future = b"9999-12-31T23:59:59+00:00"
    body = load_fixture(f"shopify/{name}").replace(b"2025-03-14T12:41:07-05:00", future)
    deliver(name, headers=resigned(shop_headers, name, body), body=body)
    chloe = Profile.objects.get()
    subscribed_at = chloe.subscription_changed_at

    # Her own one-click unsubscribe, a moment later.
    consent_record(
        profile=chloe,
        status=SubscriptionStatus.UNSUBSCRIBED,
        source="unsubscribe_link",
        occurred_at=datetime.now(tz=UTC),
    )
    # customers/update repeats the same stale consent with another change.
    headers = resigned(shop_headers, name, body, **{"X-Shopify-Webhook-Id": "c-9"})
    deliver(name, headers=headers, body=body)

    chloe.refresh_from_db()
    assert subscribed_at.year == datetime.now(tz=UTC).year
    assert chloe.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    first = ConsentRecord.objects.filter(source=shopify.SOURCE).get()
    assert first.evidence["occurred_at_claimed"] == "9999-12-31T23:59:59+00:00"


def test_an_order_for_a_profile_deleted_meanwhile_is_tried_again(db, deliver):
    # The event table keeps no foreign key: the shop's event holds its profile
    # against a delete instead, and one already gone sends the delivery back.
    profile = ProfileFactory(email=BEN)
    Profile.objects.filter(pk=profile.pk).delete()

    with pytest.raises(ProfileGone):
        shopify._event_store(
            key="order:1",
            name="Order Completed",
            profile=profile,
            properties={},
            at=utc("2025-03-14T10:00:00Z"),
            delivery=WebhookDelivery(topic="orders/create"),
        )
    assert Event.objects.count() == 0


def test_a_customers_names_that_cannot_be_a_profiles_are_noted_not_stored(
    db, deliver, load_fixture, shop_headers
):
    # given a known customer, then a customer update whose first name wraps onto
    # two lines, whose last name holds an escape character and whose phone is an
    # object
    ProfileFactory(email="chloe.dubois@example.org", last_name="Dubois")
    customer = json.loads(load_fixture("shopify/customers_create.json"))
    customer.update(
        first_name="Chloé\r\nMarie", last_name="Dubois\x1b[31m", phone={"n": 1}
    )
    customer["default_address"] = {
        **(customer.get("default_address") or {}),
        "phone": None,
    }
    response = customer_updated(deliver, shop_headers, customer, "odd-1")

    # then the wrapped name is one line, the others keep what the profile had, and
    # the delivery is applied with a note naming them
    assert response.status_code == 200
    chloe = Profile.objects.get()
    assert (chloe.first_name, chloe.last_name) == ("Chloé Marie", "Dubois")
    delivery = WebhookDelivery.objects.get(delivery_id="odd-1")
    assert delivery.processed_at is not None
    assert delivery.error == (
        "last_name: it holds the control character U+001B, which no name, place "
        "or phone number holds, so the profile keeps the last name it had; phone: "
        "is not text, so the profile keeps the phone it had"
    )


def test_a_customers_phone_that_cannot_be_used_gives_way_to_the_addresss(
    db, deliver, load_fixture, shop_headers
):
    customer = json.loads(load_fixture("shopify/customers_create.json"))
    customer["phone"] = "+33\x1b612"
    customer["default_address"] = {
        **(customer.get("default_address") or {}),
        "phone": "+33 6 12 34 56 78",
    }
    customer_updated(deliver, shop_headers, customer, "odd-2")

    assert Profile.objects.get().phone == "+33 6 12 34 56 78"
    assert WebhookDelivery.objects.get(delivery_id="odd-2").error == (
        "phone: it holds the control character U+001B, which no name, place or "
        "phone number holds, so the phone is taken from default_address.phone"
    )


def test_a_new_address_replaces_the_old_ones_region(
    db, deliver, load_fixture, shop_headers
):
    ProfileFactory(
        email="chloe.dubois@example.org",
        city="São Paulo",
        region="SP",
        country_code="BR",
    )
    customer = json.loads(load_fixture("shopify/customers_create.json"))
    customer["default_address"] = {
        "city": "Paris",
        "country_code": "FR",
        "province": None,
        "province_code": None,
    }
    customer_updated(deliver, shop_headers, customer, "moved-1")

    chloe = Profile.objects.get()
    assert (chloe.city, chloe.region, chloe.country_code) == ("Paris", "", "FR")


def test_the_customer_record_and_identifies_weigh_their_times(
    db, client, deliver, load_fixture, shop_headers
):
    # given an identify of 2025-01, then the shop's customer record of 2025-03-14
    def identify(at: str, first_name: str, city: str) -> None:
        response = client.post(
            "/v1/identify",
            data=json.dumps(
                {
                    "userId": "u-chloe",
                    "timestamp": at,
                    "traits": {
                        "email": "chloe.dubois@example.org",
                        "firstName": first_name,
                        "address": {"city": city, "country": "FR"},
                    },
                }
            ),
            content_type="application/json",
            HTTP_AUTHORIZATION="Basic "
            + base64.b64encode(b"test-env-write-key:").decode(),
        )
        assert response.status_code == 200
        events_process_pending()

    identify("2025-01-01T00:00:00Z", "Chlo", "Lyon")
    customer = json.loads(load_fixture("shopify/customers_create.json"))
    customer_updated(deliver, shop_headers, customer, "t-1")
    chloe = Profile.objects.get()
    assert (chloe.first_name, chloe.city) == ("Chloé", "Paris")

    # when an identify older than the record arrives late, and an older record
    identify("2025-02-01T00:00:00Z", "Cleo", "Nice")
    customer_updated(
        deliver,
        shop_headers,
        {
            **customer,
            "id": 1,
            "first_name": "Old",
            "updated_at": "2025-01-02T00:00:00Z",
        },
        "t-2",
    )

    # then the record's name and place stand; a newer identify's replace them
    chloe.refresh_from_db()
    assert (chloe.first_name, chloe.city) == ("Chloé", "Paris")
    identify("2025-04-01T00:00:00Z", "Chloe", "Lille")
    chloe.refresh_from_db()
    assert (chloe.first_name, chloe.city) == ("Chloe", "Lille")


def test_an_order_whose_customer_time_cannot_be_read_is_kept(
    db, deliver, load_fixture, shop_headers
):
    name = "orders_create.json"
    order = json.loads(load_fixture(f"shopify/{name}"))
    order["customer"]["updated_at"] = "yesterday"
    body = json.dumps(order).encode()

    response = deliver(name, headers=resigned(shop_headers, name, body), body=body)

    assert response.status_code == 200
    assert ShopOrder.objects.count() == 1
    delivery = WebhookDelivery.objects.get()
    assert not delivery.error.startswith(PAYLOAD_REFUSED)


def test_a_consent_dated_in_the_future_never_lifts_an_earlier_unsubscribe(
    db, deliver, load_fixture, shop_headers
):
    # given a customer who unsubscribed, then a consent webhook dated in 2099
    ProfileFactory(
        email="chloe.dubois@example.org",
        subscription_status=SubscriptionStatus.UNSUBSCRIBED,
        subscription_changed_at=utc("2026-06-01T00:00:00Z"),
    )
    name = "customers_email_marketing_consent_update.json"
    future = b"2099-01-01T00:00:00+00:00"
    body = load_fixture(f"shopify/{name}").replace(b"2025-03-14T12:41:07-05:00", future)

    deliver(name, headers=resigned(shop_headers, name, body), body=body)

    # then she stays unsubscribed: nobody saw that opt-in given
    chloe = Profile.objects.get()
    assert chloe.subscription_status == SubscriptionStatus.UNSUBSCRIBED


def test_a_refused_future_subscription_leaves_no_record_and_a_near_one_counts(
    db, deliver, load_fixture, shop_headers
):
    # given a customer who unsubscribed in June 2026
    ProfileFactory(
        email="chloe.dubois@example.org",
        subscription_status=SubscriptionStatus.UNSUBSCRIBED,
        subscription_changed_at=utc("2026-06-01T00:00:00Z"),
    )
    name = "customers_email_marketing_consent_update.json"
    original = b"2025-03-14T12:41:07-05:00"

    # when the shop says she subscribed in 2099, then 30 seconds from now
    far = load_fixture(f"shopify/{name}").replace(original, b"2099-01-01T00:00:00Z")
    deliver(name, headers=resigned(shop_headers, name, far), body=far)
    chloe = Profile.objects.get()
    refused = (chloe.subscription_status, chloe.consent_records.count())
    soon = (datetime.now(tz=UTC) + timedelta(seconds=30)).isoformat().encode()
    near = load_fixture(f"shopify/{name}").replace(original, soon)
    headers = resigned(shop_headers, name, near, **{"X-Shopify-Webhook-Id": "near"})
    deliver(name, headers=headers, body=near)

    # then the first records nothing, and the second, a clock a little ahead, counts
    assert refused == (SubscriptionStatus.UNSUBSCRIBED, 0)
    chloe.refresh_from_db()
    assert chloe.subscription_status == SubscriptionStatus.SUBSCRIBED


def test_an_order_dated_years_ahead_is_placed_at_its_arrival(
    db, deliver, load_fixture, shop_headers
):
    future = (
        b'"processed_at":"2025-03-14T09:09:42-05:00"',
        b'"processed_at":"2030-01-01T00:00:00+00:00"',
    )
    body = load_fixture("shopify/orders_create.json")
    assert future[0] in body
    body = body.replace(*future)
    headers = resigned(shop_headers, "orders_create.json", body)

    deliver("orders_create.json", headers=headers, body=body)

    event = Event.objects.get()
    assert event.timestamp == event.received_at
    delivery = WebhookDelivery.objects.get()
    assert "The order is dated 2030-01-01T00:00:00+00:00, after it arrived" in (
        delivery.error
    )


def test_an_older_order_update_arriving_late_leaves_the_profile_alone(
    db, deliver, load_fixture, shop_headers
):
    deliver("orders_create.json")  # updated 09:09:47
    renamed = (b'"first_name":"Ben"', b'"first_name":"Benjamin"')
    later = (b'"updated_at":"2025-03-14T09:09:47', b'"updated_at":"2025-03-14T12:00:00')
    order_update(deliver, load_fixture, shop_headers, "r-1", a=renamed, b=later)
    older = (b'"updated_at":"2025-03-14T09:09:47', b'"updated_at":"2025-03-14T10:00:00')
    stale = (b'"first_name":"Ben"', b'"first_name":"Old Ben"')

    delivery = order_update(
        deliver, load_fixture, shop_headers, "s-1", a=older, b=stale
    )

    assert Profile.objects.get().first_name == "Benjamin"
    assert delivery.error.startswith("An older version of the order than the one kept")


def test_a_checkout_naming_its_buyer_only_under_customer_is_hers(
    db, deliver, load_fixture, shop_headers
):
    payload = json.loads(load_fixture("shopify/checkouts_create.json"))
    email = payload["email"]
    payload["email"] = None
    payload["customer"] = {**(payload.get("customer") or {}), "email": email}
    body = json.dumps(payload).encode()

    deliver(
        "checkouts_create.json",
        headers=resigned(shop_headers, "checkouts_create.json", body),
        body=body,
    )

    checkout = ShopCheckout.objects.get()
    assert checkout.profile == Profile.objects.get(email=email)
    assert Event.objects.get().event == "Checkout Started"


@pytest.mark.parametrize(
    ("address", "region"),
    [
        # Only the city's case changed: the same place.
        ({"city": "são paulo", "country_code": "BR"}, "SP"),
        # The province was sent but refused: the note says the region stays.
        ({"city": "Paris", "country_code": "FR", "province_code": "I\x07F"}, "SP"),
    ],
)
def test_the_region_stays_when_the_place_is_the_same_or_its_province_refused(
    db, deliver, load_fixture, shop_headers, address, region
):
    ProfileFactory(
        email="chloe.dubois@example.org",
        city="São Paulo",
        region="SP",
        country_code="BR",
    )
    customer = json.loads(load_fixture("shopify/customers_create.json"))
    customer["default_address"] = address
    customer_updated(deliver, shop_headers, customer, "rg-1")

    assert Profile.objects.get().region == region


def shop_refund(refund_id: int, *amounts: str, status: str = "success") -> dict:
    return {
        "id": refund_id,
        "order_id": 5975551934712,
        "created_at": "2025-03-14T11:00:00-05:00",
        "note": "Returned the tent",
        "transactions": [
            {"kind": "refund", "status": status, "amount": amount, "currency": "USD"}
            for amount in amounts
        ],
    }


def test_a_refund_in_an_order_update_lowers_bens_lifetime_value_once(
    db, deliver, load_fixture, shop_headers
):
    deliver("orders_create.json")
    events_process_pending()
    assert Profile.objects.get().lifetime_value == Decimal("152.29")
    # Shopify's current total leaves out both refunds, the pending one too.
    refunds = [
        shop_refund(801, "40.00", "10.29"),
        shop_refund(802, "5", status="pending"),
    ]

    delivery = order_payload_update(
        deliver, load_fixture, shop_headers, "u-1", topic="orders/updated",
        refunds=refunds, financial_status="partially_refunded",
        current_total_price="97.00",
    )  # fmt: skip
    order_payload_update(
        deliver, load_fixture, shop_headers, "u-2", topic="orders/updated",
        refunds=refunds, current_total_price="97.00",
    )  # fmt: skip
    events_process_pending()

    refund = Event.objects.get(event="Order Refunded")
    assert refund.properties == {
        "order_id": "5975551934712",
        "refund_id": "801",
        "total": 50.29,
        "currency": "USD",
        "note": "Returned the tent",
    }
    assert refund.timestamp == utc("2025-03-14T16:00:00Z")
    assert "Refund 802 returned no money" in delivery.error
    profile = Profile.objects.get()
    assert (profile.lifetime_value, profile.order_count) == (Decimal("102.00"), 1)


def test_refunds_create_lowers_lifetime_value_and_a_later_update_adds_nothing(
    db, deliver, load_fixture, shop_headers, admin_client
):
    refund = shop_refund(901, "152.29")
    body = json.dumps(refund).encode()
    headers = resigned(
        shop_headers,
        "orders_create.json",
        body,
        **{"X-Shopify-Topic": "refunds/create", "X-Shopify-Webhook-Id": "rf-0"},
    )
    deliver("orders_create.json", headers=headers, body=body)
    waiting = WebhookDelivery.objects.get(delivery_id="rf-0")
    assert "which Bespoke has not received yet" in waiting.error
    assert waiting.processed_at is None
    # Waiting is not failing: the Sources page counts it apart.
    shop = next(s for s in sources_health() if s["name"] == "shopify")
    assert (shop["failed"]["count"], shop["awaiting_orders"]) == (0, 1)
    page = admin_client.get(reverse("sources_health")).content.decode()
    assert 'data-figure="awaiting_orders">1<' in page

    # the order arrives: the refund that waited for it is applied with it
    deliver("orders_create.json")
    waiting.refresh_from_db()
    assert waiting.processed_at is not None
    events_process_pending()
    assert Profile.objects.get().lifetime_value == Decimal("0.00")

    headers["X-Shopify-Webhook-Id"] = "rf-1"
    deliver("orders_create.json", headers=headers, body=body)
    order_payload_update(
        deliver, load_fixture, shop_headers, "u-1", topic="orders/updated",
        refunds=[refund], current_total_price="0.00",
    )  # fmt: skip
    events_process_pending()

    assert Event.objects.filter(event="Order Refunded").count() == 1
    profile = Profile.objects.get()
    assert (profile.lifetime_value, profile.order_count) == (Decimal("0.00"), 1)


def test_a_cancelled_order_is_no_longer_counted(
    db, deliver, load_fixture, shop_headers
):
    deliver("orders_create.json")
    events_process_pending()

    delivery = order_payload_update(
        deliver, load_fixture, shop_headers, "c-1", topic="orders/cancelled",
        cancelled_at="2025-03-14T12:00:00-05:00", cancel_reason="customer",
    )  # fmt: skip
    events_process_pending()

    cancelled = Event.objects.get(event="Order Cancelled")
    assert cancelled.properties["reason"] == "customer"
    assert cancelled.timestamp == utc("2025-03-14T17:00:00Z")
    assert delivery.error == ""
    profile = Profile.objects.get()
    assert (profile.lifetime_value, profile.order_count) == (Decimal("0.00"), 0)
    assert profile.last_order_at is None


def test_a_customer_who_changes_address_in_the_shop_keeps_her_profile(
    db, deliver, load_fixture, shop_headers
):
    deliver("customers_create.json")
    chloe = Profile.objects.get()
    customer = json.loads(load_fixture("shopify/customers_create.json"))
    customer.update(email="Chloe.New@Example.org", updated_at="2025-03-20T10:00:00Z")

    response = customer_updated(deliver, shop_headers, customer, "c-new-1")

    assert response.status_code == 200
    assert list(Profile.objects.values_list("pk", "email", "email_display")) == [
        (chloe.pk, "chloe.new@example.org", "Chloe.New@Example.org")
    ]
    delivery = WebhookDelivery.objects.get(delivery_id="c-new-1")
    assert "changed in the shop from chloe.dubois@example.org" in delivery.error


def test_two_shop_customers_merged_into_one_profile_do_not_swap_its_address(
    db, deliver, load_fixture, shop_headers
):
    # Chloe's two shop accounts, the profiles merged by the marketer into one that
    # kept her first address.
    deliver("customers_create.json")
    chloe = Profile.objects.get()
    ProfileIdentity.objects.create(
        profile=chloe, kind=IdentityKind.SHOPIFY_CUSTOMER, value="7412345679999"
    )
    customer = json.loads(load_fixture("shopify/customers_create.json"))
    second = {**customer, "id": 7412345679999, "email": "chloe.work@example.org"}
    second["updated_at"] = "2025-03-20T10:00:00Z"

    customer_updated(deliver, shop_headers, second, "c-second")

    chloe.refresh_from_db()
    assert chloe.email == "chloe.dubois@example.org"
    assert WebhookDelivery.objects.get(delivery_id="c-second").error == (
        "The shop's customer 7412345679999 has the address chloe.work@example.org, "
        "but this profile holds more than one shop customer (merged): it keeps "
        "chloe.dubois@example.org."
    )


def test_a_customers_new_address_another_profile_has_is_not_taken(
    db, deliver, load_fixture, shop_headers
):
    deliver("customers_create.json")
    other = ProfileFactory(email="dora@example.org")
    customer = json.loads(load_fixture("shopify/customers_create.json"))
    customer["email"] = "dora@example.org"

    customer_updated(deliver, shop_headers, customer, "c-dora-1")

    chloe = Profile.objects.exclude(pk=other.pk).get()
    assert chloe.email == "chloe.dubois@example.org"
    assert chloe.first_name == "Chloé"
    other.refresh_from_db()
    assert other.first_name != "Chloé"
    delivery = WebhookDelivery.objects.get(delivery_id="c-dora-1")
    assert "which another profile has: this profile keeps" in delivery.error


def test_an_order_naming_only_a_known_customer_joins_his_profile(
    db, deliver, load_fixture, shop_headers
):
    deliver("orders_create.json")
    payload = json.loads(load_fixture("shopify/orders_create.json"))
    payload.update(id=1, email=None, contact_email=None, checkout_token=None)
    payload["customer"]["email"] = None
    body = json.dumps(payload).encode()
    headers = resigned(
        shop_headers,
        "orders_create.json",
        body,
        **{"X-Shopify-Webhook-Id": "o-2"},
    )

    deliver("orders_create.json", headers=headers, body=body)

    assert ShopOrder.objects.get(shop_id="1").profile == Profile.objects.get()
    assert Event.objects.filter(event="Order Completed").count() == 2


def test_an_older_customer_update_arriving_late_changes_nothing(
    db, deliver, load_fixture, shop_headers
):
    deliver("customers_create.json")
    customer = json.loads(load_fixture("shopify/customers_create.json"))
    customer.update(email="chloe.c@example.org", updated_at="2025-03-20T10:00:00Z")
    customer_updated(deliver, shop_headers, customer, "c-new")
    customer.update(email="chloe.b@example.org", updated_at="2025-03-10T10:00:00Z")

    customer_updated(deliver, shop_headers, customer, "c-late")

    assert list(Profile.objects.values_list("email", flat=True)) == [
        "chloe.c@example.org"
    ]
    assert "An older version of the customer" in (
        WebhookDelivery.objects.get(delivery_id="c-late").error
    )


def test_an_update_of_an_old_order_leaves_the_customers_new_address(
    db, deliver, load_fixture, shop_headers
):
    # given Ben, whose order was placed under his old address, and who has changed
    # it in the shop since
    deliver("orders_create.json")
    payload = json.loads(load_fixture("shopify/orders_create.json"))
    account = {**payload["customer"], "email": "ben.new@example.net"}
    account["updated_at"] = "2025-03-20T10:00:00Z"
    customer_updated(deliver, shop_headers, account, "c-ben")
    assert Profile.objects.get().email == "ben.new@example.net"

    # when the old order is updated (fulfilled), still naming the old address
    order_payload_update(
        deliver, load_fixture, shop_headers, "u-old", topic="orders/updated",
        financial_status="refunded",
    )  # fmt: skip

    # then Ben keeps his new address, and the order stays his
    assert list(Profile.objects.values_list("email", flat=True)) == [
        "ben.new@example.net"
    ]
    assert ShopOrder.objects.get().profile == Profile.objects.get()


def test_a_refund_in_the_customers_currency_counts_its_shop_money(
    db, deliver, load_fixture, shop_headers
):
    deliver("orders_create.json")
    refund = shop_refund(811, "92.00")
    refund["transactions"][0].update(
        currency="EUR",
        amount_set={
            "shop_money": {"amount": "100.00", "currency_code": "USD"},
            "presentment_money": {"amount": "92.00", "currency_code": "EUR"},
        },
    )
    euros_only = shop_refund(812, "5.00")
    euros_only["transactions"][0]["currency"] = "EUR"

    delivery = order_payload_update(
        deliver, load_fixture, shop_headers, "u-fx", topic="orders/updated",
        refunds=[refund, euros_only], current_total_price="46.89",
    )  # fmt: skip
    events_process_pending()

    assert Profile.objects.get().lifetime_value == Decimal("52.29")
    # 5 euros came to 5.40 in the shop's money, which the payload does not say: what
    # the order came to before its refunds cannot be told, and no edit is read.
    assert not Event.objects.filter(event="Order Updated").exists()
    assert "Refund 812 is in EUR, not the order's USD" in delivery.error


# An order before its customer had an address ------------------------------------


def addressless_order(deliver, load_fixture, shop_headers, **changes) -> dict:
    """Ben's order, placed before his shop account had an address (a phone only)."""
    order = load_fixture("shopify/orders_create.json", as_json=True)
    order.update(email="", contact_email=None, **changes)
    order["customer"]["email"] = None
    payload_deliver(
        deliver,
        shop_headers,
        order,
        topic="orders/create",
        webhook_id=f"o-{order['id']}",
        like="orders_create.json",
    )
    return order


def test_an_order_placed_before_its_customer_had_an_address_joins_her_later(
    db, deliver, load_fixture, shop_headers
):
    order = addressless_order(deliver, load_fixture, shop_headers)
    assert ShopOrder.objects.get().profile is None
    assert not Profile.objects.exists()

    customer = load_fixture("shopify/customers_create.json", as_json=True)
    customer.update(id=order["customer"]["id"], email=BEN)
    response = customer_updated(deliver, shop_headers, customer, "c-ben")
    events_process_pending()

    assert response.status_code == 200
    ben = Profile.objects.get(email=BEN)
    assert ShopOrder.objects.get().profile == ben
    assert WebhookDelivery.objects.get(delivery_id="c-ben").error == (
        "1 order placed before the customer had an address joined the profile: "
        f"{order['name']}."
    )
    completed = Event.objects.get(event="Order Completed")
    assert (completed.profile, completed.processed_at is not None) == (ben, True)
    assert (ben.order_count, ben.lifetime_value) == (1, Decimal("152.29"))
    assert_counted_alike(ben)

    # Told again, the customer brings nothing twice.
    customer_updated(deliver, shop_headers, customer, "c-ben-2")
    assert Event.objects.filter(event="Order Completed").count() == 1


@pytest.mark.parametrize("refund_first", [False, True])
def test_a_refund_of_an_order_without_an_address_waits_and_joins_with_it(
    db, deliver, load_fixture, shop_headers, refund_first
):
    if refund_first:
        refund_deliver(deliver, shop_headers, shop_refund(907, "52.29"), "rf-7")
    order = addressless_order(deliver, load_fixture, shop_headers)
    if not refund_first:
        refund_deliver(deliver, shop_headers, shop_refund(907, "52.29"), "rf-7")
    waiting = WebhookDelivery.objects.get(delivery_id="rf-7")
    assert waiting.processed_at is None
    assert waiting.error.startswith(AWAITS_ORDER)

    customer = load_fixture("shopify/customers_create.json", as_json=True)
    customer.update(id=order["customer"]["id"], email=BEN)
    customer_updated(deliver, shop_headers, customer, "c-ben")
    events_process_pending()

    assert WebhookDelivery.objects.get(delivery_id="rf-7").processed_at is not None
    ben = Profile.objects.get(email=BEN)
    assert (ben.order_count, ben.lifetime_value) == (1, Decimal("100.00"))
    assert_counted_alike(ben)


def test_a_test_order_without_an_address_joins_nobody_later(
    db, deliver, load_fixture, shop_headers
):
    order = addressless_order(deliver, load_fixture, shop_headers, test=True)
    customer = load_fixture("shopify/customers_create.json", as_json=True)
    customer.update(id=order["customer"]["id"], email=BEN)

    customer_updated(deliver, shop_headers, customer, "c-ben")

    assert ShopOrder.objects.get().profile is None
    assert not Event.objects.filter(event="Order Completed").exists()


def test_a_customers_address_that_is_no_address_is_named_and_changes_nothing(
    db, deliver, load_fixture, shop_headers
):
    deliver("customers_create.json")
    customer = load_fixture("shopify/customers_create.json", as_json=True)
    customer.update(email="not-an-email", updated_at="2025-03-20T10:00:00Z")

    customer_updated(deliver, shop_headers, customer, "c-bad")

    assert Profile.objects.get().email == "chloe.dubois@example.org"
    assert WebhookDelivery.objects.get(delivery_id="c-bad").error == (
        "The customer's email 'not-an-email' is not an address: the profile keeps "
        "chloe.dubois@example.org."
    )


def test_an_order_the_shop_later_marks_a_test_stops_counting(
    db, deliver, load_fixture, shop_headers
):
    deliver("orders_create.json")
    events_process_pending()
    ben = Profile.objects.get(email=BEN)
    assert (ben.order_count, ben.lifetime_value) == (1, Decimal("152.29"))

    order_payload_update(
        deliver, load_fixture, shop_headers, "t-1", topic="orders/updated", test=True
    )
    events_process_pending()

    ben.refresh_from_db()
    assert (ben.order_count, ben.lifetime_value, ben.first_order_at) == (
        0,
        Decimal("0.00"),
        None,
    )
    assert ShopOrder.objects.get().is_test
    assert_counted_alike(ben)


def lock_waited_for(*, seconds: float) -> bool:
    """Whether some connection to the test database waits on a lock, within `seconds`."""
    with other_connection() as watcher:
        watcher.autocommit = True
        for _ in range(int(seconds * 20)):
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()[0]
            if waiting:
                return True
            threading.Event().wait(0.05)
    return False


@pytest.mark.django_db(transaction=True)
def test_a_customer_update_waits_for_a_profile_being_changed_and_keeps_that_change(
    deliver, load_fixture, shop_headers
):
    # A worker applying the site's identify holds Chloé's profile and gives her a
    # plan while her shop account's update arrives.
    deliver("customers_create.json")
    chloe = Profile.objects.get()
    customer = load_fixture("shopify/customers_create.json", as_json=True)
    customer.update(first_name="Chloé-Anne", updated_at="2025-03-15T09:00:00-05:00")
    changed, waited = threading.Event(), threading.Event()

    def worker() -> None:
        with other_connection() as other, other.transaction():
            other.execute(
                'UPDATE profiles_profile SET traits = traits || \'{"plan": "gold"}\' '
                "WHERE id = %s",
                [chloe.pk],
            )
            changed.set()
            if lock_waited_for(seconds=10):
                waited.set()

    thread = threading.Thread(target=worker)
    thread.start()
    assert changed.wait(10)
    try:
        response = customer_updated(deliver, shop_headers, customer, "race-1")
    finally:
        thread.join(15)

    assert response.status_code == 200
    assert waited.is_set()
    chloe.refresh_from_db()
    assert chloe.first_name == "Chloé-Anne"
    assert chloe.traits["plan"] == "gold"
    assert WebhookDelivery.objects.get(delivery_id="race-1").processed_at is not None


def test_the_sources_page_links_the_deliveries_applied_with_a_note(
    db, deliver, load_fixture, shop_headers, admin_client
):
    euros = (b'"currency":"USD"', b'"currency":"EUR"')
    order_update(deliver, load_fixture, shop_headers, "eur-note", a=euros)

    page = admin_client.get(reverse("sources_health")).content.decode()

    changelist = reverse("admin:profiles_webhookdelivery_changelist")
    assert f'href="{changelist}?has_error=note" data-link="webhook-notes"' in page
    noted = admin_client.get(changelist, {"has_error": "note"})
    assert [d.delivery_id for d in noted.context["cl"].queryset] == ["eur-note"]
