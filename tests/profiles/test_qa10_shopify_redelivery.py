"""QA pass qa10: a shop's order delivered again after its profile was deleted by hand.

A privacy admin erases a person by hand (docs/shopify.md: Bespoke has no erasure
requests yet), which deletes the profile and its events; the order row stays, its
profile emptied. The shop then sends the order again (orders/updated: a fulfilment,
a note). The delivery makes the profile again and gives it the order, but the
order's Order Completed is now refused as already claimed: the profile shows an
order that no figure counts. Before messageIds were claimed apart, the event was
stored again and the order counted; a claim now knows its event, and stores it
again once it is gone.
"""

import base64
import hashlib
import hmac
from decimal import Decimal

from profiles.models import Event, Profile, ShopOrder
from profiles.processing import events_process_pending

URL = "/webhooks/shopify"
SECRET = b"test_shopify_webhook_secret_DO_NOT_USE"
BEN = "ben.okafor@example.net"


def _deliver(client, body: bytes, headers: dict, *, topic: str, webhook_id: str):
    sent = {
        **headers,
        "X-Shopify-Topic": topic,
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Hmac-Sha256": base64.b64encode(
            hmac.new(SECRET, body, hashlib.sha256).digest()
        ).decode(),
    }
    sent.pop("Content-Type")
    response = client.post(
        URL, data=body, content_type="application/json", headers=sent
    )
    assert response.status_code == 200, response.content
    return response


def test_an_order_that_joins_a_profile_again_is_counted_on_it(db, client, load_fixture):
    # Given Ben's order, applied and counted
    body = load_fixture("shopify/orders_create.json")
    headers = load_fixture("shopify/webhook_headers.json", as_json=True)["deliveries"][
        "orders_create.json"
    ]
    _deliver(client, body, headers, topic="orders/create", webhook_id="first")
    events_process_pending()
    assert Profile.objects.get(email=BEN).lifetime_value == Decimal("152.29")

    # and his profile deleted by hand, with its events
    Profile.objects.filter(email=BEN).delete()
    assert not Event.objects.exists()

    # When the shop sends the order again
    _deliver(client, body, headers, topic="orders/updated", webhook_id="later")
    events_process_pending()

    # Then the order he is given again counts on his new profile
    ben = Profile.objects.get(email=BEN)
    assert ShopOrder.objects.get().profile == ben
    assert (ben.order_count, ben.lifetime_value) == (1, Decimal("152.29"))
