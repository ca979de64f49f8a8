"""Computed traits and the trait schema, kept current by event processing."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from profiles.models import (
    Event,
    IdentityKind,
    Profile,
    ProfileIdentity,
    ProfileMerge,
    RejectedEvent,
    TraitDefinition,
    TraitType,
)
from profiles.processing import events_process_pending, profile_traits_compute
from profiles.processing_traits import (
    COMPUTED_FIELDS,
    TraitsRefresh,
    _refresh_in_python,
)
from tests.factories import ProfileFactory

NOW = datetime(2025, 3, 15, 12, 0, tzinfo=UTC)
_ids = count(1)


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def event(user_id: str = "usr_1", *, at: datetime | None = None, **fields) -> Event:
    fields.setdefault("type", "track")
    return Event.objects.create(
        message_id=f"msg-{next(_ids)}",
        user_id=user_id,
        timestamp=at or NOW,
        received_at=NOW,
        **fields,
    )


def order(total, *, at: datetime | None = None, **properties) -> Event:
    return event(
        event="Order Completed",
        at=at,
        properties={"order_id": f"o-{next(_ids)}", "total": total, **properties},
    )


def process() -> Profile:
    with time_machine.travel(NOW, tick=False):
        events_process_pending()
    return ProfileIdentity.objects.get(kind=IdentityKind.USER_ID, value="usr_1").profile


def test_string_amounts_count_as_numbers_and_give_the_average(db):
    order("10.50", at=days_ago(3))
    order(" 29.50 ", at=days_ago(2))
    order(20)

    profile = process()

    assert profile.lifetime_value == Decimal("60.00")
    assert profile.order_count == 3
    assert profile.average_order_value == Decimal("20.00")
    assert profile.first_order_at == days_ago(3)
    assert profile.last_order_at == NOW
    stored = Event.objects.order_by("timestamp")
    assert [event.properties["total"] for event in stored] == ["10.50", " 29.50 ", 20]


def test_orders_in_another_currency_are_left_out_of_value_and_average(db):
    order(80, currency="EUR", at=days_ago(1))
    order("25", currency="usd")
    order("not a number")

    profile = process()

    assert profile.lifetime_value == Decimal("25.00")
    assert profile.order_count == 3
    assert profile.average_order_value == Decimal("25.00")


def test_a_profile_without_counted_orders_has_no_average(db):
    order(80, currency="EUR")

    profile = process()

    assert (profile.lifetime_value, profile.order_count) == (Decimal("0.00"), 1)
    assert profile.average_order_value is None


def test_an_implausible_amount_is_left_out(db):
    order("1e12")
    order(5)

    profile = process()

    assert (profile.lifetime_value, profile.order_count) == (Decimal("5.00"), 2)


def test_orders_of_a_later_batch_add_to_the_earlier_ones(db):
    order(10, at=days_ago(2))
    assert process().lifetime_value == Decimal("10.00")

    order("5.25")
    event(event="Product Viewed")
    profile = process()

    assert profile.lifetime_value == Decimal("15.25")
    assert profile.order_count == 2
    assert profile.average_order_value == Decimal("7.63")
    assert profile.last_seen_at == NOW


def test_machine_opens_do_not_count_as_opens(db):
    event(event="Email Opened", at=days_ago(5))
    event(event="Email Opened", at=days_ago(2), properties={"machine_open": True})
    event(event="Email Opened", at=days_ago(1), context={"machine_open": True})
    event(event="Email Opened", at=days_ago(1), properties={"sg_machine_open": "true"})
    event(event="Email Link Clicked", at=days_ago(4))

    profile = process()

    assert profile.last_opened_at == days_ago(5)
    assert profile.last_clicked_at == days_ago(4)
    # Nor as a sign of the person: a mail client or a privacy proxy opened them.
    assert profile.last_seen_at == days_ago(4)


def test_engagement_adds_points_halved_every_30_days(db):
    event(event="Email Opened")  # 3
    event(event="Email Opened", properties={"machine_open": True})  # 0
    event(event="Email Link Clicked", at=days_ago(30))  # 5 halved once: 2.5
    order(10, at=days_ago(60))  # 10 halved twice: 2.5
    event(type="page", at=days_ago(0.5))  # one visit day, at its first visit: 1.98
    event(type="page", at=days_ago(0.25))
    order(10, at=days_ago(90))  # halved three times: 1.25
    order(10, at=days_ago(2000))  # past 60 half-lives: nothing

    profile = process()

    assert profile.engagement_value == pytest.approx(3 + 2.5 + 2.5 + 1.977 + 1.25, 1e-3)
    assert profile.engagement_score == 11


def test_engagement_is_capped_at_100(db):
    for _ in range(25):
        event(event="Email Link Clicked")

    assert process().engagement_score == 100


def test_the_favourite_category_is_the_most_seen_and_ties_go_to_the_latest(db):
    event(
        event="Product Viewed",
        at=days_ago(9),
        properties={"category": "Daypacks"},
    )
    event(
        event="Order Completed",
        at=days_ago(8),
        properties={
            "order_id": "A",
            "total": 10,
            "products": [{"category": "Daypacks"}, {"category": "Tents"}],
        },
    )
    event(event="Product Added", at=days_ago(7), properties={"category": " Tents "})
    event(event="Product Clicked", at=days_ago(6), properties={"category": "Boots"})
    event(event="Product Viewed", at=days_ago(6), properties={"category": ""})

    profile = process()

    assert profile.favourite_category == "Tents"


def test_a_category_is_one_however_its_accent_was_typed(db):
    composed, decomposed = "Caf\u00e9", "Cafe\u0301"
    for n, name in enumerate([composed, "Tea", composed, "Tea"]):
        event(event="Product Viewed", at=days_ago(9 - n), properties={"category": name})
    process()
    # A later chunk, added to what the profile keeps.
    for n, name in enumerate([decomposed, decomposed, "Tea"]):
        event(event="Product Viewed", at=days_ago(4 - n), properties={"category": name})

    profile = process()

    assert profile.favourite_category == composed
    assert {name: n for name, (n, _) in profile.category_counts.items()} == {
        composed: 4,
        "Tea": 3,
    }
    Profile.objects.filter(pk=profile.pk).update(category_counts=None)
    _refresh_in_python(TraitsRefresh(profile_ids={profile.pk}), now=NOW)
    profile.refresh_from_db()
    assert profile.favourite_category == composed
    assert set(profile.category_counts) == {composed, "Tea"}


def test_a_merge_recomputes_the_kept_profiles_traits(db):
    kept = ProfileFactory(email="grace.lee@example.com")
    Event.objects.create(
        message_id="anon-order",
        type="track",
        event="Order Completed",
        anonymous_id="anon-grace",
        properties={"order_id": "G1", "total": "42.00", "category": "Boots"},
        timestamp=days_ago(1),
        received_at=NOW,
    )
    Event.objects.create(
        message_id="anon-view",
        type="track",
        event="Product Viewed",
        anonymous_id="anon-grace",
        properties={"category": "Boots"},
        timestamp=days_ago(1),
        received_at=NOW,
    )
    with time_machine.travel(NOW, tick=False):
        events_process_pending()
    event(
        type="identify",
        anonymous_id="anon-grace",
        traits={"email": "grace.lee@example.com"},
    )

    merged = process()

    assert merged.pk == kept.pk
    assert ProfileMerge.objects.get().kept_id == kept.pk
    assert merged.lifetime_value == Decimal("42.00")
    assert (merged.order_count, merged.average_order_value) == (1, Decimal("42.00"))
    assert merged.favourite_category == "Boots"
    assert merged.engagement_score == 10
    assert merged.last_seen_at == NOW


def test_recomputing_one_profile_gives_the_same_figures(db):
    order("12.00", at=days_ago(1))
    event(event="Email Opened")
    profile = process()
    Profile.objects.filter(pk=profile.pk).update(
        lifetime_value=0, order_count=0, average_order_value=None, engagement_score=0
    )

    with time_machine.travel(NOW, tick=False):
        profile_traits_compute(profile=profile)

    profile.refresh_from_db()
    assert (profile.lifetime_value, profile.order_count) == (Decimal("12.00"), 1)
    assert profile.average_order_value == Decimal("12.00")
    assert profile.engagement_score == 13


@pytest.mark.parametrize(
    "total", ["10.50", 10.5, "1e2", "+3", ".5", "5.", "1_000", "NaN", "0x10", True]
)
def test_the_python_refresh_writes_what_the_sql_refresh_writes(db, total):
    if connection.vendor != "postgresql":
        pytest.skip("compares the PostgreSQL statement with the Python fallback")
    profile = process_profile_with_everything(total)
    by_sql = kept_figures(profile)
    Profile.objects.filter(pk=profile.pk).update(
        lifetime_value=0,
        order_count=0,
        first_order_at=None,
        last_order_at=None,
        average_order_value=None,
        engagement_score=0,
        favourite_category="",
        engagement_value=None,
        category_counts=None,
    )

    assert _refresh_in_python(TraitsRefresh(profile_ids={profile.pk}), now=NOW) == 1

    by_python = kept_figures(profile)
    assert by_python.pop("engagement_value") == pytest.approx(
        by_sql.pop("engagement_value")
    )
    assert by_python == by_sql
    if total == "10.50":
        assert by_sql["lifetime_value"] == Decimal("11.50")
        assert by_sql["order_count"] == 3
        assert by_sql["favourite_category"] == "Boots"


def kept_figures(profile: Profile) -> dict:
    fields = (*COMPUTED_FIELDS, "engagement_value", "engagement_at", "category_counts")
    return Profile.objects.values(*fields).get(pk=profile.pk)


def test_figures_added_chunk_by_chunk_are_those_of_all_events_at_once(db):
    # First chunk: a visit day, an order, two views of Daypacks.
    event(type="page", at=days_ago(3) + timedelta(hours=2))
    order("20.00", at=days_ago(2), order_id="A")
    event(event="Email Opened", at=days_ago(2))
    for _ in range(2):
        event(
            event="Product Viewed", at=days_ago(3), properties={"category": "Daypacks"}
        )
    process()
    # Ten days later: an earlier visit the same day moves the day's points, a later
    # one adds nothing; the site reports order A earlier than the shop did, and a
    # new order B; Tents are seen four times and Daypacks once more.
    later = NOW + timedelta(days=10)
    event(type="page", at=days_ago(3) + timedelta(hours=1))
    event(type="page", at=days_ago(3) + timedelta(hours=5))
    event(type="screen", at=days_ago(1))
    order("20.00", at=days_ago(2.5), order_id="A")
    order("5.00", at=later, order_id="B")
    event(event="Email Link Clicked", at=later)
    for _ in range(4):
        event(event="Product Added", at=days_ago(1), properties={"category": "Tents"})
    event(event="Product Viewed", at=days_ago(1), properties={"category": "Daypacks"})
    with time_machine.travel(later, tick=False):
        events_process_pending()
    profile = ProfileIdentity.objects.get(value="usr_1").profile
    added = kept_figures(profile)

    with time_machine.travel(later, tick=False):
        profile_traits_compute(profile=profile)

    computed = kept_figures(profile)
    assert added.pop("engagement_value") == pytest.approx(
        computed.pop("engagement_value")
    )
    assert added == computed
    assert computed["category_counts"]["Daypacks"][0] == 3
    assert computed["favourite_category"] == "Tents"
    assert (computed["order_count"], computed["lifetime_value"]) == (2, Decimal("25"))


def test_a_profile_that_keeps_nothing_is_computed_from_all_its_events(db):
    event(event="Email Opened", at=days_ago(1))
    event(event="Product Viewed", properties={"category": "Boots"})
    profile = process()
    # As a profile processed before its figures were kept.
    Profile.objects.filter(pk=profile.pk).update(
        engagement_value=None, engagement_at=None, category_counts=None
    )
    event(event="Email Opened")

    profile = process()

    assert profile.engagement_score == round(3 * 0.5 ** (1 / 30) + 3)
    assert profile.category_counts["Boots"][0] == 1
    assert profile.favourite_category == "Boots"


def test_events_merged_in_mid_chunk_are_counted_once(db):
    kept = ProfileFactory(email="grace.lee@example.com")
    ProfileIdentity.objects.create(
        profile=kept, kind=IdentityKind.USER_ID, value="usr_1"
    )
    event(event="Email Opened")
    process()
    Event.objects.create(
        message_id="anon-click",
        type="track",
        event="Email Link Clicked",
        anonymous_id="anon-grace",
        timestamp=NOW,
        received_at=NOW,
    )
    event(
        type="identify",
        anonymous_id="anon-grace",
        traits={"email": "grace.lee@example.com"},
    )

    merged = process()

    assert merged.pk == kept.pk
    assert merged.engagement_value == pytest.approx(3 + 5)
    assert merged.engagement_score == 8


def process_profile_with_everything(total) -> Profile:
    order(total, at=days_ago(3), products=[{"category": "Tents"}])
    order(7, at=days_ago(2), currency="EUR")
    event(event="Order Completed", properties={"order_id": 5975551934712, "total": 1})
    event(event="Order Completed", properties={"order_id": "5975551934712", "total": 9})
    event(event="Email Opened", at=days_ago(40))
    event(event="Email Opened", properties={"machine_open": "true"})
    event(event="Email Link Clicked", at=days_ago(12))
    event(type="screen", at=days_ago(0.1))
    event(event="Product Added", properties={"category": "Boots"})
    return process()


def test_a_custom_trait_is_stored_as_its_declared_type(db):
    TraitDefinition.objects.create(name="shoe_size", type=TraitType.NUMBER)
    TraitDefinition.objects.create(name="vip", type=TraitType.BOOLEAN)
    event(type="identify", traits={"shoe_size": "42", "vip": "yes", "pet": "cat"})

    profile = process()

    assert profile.traits == {"shoe_size": 42, "vip": True, "pet": "cat"}
    assert RejectedEvent.objects.count() == 0


def test_a_value_that_breaks_its_rule_is_reported_and_not_stored(db):
    TraitDefinition.objects.create(
        name="plan", type=TraitType.TEXT, allowed_values=["free", "pro"]
    )
    TraitDefinition.objects.create(
        name="shoe_size", type=TraitType.NUMBER, minimum=Decimal("30")
    )
    event(type="identify", traits={"plan": "pro", "firstName": "Jo"})
    process()
    second = event(
        type="identify",
        traits={"plan": "gold", "shoe_size": "12", "pet": "cat", "lastName": "Doe"},
    )

    profile = process()

    assert profile.traits == {"plan": "pro", "pet": "cat"}
    assert (profile.first_name, profile.last_name) == ("Jo", "Doe")
    second.refresh_from_db()
    assert (second.profile_id, second.processing_error) == (profile.pk, "")
    assert second.traits["plan"] == "gold"
    rejected = RejectedEvent.objects.order_by("code")
    assert [(r.code, r.message, r.message_id) for r in rejected] == [
        (
            "trait_invalid:below_minimum",
            "Trait shoe_size: 12 is below 30",
            second.message_id,
        ),
        (
            "trait_invalid:not_allowed",
            "Trait plan: 'gold' is not one of the allowed values (free, pro)",
            second.message_id,
        ),
    ]
    assert rejected[1].payload == {"trait": "plan", "value": "gold"}


def test_a_declared_trait_sent_in_another_case_is_held_to_its_rule(db):
    TraitDefinition.objects.create(
        name="loyaltyTier", type=TraitType.TEXT, allowed_values=["Gold", "Silver"]
    )
    TraitDefinition.objects.create(name="shoe_size", type=TraitType.NUMBER)
    event(type="identify", traits={"LOYALTYTIER": "gold", "Shoe_Size": "42"})
    process()
    second = event(type="identify", traits={"loyaltytier": "platinum"})

    profile = process()

    # Stored under the declared name and spelling, never as a trait of its own.
    assert profile.traits == {"loyaltyTier": "Gold", "shoe_size": 42}
    rejected = RejectedEvent.objects.get()
    assert (rejected.code, rejected.message_id) == (
        "trait_invalid:not_allowed",
        second.message_id,
    )
    assert rejected.payload == {"trait": "loyaltytier", "value": "platinum"}


def test_a_declared_trait_sent_in_two_spellings_keeps_the_declared_ones_value(db):
    TraitDefinition.objects.create(name="plan", type=TraitType.TEXT)
    sent = event(type="identify", traits={"PLAN": "free", "plan": "pro"})

    profile = process()

    assert profile.traits == {"plan": "pro"}
    rejected = RejectedEvent.objects.get()
    assert (rejected.code, rejected.message_id) == (
        "trait_invalid:sent_twice",
        sent.message_id,
    )
    assert rejected.message == (
        "Trait PLAN: the declared trait plan, which this call also sends as plan; "
        "that value is kept"
    )


def test_a_new_profiles_invalid_trait_is_reported_too(db):
    TraitDefinition.objects.create(name="vip", type=TraitType.BOOLEAN)
    first = event(type="identify", traits={"vip": "perhaps", "pet": "dog"})

    profile = process()

    assert profile.traits == {"pet": "dog"}
    rejected = RejectedEvent.objects.get()
    assert (rejected.code, rejected.message_id) == (
        "trait_invalid:not_a_boolean",
        first.message_id,
    )
    assert rejected.message == "Trait vip: 'perhaps' is not true or false"


def test_the_schema_is_read_once_per_run(db):
    TraitDefinition.objects.create(name="vip", type=TraitType.BOOLEAN)
    for user in ("usr_1", "usr_2", "usr_3"):
        event(user, type="identify", traits={"vip": "no"})

    with CaptureQueriesContext(connection) as queries:
        process()

    schema_reads = [q for q in queries if "profiles_traitdefinition" in q["sql"]]
    assert len(schema_reads) == 1


def test_known_profiles_cost_the_same_queries_for_5_or_50_events(db):
    def queries_for(events: int) -> int:
        for _ in range(events):
            event(event="Product Viewed", properties={"category": "Tents"})
        with CaptureQueriesContext(connection) as queries:
            process()
        return len(queries)

    event(type="identify", traits={"email": "jo@example.com"})
    process()

    assert queries_for(5) == queries_for(50)


def refund(order_id, **properties) -> Event:
    return event(
        event="Order Refunded", properties={"order_id": order_id, **properties}
    )


def test_a_refund_takes_its_amount_off_the_order_and_the_average(db):
    order(100, order_id="1001", at=days_ago(3))
    order("40", order_id=1002, at=days_ago(2))
    process()

    refund(1001, total="30", refund_id="r1")
    refund("1001", total=-20, refund_id="r2")  # a negative amount is a refund too
    refund("1001", total=30, refund_id="r1")  # the shop reports the site's refund
    refund("1002", total=55)  # more than the order: down to nothing
    profile = process()

    assert profile.lifetime_value == Decimal("50.00")
    assert profile.order_count == 2
    # Refunded whole, 1002 was placed, but is no order of the average's.
    assert profile.average_order_value == Decimal("50.00")


def test_a_refund_with_no_amount_refunds_the_whole_order(db):
    order(100, order_id="1001")
    order(60, order_id="1002")
    refund("1001")
    refund("1002", total="lots")  # unreadable: changes nothing
    refund("1002", total=10, currency="EUR")  # another currency: changes nothing
    refund("9999", total=10)  # no such order
    refund("", total=10)  # no order id

    profile = process()

    assert (profile.lifetime_value, profile.order_count) == (Decimal("60.00"), 2)
    assert profile.average_order_value == Decimal("60.00")


def test_a_cancelled_order_is_no_order(db):
    order(100, order_id="1001", at=days_ago(5))
    order(60, order_id="1002", at=days_ago(1))
    assert process().order_count == 2

    event(event="Order Cancelled", properties={"order_id": 1001.0})
    profile = process()

    assert (profile.lifetime_value, profile.order_count) == (Decimal("60.00"), 1)
    assert profile.first_order_at == days_ago(1)
    assert profile.average_order_value == Decimal("60.00")

    event(event="Order Cancelled", properties={"order_id": "1002", "total": 60})
    profile = process()

    assert (profile.lifetime_value, profile.order_count) == (Decimal("0.00"), 0)
    assert (profile.first_order_at, profile.last_order_at) == (None, None)
    assert profile.average_order_value is None


def test_the_python_refresh_reads_refunds_and_cancellations_as_the_sql_does(db):
    if connection.vendor != "postgresql":
        pytest.skip("compares the PostgreSQL statement with the Python fallback")
    order(100, order_id="1001", at=days_ago(3))
    order(80, order_id="1002", at=days_ago(2))
    order(70, order_id="1003", at=days_ago(1))
    order(50, order_id="1004")
    refund("1001", total=" 12.5 ", refund_id=7)
    refund("1001", total=12.5, refund_id="7")
    refund("1001", revenue="2.5")
    refund("1002")
    refund("1004", total=5, currency="EUR")
    event(event="Order Cancelled", properties={"order_id": "1003"})
    profile = process()
    by_sql = kept_figures(profile)
    Profile.objects.filter(pk=profile.pk).update(
        lifetime_value=0, order_count=0, average_order_value=None
    )

    _refresh_in_python(TraitsRefresh(profile_ids={profile.pk}), now=NOW)

    by_python = kept_figures(profile)
    assert by_python.pop("engagement_value") == pytest.approx(
        by_sql.pop("engagement_value")
    )
    assert by_python == by_sql
    # 100 - 12.50 - 2.50, 0 for the whole refund, 50; the cancelled 1003 not at all.
    assert by_sql["lifetime_value"] == Decimal("135.00")
    assert by_sql["order_count"] == 3


@pytest.mark.parametrize("path", ["sql", "python"])
def test_what_the_esp_reports_of_a_message_is_no_sign_of_the_person(db, path):
    if path == "sql" and connection.vendor != "postgresql":
        pytest.skip("the chunk statement is PostgreSQL's")
    order(10, at=days_ago(16))
    event(event="Email Delivered", at=days_ago(0.1))
    event(event="Email Bounced", at=days_ago(0.05))
    event(event="Email Opened", at=days_ago(0.04), properties={"sg_machine_open": True})
    profile = process()
    if path == "python":
        Profile.objects.filter(pk=profile.pk).update(last_seen_at=None)
        _refresh_in_python(TraitsRefresh(profile_ids={profile.pk}), now=NOW)
        profile.refresh_from_db()

    assert profile.last_seen_at == days_ago(16)

    event(event="Email Opened", at=days_ago(0.01))
    assert process().last_seen_at == days_ago(0.01)


@pytest.mark.parametrize("path", ["sql", "python"])
def test_a_category_is_one_whatever_its_case(db, path):
    if path == "sql" and connection.vendor != "postgresql":
        pytest.skip("the chunk statement is PostgreSQL's")
    for category in ("shoes", "Shoes", "SHOES ", "Shoes", "Bags", "Bags", "Bags"):
        event(event="Product Viewed", properties={"category": category})
    profile = process()
    if path == "python":
        _refresh_in_python(TraitsRefresh(profile_ids={profile.pk}), now=NOW)
        profile.refresh_from_db()

    assert profile.favourite_category == "SHOES"
    assert {name: n for name, (n, _) in profile.category_counts.items()} == {
        "SHOES": 4,
        "Bags": 3,
    }

    # Counted on in a later chunk, with yet another case.
    event(event="Product Viewed", properties={"category": "bags"}, at=days_ago(1))
    event(event="Product Viewed", properties={"category": "bags"}, at=days_ago(1))
    profile = process()
    assert profile.favourite_category == "Bags"
    assert profile.category_counts["Bags"][0] == 5
