"""The admin pages of shop webhooks, checkouts and orders, and the retry action."""

import pytest
from django.urls import reverse
from django.utils import timezone

from profiles.models import ShopCheckout, ShopOrder, WebhookDelivery
from profiles.shopify import shopify_delivery_store

pytestmark = pytest.mark.django_db


def stored(load_fixture, name: str, topic: str, delivery_id: str) -> WebhookDelivery:
    delivery, _ = shopify_delivery_store(
        delivery_id=delivery_id,
        topic=topic,
        shop_domain="bespoke-outdoors.myshopify.com",
        api_version="2025-10",
        payload=load_fixture(f"shopify/{name}", as_json=True),
        received_at=timezone.now(),
    )
    return delivery


def test_the_retry_action_applies_unfinished_deliveries_only(
    admin_client, load_fixture
):
    waiting = stored(load_fixture, "orders_create.json", "orders/create", "d-1")
    done = stored(load_fixture, "checkouts_create.json", "checkouts/create", "d-2")
    WebhookDelivery.objects.filter(pk=done.pk).update(processed_at=timezone.now())
    url = reverse("admin:profiles_webhookdelivery_changelist")

    response = admin_client.post(
        url,
        {"action": "deliveries_retry", "_selected_action": [waiting.pk, done.pk]},
        follow=True,
    )

    page = response.content.decode()
    assert "1 of 1 unfinished deliveries applied; 1 selected were finished" in page
    waiting.refresh_from_db()
    assert waiting.processed_at is not None
    assert ShopOrder.objects.count() == 1
    # The finished checkout delivery was not applied a second time.
    assert ShopCheckout.objects.count() == 0


def test_deliveries_checkouts_and_orders_have_read_only_pages(
    admin_client, load_fixture
):
    delivery = stored(load_fixture, "orders_create.json", "orders/create", "d-3")
    WebhookDelivery.objects.filter(pk=delivery.pk).update(error="KeyError: 'id'")
    ShopOrder.objects.create(shop_id="820982911946154508", name="#1001", email="a@b.c")
    ShopCheckout.objects.create(token="tok-1", email="a@b.c")

    for model in ("webhookdelivery", "shoporder", "shopcheckout"):
        response = admin_client.get(reverse(f"admin:profiles_{model}_changelist"))
        assert response.status_code == 200, model
        assert reverse(f"admin:profiles_{model}_add") not in response.content.decode()

    listing = admin_client.get(reverse("admin:profiles_webhookdelivery_changelist"))
    assert "KeyError: &#x27;id&#x27;" in listing.content.decode()
    order = ShopOrder.objects.get()
    change = admin_client.get(
        reverse("admin:profiles_shoporder_change", args=[order.pk])
    )
    assert change.status_code == 200
    assert 'name="_save"' not in change.content.decode()


def test_the_deliveries_with_an_error_are_one_filter_away(admin_client, load_fixture):
    failed = stored(load_fixture, "orders_create.json", "orders/create", "d-4")
    stored(load_fixture, "checkouts_create.json", "checkouts/create", "d-5")
    WebhookDelivery.objects.filter(pk=failed.pk).update(error="KeyError: 'id'")
    url = reverse("admin:profiles_webhookdelivery_changelist")

    response = admin_client.get(url, {"has_error": "yes"})

    assert list(response.context["cl"].queryset) == [failed]


def test_the_sources_page_links_to_the_deliveries_with_an_error(
    admin_client, load_fixture
):
    failed = stored(load_fixture, "orders_create.json", "orders/create", "d-6")
    WebhookDelivery.objects.filter(pk=failed.pk).update(error="KeyError: 'id'")

    page = admin_client.get(reverse("sources_health")).content.decode()

    changelist = reverse("admin:profiles_webhookdelivery_changelist")
    assert f'href="{changelist}?has_error=yes"' in page


def test_a_delivery_applied_with_a_note_reads_apart_from_one_not_applied(
    admin_client, load_fixture
):
    failed = stored(load_fixture, "orders_create.json", "orders/create", "d-7")
    WebhookDelivery.objects.filter(pk=failed.pk).update(error="KeyError: 'id'")
    stale = stored(load_fixture, "orders_create.json", "orders/updated", "d-8")
    WebhookDelivery.objects.filter(pk=stale.pk).update(
        error="An older version of the order: not applied.", processed_at=timezone.now()
    )
    url = reverse("admin:profiles_webhookdelivery_changelist")

    noted = admin_client.get(url, {"has_error": "note"})
    unfinished = admin_client.get(url, {"has_error": "unfinished"})

    assert list(noted.context["cl"].queryset) == [stale]
    assert list(unfinished.context["cl"].queryset) == [failed]
    listing = admin_client.get(url).content.decode()
    assert "Applied, with a note: An older version of the order" in listing
    assert "Not applied yet: KeyError" in listing
