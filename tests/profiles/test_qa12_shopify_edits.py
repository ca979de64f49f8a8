"""QA qa12: Shopify order edits against what a merchant's data does.

Each test is a fault the pass found in the first version of edits, fixed since: a
pending refund read as an edit, and two versions of one second sharing a key.
"""

import json
from decimal import Decimal

import pytest

from profiles.models import Event
from profiles.processing import events_process_pending
from tests.profiles.test_shopify_order_edits import (  # noqa: F401 - the fixture
    _deliver,
    _figures,
    shop_secret,
)

pytestmark = pytest.mark.django_db


def _copy(order: dict) -> dict:
    return json.loads(json.dumps(order))


def _refund(order: dict, refund_id: int, *, status: str) -> dict:
    # The second item of Ben's order paid back (52.29 with its tax and shipping).
    return {
        "id": refund_id,
        "order_id": order["id"],
        "created_at": "2025-03-15T10:00:00-05:00",
        "transactions": [
            {"kind": "refund", "status": status, "amount": "52.29", "currency": "USD"}
        ],
    }


def test_a_refund_still_pending_leaves_lifetime_value_unchanged(client, load_fixture):
    """The merchant refunds an item of Ben's 152.29 order; the payment provider has
    not paid it back yet (the refund's transaction is pending). Shopify's current
    total already drops to 100.00. The delivery's note tells the marketer "lifetime
    value is unchanged", yet Ben's lifetime value and average show 100.00, and his
    timeline shows an edit (was 152.29) the merchant never made. When the refund
    succeeds a second made-up edit puts it back to 152.29."""
    order = load_fixture("shopify/orders_create.json", as_json=True)
    _deliver(client, order, topic="orders/create", webhook_id="create")
    events_process_pending()

    pending = _copy(order)
    pending["current_total_price"] = "100.00"
    pending["updated_at"] = "2025-03-15T10:00:00-05:00"
    pending["refunds"] = [_refund(order, 801, status="pending")]
    _deliver(client, pending, topic="orders/updated", webhook_id="pending")
    events_process_pending()

    assert _figures() == (Decimal("152.29"), 1, Decimal("152.29"))
    assert not Event.objects.filter(event="Order Updated").exists()


def test_an_edit_and_its_refund_in_the_same_second_lower_the_value_once(
    client, load_fixture
):
    """The merchant takes the second item off Ben's 152.29 order (an edit: the
    order is now 100.00) and pays the 52.29 back straight away; Shopify's two
    versions carry the same updated_at, to the second. The second version's
    Order Updated gets the first one's messageId and is dropped, so the edit
    counts and the refund is taken off it again: Ben shows 47.71, not 100.00."""
    order = load_fixture("shopify/orders_create.json", as_json=True)
    _deliver(client, order, topic="orders/create", webhook_id="create")
    events_process_pending()

    edited = _copy(order)
    edited["total_price"] = edited["current_total_price"] = "100.00"
    edited["updated_at"] = "2025-03-15T10:00:00-05:00"
    _deliver(client, edited, topic="orders/updated", webhook_id="edit")
    paid_back = _copy(edited)
    paid_back["refunds"] = [_refund(order, 801, status="success")]
    _deliver(client, paid_back, topic="orders/updated", webhook_id="refund")
    events_process_pending()

    assert _figures() == (Decimal("100.00"), 1, Decimal("100.00"))
