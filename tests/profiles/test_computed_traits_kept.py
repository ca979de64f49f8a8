"""Computed traits kept and added to, chunk by chunk, are those of all events at once.

Each test processes events in some split into chunks, then compares the profile's
figures with a full recompute (profile_traits_compute) at the same moment.
"""

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db.models import JSONField, Value

from profiles.models import Event, IdentityKind, Profile, ProfileIdentity
from profiles.processing import events_process_pending, profile_traits_compute
from profiles.processing_traits import (
    COMPUTED_FIELDS,
    TraitsRefresh,
    _refresh_in_python,
)
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 3, 15, 12, 0, tzinfo=UTC)
FIGURES = (*COMPUTED_FIELDS, "engagement_value", "category_counts")


def event(user_id: str = "usr_1", *, at=None, received=None, **fields) -> Event:
    fields.setdefault("type", "track")
    return Event.objects.create(
        message_id=f"msg-{uuid.uuid4()}",
        user_id=user_id,
        timestamp=at or NOW,
        received_at=received or NOW,
        **fields,
    )


def process(at: datetime, *, limit: int | None = None) -> None:
    with time_machine.travel(at, tick=False):
        events_process_pending(limit=limit)


def figures(pk: int) -> dict:
    return Profile.objects.values(*FIGURES).get(pk=pk)


def recomputed(pk: int, at: datetime) -> dict:
    with time_machine.travel(at, tick=False):
        profile_traits_compute(profile=Profile.objects.get(pk=pk))
    return figures(pk)


def assert_same(kept: dict, full: dict) -> None:
    kept, full = dict(kept), dict(full)
    assert kept.pop("engagement_value") == pytest.approx(
        full.pop("engagement_value"), rel=1e-9, abs=1e-9
    )
    assert kept == full


def user_profile(value: str = "usr_1") -> Profile:
    return ProfileIdentity.objects.get(kind=IdentityKind.USER_ID, value=value).profile


def shop_event(profile: Profile, **fields) -> Event:
    # As a Shopify webhook stores its events: with the profile, not yet processed.
    return event("", profile=profile, **fields)


def test_an_event_stored_with_its_profile_counts_once_processed():
    ben = ProfileFactory()  # keeps nothing yet, so his first chunk reads everything
    shop_event(ben, event="Email Opened", received=NOW - timedelta(minutes=1))
    shop_event(
        ben,
        event="Order Completed",
        properties={
            "order_id": "1001",
            "total": 10,
            "products": [{"category": "Boots"}],
        },
    )

    process(NOW, limit=1)  # the open; the order waits, already on Ben's profile
    assert figures(ben.pk)["order_count"] == 0
    process(NOW)

    assert_same(figures(ben.pk), recomputed(ben.pk, NOW))
    assert figures(ben.pk)["category_counts"]["Boots"][0] == 1


def test_an_order_reported_twice_while_one_report_waits_counts_once():
    ben = ProfileFactory()
    shop_event(ben, event="Email Opened", received=NOW - timedelta(hours=1))
    process(NOW)
    order = {"order_id": "1001", "total": 10}
    shop_event(
        ben,
        event="Order Completed",
        at=NOW - timedelta(days=1),
        properties=order,
    )
    event(
        "",
        profile=ben,
        event="Order Completed",
        at=NOW - timedelta(hours=23),
        received=NOW - timedelta(minutes=5),
        properties=order,
    )

    process(NOW, limit=1)
    process(NOW)

    assert_same(figures(ben.pk), recomputed(ben.pk, NOW))
    assert figures(ben.pk)["engagement_score"] == round(3 + 10 * 0.5 ** (1 / 30))


@pytest.mark.parametrize(
    ("first", "again", "later"),
    [
        # An open ten days ahead of the clock, then a click forty days on.
        (("Email Opened", 10), ("Email Link Clicked", 40), 40),
        # An order five days ahead, reported again as placed the day before.
        (("Order Completed", 5), ("Order Completed", -1), 60),
        # An order thirty days ahead, reported again as placed now.
        (("Order Completed", 30), ("Order Completed", 0), 30),
    ],
)
def test_an_event_timestamped_ahead_of_the_clock_counts_from_when_it_was_processed(
    first, again, later
):
    order = {"order_id": "A", "total": 10}
    name, days = first
    event(event=name, at=NOW + timedelta(days=days), properties=order)
    process(NOW)
    moment = NOW + timedelta(days=later)
    name, days = again
    event(event=name, at=NOW + timedelta(days=days), properties=order)

    process(moment)

    profile = user_profile()
    assert_same(figures(profile.pk), recomputed(profile.pk, moment))


@pytest.mark.parametrize(
    "counts",
    [
        None,
        Value(None, JSONField()),
        Value([1, 2], JSONField()),
        {"Boots": 1, "X": "y"},
    ],
    ids=["sql-null", "json-null", "not-an-object", "not-pairs"],
)
def test_category_counts_no_refresh_wrote_are_counted_again_in_full(counts):
    event(
        event="Product Viewed",
        at=NOW - timedelta(days=1),
        properties={"category": "Boots"},
    )
    process(NOW)
    profile = user_profile()
    Profile.objects.filter(pk=profile.pk).update(category_counts=counts)
    event(event="Product Viewed", properties={"category": "Tents"})

    process(NOW)

    kept = figures(profile.pk)
    assert set(kept["category_counts"]) == {"Boots", "Tents"}
    assert_same(kept, recomputed(profile.pk, NOW))


def test_a_negative_lifetime_value_stops_at_the_limit():
    for number in range(1001):
        event(
            event="Order Completed",
            properties={"order_id": f"refund-{number}", "total": "-999999999.99"},
        )

    process(NOW)

    assert user_profile().lifetime_value == Decimal("-999999999999.99")


@pytest.mark.parametrize(
    ("total", "counted"), [("1e-50", False), (1e-300, False), ("1e-15", True)]
)
def test_an_amount_too_small_to_keep_is_left_out_alike_in_sql_and_python(
    total, counted
):
    event(event="Order Completed", properties={"order_id": "A", "total": total})
    event(event="Order Completed", properties={"order_id": "B", "total": 10})
    process(NOW)
    profile = user_profile()
    by_sql = recomputed(profile.pk, NOW)

    _refresh_in_python(TraitsRefresh(profile_ids={profile.pk}), now=NOW)

    assert_same(figures(profile.pk), by_sql)
    assert by_sql["average_order_value"] == (Decimal("5.00") if counted else 10)


@pytest.mark.parametrize(
    "ids", [(1058, 1058.0), ("1058", 1058.0), (1.5e3, 1500), (1e-7, 0.0000001)]
)
def test_an_order_id_written_as_another_number_is_one_order_in_sql_and_python(ids):
    first, again = ids
    for order_id in (first, again):
        event(
            event="Order Completed",
            properties={"order_id": order_id, "total": 20, "currency": "USD"},
        )
    process(NOW)
    profile = user_profile()
    by_sql = recomputed(profile.pk, NOW)

    _refresh_in_python(TraitsRefresh(profile_ids={profile.pk}), now=NOW)

    assert_same(figures(profile.pk), by_sql)
    assert (by_sql["order_count"], by_sql["lifetime_value"]) == (1, Decimal("20.00"))


@pytest.mark.parametrize(
    ("category", "read_as"),
    [("\tBoots\n", "Boots"), ("\u00a0Boots", "\u00a0Boots"), ("\t", None)],
)
def test_a_category_is_trimmed_of_the_same_blanks_in_sql_and_python(category, read_as):
    event(event="Product Viewed", properties={"category": category})
    process(NOW)
    profile = user_profile()
    by_sql = recomputed(profile.pk, NOW)

    _refresh_in_python(TraitsRefresh(profile_ids={profile.pk}), now=NOW)

    assert_same(figures(profile.pk), by_sql)
    assert list(by_sql["category_counts"]) == ([read_as] if read_as else [])


# Random sequences: opens (some by machines), clicks, visits, orders and refunds
# with repeated and odd ids from the site and the shop, products with odd
# categories, identifies and aliases that merge, times years back and a little
# ahead, processed in random chunks as the clock moves.

USERS = ["usr_1", "usr_2", "usr_3", ""]
ANONYMOUS = ["anon-1", "anon-2", "anon-3", ""]
CATEGORIES = ["Boots", "Tents", " Tents ", 5, None, "", "x" * 300]
ORDER_IDS = ["A", "B", 1001, "1001", None, 0, ""]


def random_time(rng: random.Random, clock: datetime) -> datetime:
    roll = rng.random()
    if roll < 0.35:
        return clock - timedelta(hours=rng.choice([0, 1, 5, 20, 26]) + rng.random())
    if roll < 0.7:
        return clock - timedelta(days=rng.uniform(0, 120))
    if roll < 0.8:
        return clock - timedelta(days=rng.choice([1790, 1810, 3650]))
    if roll < 0.9:
        return NOW - timedelta(days=rng.choice([0, 1]), hours=rng.choice([1, 11, 23]))
    return clock + timedelta(minutes=rng.choice([1, 30]))


def random_event(rng: random.Random, clock: datetime) -> None:
    user, anonymous = rng.choice(USERS), rng.choice(ANONYMOUS)
    fields: dict = {"type": "track", "event": "", "properties": {}, "context": {}}
    roll = rng.random()
    if roll < 0.12:
        fields["event"] = "Email Opened"
        if rng.random() < 0.25:
            fields["properties"] = {"machine_open": rng.choice([True, "true", False])}
    elif roll < 0.2:
        fields["event"] = "Email Link Clicked"
    elif roll < 0.45:
        fields["type"] = rng.choice(["page", "screen"])
    elif roll < 0.62:
        fields["event"] = "Order Completed"
        fields["properties"] = {
            "order_id": rng.choice(ORDER_IDS),
            "total": rng.choice([10, "5.5", "x", 1e12, None]),
            "currency": rng.choice(["USD", "EUR", "usd"]),
            "products": [{"category": rng.choice(CATEGORIES)}],
        }
        # The shop's reports of an order outrank the site's.
        fields["source"] = rng.choice(["", "shopify"])
    elif roll < 0.68:
        fields["event"] = "Order Refunded"
        fields["properties"] = {
            "order_id": rng.choice(ORDER_IDS),
            "refund_id": rng.choice([None, "R1", "R2"]),
            "total": rng.choice([2, "1.5", None]),
        }
        fields["source"] = rng.choice(["", "shopify"])
    elif roll < 0.82:
        fields["event"] = rng.choice(["Product Viewed", "Product Added"])
        fields["properties"] = {"category": rng.choice(CATEGORIES)}
    elif roll < 0.95:
        fields["type"] = "identify"
        user, anonymous = rng.choice(USERS[:3]), rng.choice(ANONYMOUS[:3])
    else:
        fields["type"] = "alias"
        user, anonymous = rng.choice(USERS[:3]), ""
        fields["previous_id"] = rng.choice(ANONYMOUS[:3] + USERS[:3])
    if not user and not anonymous:
        user = "usr_1"
    event(
        user,
        anonymous_id=anonymous,
        at=random_time(rng, clock),
        received=clock,
        **fields,
    )


@pytest.mark.parametrize("seed", range(25))
def test_random_events_in_random_chunks_give_the_figures_of_all_at_once(seed):
    rng = random.Random(seed)
    clock = NOW
    for _ in range(rng.randint(2, 6)):
        for _ in range(rng.randint(1, 12)):
            random_event(rng, clock)
        while Event.objects.filter(processed_at=None).exists():
            process(clock, limit=rng.choice([None, 1, 2, 5]))
        clock += rng.choice([timedelta(0), timedelta(hours=3), timedelta(days=20)])

    for profile in Profile.objects.order_by("pk"):
        at = profile.engagement_at
        assert at is not None
        assert_same(figures(profile.pk), recomputed(profile.pk, at))
        # And the embedded database's Python gives the same figures.
        by_sql = figures(profile.pk)
        _refresh_in_python(TraitsRefresh(profile_ids={profile.pk}), now=at)
        assert_same(figures(profile.pk), by_sql)


def test_events_processed_again_from_the_admin_count_once(admin_client):
    event(event="Email Opened")
    event(event="Product Viewed", properties={"category": "Hats"})
    process(NOW)
    profile = user_profile()
    selected = [str(pk) for pk in Event.objects.values_list("pk", flat=True)]

    response = admin_client.post(
        "/admin/profiles/event/",
        {"action": "events_reprocess", "_selected_action": selected},
    )
    assert response.status_code == 302
    assert Event.objects.filter(processed_at__isnull=True).count() == 2
    process(NOW)

    assert_same(figures(profile.pk), recomputed(profile.pk, NOW))
    assert figures(profile.pk)["category_counts"]["Hats"][0] == 1


def test_an_event_that_failed_counts_in_no_figure():
    event(event="Email Opened", at=NOW - timedelta(hours=1))
    process(NOW)
    profile = user_profile()
    # Stored with its profile and unreadable traits: its processing fails.
    failed = event("", type="identify", profile=profile, traits=["not", "a", "dict"])

    process(NOW)

    failed.refresh_from_db()
    assert failed.processing_error
    assert_same(figures(profile.pk), recomputed(profile.pk, NOW))
    assert figures(profile.pk)["last_seen_at"] == NOW - timedelta(hours=1)


@pytest.mark.parametrize("together", [True, False], ids=["one-chunk", "two-chunks"])
def test_an_order_reported_twice_counts_its_categories_once(together):
    order = {"order_id": "6001", "total": 10, "products": [{"category": "Shoes"}]}
    event(event="Order Completed", at=NOW - timedelta(hours=2), properties=order)
    if not together:
        process(NOW)
    event(event="Order Completed", at=NOW - timedelta(hours=2), properties=order)
    event(
        event="Product Viewed",
        at=NOW - timedelta(hours=1),
        properties={"category": "Hats"},
    )

    process(NOW)

    profile = user_profile()
    kept = figures(profile.pk)
    assert {name: n for name, (n, _) in kept["category_counts"].items()} == {
        "Shoes": 1,
        "Hats": 1,
    }
    assert kept["favourite_category"] == "Hats"  # the tie goes to the latest seen
    assert_same(kept, recomputed(profile.pk, NOW))
    by_sql = figures(profile.pk)
    _refresh_in_python(TraitsRefresh(profile_ids={profile.pk}), now=NOW)
    assert_same(figures(profile.pk), by_sql)


def test_a_profile_merged_by_hand_keeps_figures_later_events_add_to():
    from profiles.processing import profile_merge

    event(event="Email Opened", at=NOW - timedelta(days=2))
    event("usr_2", event="Product Viewed", properties={"category": "Boots"})
    process(NOW)
    kept, other = user_profile(), user_profile("usr_2")
    with time_machine.travel(NOW, tick=False):
        profile_merge(first=kept, second=other, reason="by hand", explicit=True)
    event(event="Email Link Clicked", at=NOW + timedelta(hours=1))

    process(NOW + timedelta(hours=1))

    figures_now = figures(kept.pk)
    assert figures_now["category_counts"]["Boots"][0] == 1
    assert_same(figures_now, recomputed(kept.pk, NOW + timedelta(hours=1)))


def test_two_long_numeric_order_ids_are_two_orders_in_sql_and_python():
    for order_id, total in (
        (1234567890123456789012345678901, 10),
        (1234567890123456789012345678902, 20),
    ):
        event(
            event="Order Completed",
            properties={"order_id": order_id, "total": total, "currency": "USD"},
        )
    process(NOW)
    profile = user_profile()
    by_sql = recomputed(profile.pk, NOW)

    _refresh_in_python(TraitsRefresh(profile_ids={profile.pk}), now=NOW)

    assert_same(figures(profile.pk), by_sql)
    assert by_sql["order_count"] == 2
