"""The rule language's newer conditions, each on a small hand-made case."""

from datetime import UTC, datetime, timedelta

import pytest

from profiles.models import Event
from segments.compiler import profiles_matching
from segments.language import rule_describe
from tests.factories import CampaignFactory, ProfileFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def track(profile, name: str, *, days_ago: float, n: int = 0, **properties) -> None:
    Event.objects.create(
        message_id=f"{profile.pk}-{name}-{days_ago}-{n}",
        type="track",
        event=name,
        profile=profile,
        properties=properties,
        timestamp=NOW - timedelta(days=days_ago),
        received_at=NOW,
    )


def emails(rule) -> set[str]:
    return set(profiles_matching(rule, now=NOW).values_list("email", flat=True))


def test_viewed_a_product_and_did_not_buy_it_within_7_days():
    browsed = ProfileFactory(email="browsed@example.com")
    track(browsed, "Product Viewed", days_ago=10, product_id="p1")
    bought_other = ProfileFactory(email="other@example.com")
    track(bought_other, "Product Viewed", days_ago=10, product_id="p1")
    track(bought_other, "Order Completed", days_ago=9, products=[{"product_id": "p2"}])
    bought_it = ProfileFactory(email="bought@example.com")
    track(bought_it, "Product Viewed", days_ago=10, product_id="p1")
    track(bought_it, "Order Completed", days_ago=8, products=[{"product_id": "p1"}])
    bought_late = ProfileFactory(email="late@example.com")
    track(bought_late, "Product Viewed", days_ago=10, product_id="p1")
    track(bought_late, "Order Completed", days_ago=1, products=[{"product_id": "p1"}])
    rule = {
        "event": "Product Viewed",
        "followed_by": {
            "event": "Order Completed",
            "did": False,
            "within_days": 7,
            "same": "product_id",
        },
    }

    assert emails(rule) == {
        "browsed@example.com",
        "other@example.com",
        "late@example.com",
    }


def test_not_followed_within_a_day_waits_for_the_day_to_pass():
    """A checkout started minutes ago is not abandoned yet; one a day old is."""
    abandoned = ProfileFactory(email="abandoned@example.com")
    track(abandoned, "Checkout Started", days_ago=1.5)
    checking_out = ProfileFactory(email="checking.out@example.com")
    track(checking_out, "Checkout Started", days_ago=0.01)
    rule = {
        "event": "Checkout Started",
        "followed_by": {"event": "Order Completed", "did": False, "within_days": 1},
    }

    assert emails(rule) == {"abandoned@example.com"}
    assert rule_describe(rule) == (
        "did Checkout Started, not followed by Order Completed within 1 day "
        "(once those days have passed)"
    )


def test_product_properties_match_any_item_of_the_order():
    jacket = ProfileFactory(email="jacket@example.com")
    track(
        jacket,
        "Order Completed",
        days_ago=2,
        products=[
            {"category": "Socks", "price": "9.50"},
            {"category": "Outerwear", "price": 89},
        ],
    )
    socks = ProfileFactory(email="socks@example.com")
    track(
        socks,
        "Order Completed",
        days_ago=2,
        products=[{"category": "Socks", "price": 9.5}],
    )

    by_category = {
        "event": "Order Completed",
        "where": [{"property": "products.category", "op": "eq", "value": "outerwear"}],
    }
    by_price = {
        "event": "Order Completed",
        "where": [{"property": "products.price", "op": "lte", "value": 10}],
    }
    assert emails(by_category) == {"jacket@example.com"}
    assert emails(by_price) == {"jacket@example.com", "socks@example.com"}


def test_a_trait_stored_as_text_or_number_compares_as_a_number():
    ProfileFactory(email="text@example.com", traits={"rating": "4"})
    ProfileFactory(email="number@example.com", traits={"rating": 4.0})
    ProfileFactory(email="word@example.com", traits={"rating": "four"})
    ProfileFactory(email="none@example.com", traits={})

    assert emails({"attribute": "traits.rating", "op": "gte", "value": 4}) == {
        "text@example.com",
        "number@example.com",
    }
    assert emails({"attribute": "traits.rating", "op": "neq", "value": 4}) == {
        "word@example.com",
        "none@example.com",
    }


def test_birthdays_in_a_few_days_use_the_accounts_today(settings):
    settings.BESPOKE_ACCOUNT_TIME_ZONE = "Pacific/Auckland"  # already 16 June there
    ProfileFactory(email="soon@example.com", traits={"birthday": "1990-06-19"})
    ProfileFactory(email="utc@example.com", traits={"birthday": "1990-06-18"})

    rule = {"attribute": "traits.birthday", "op": "anniversary_in_days", "value": 3}
    assert emails(rule) == {"soon@example.com"}


def test_opens_of_a_given_campaign_count_but_machine_opens_do_not():
    campaign = CampaignFactory(slug="spring")
    reader = ProfileFactory(email="reader@example.com")
    track(reader, "Email Opened", days_ago=1, campaign_id=str(campaign.pk))
    robot = ProfileFactory(email="robot@example.com")
    track(
        robot,
        "Email Opened",
        days_ago=1,
        campaign_id=str(campaign.pk),
        machine_open=True,
    )
    elsewhere = ProfileFactory(email="elsewhere@example.com")
    track(elsewhere, "Email Opened", days_ago=1, campaign_id="999")

    rule = {"engagement": "opened", "campaign": "spring", "within_days": 30}
    assert emails(rule) == {"reader@example.com"}


def test_suppressed_profiles_can_be_selected_or_left_out():
    ProfileFactory(email="ok@example.com")
    ProfileFactory(email="bounced@example.com", suppressed_at=NOW)

    assert emails({"suppressed": True}) == {"bounced@example.com"}
    assert emails({"suppressed": False}) == {"ok@example.com"}


def test_the_description_shows_and_binding_tighter_than_or():
    rule = {
        "any": [
            {
                "all": [
                    {"metric": "order_count", "op": "gt", "value": 3},
                    {"attribute": "continent", "op": "eq", "value": "Europe"},
                ]
            },
            {"not": {"event": "Order Completed", "within_days": 30}},
        ]
    }

    assert rule_describe(rule) == (
        "((order_count > 3 AND continent is 'Europe') OR "
        "NOT did Order Completed in the last 30 days)"
    )


@pytest.mark.parametrize(
    ("op", "words"),
    [
        ("gt", "more than 3"),
        ("gte", "at least 3"),
        ("lt", "fewer than 3"),
        ("lte", "at most 3"),
        ("eq", "exactly 3"),
    ],
)
def test_the_description_says_event_counts_in_words(op, words):
    rule = {"event": "Order Completed", "count": {"op": op, "value": 3}}

    assert rule_describe(rule) == f"did Order Completed {words} times"


def test_a_segment_knows_what_it_reads_and_whether_time_moves_it():
    from segments.services import segment_save

    segment_save(
        name="Europe",
        slug="europe",
        rule={"attribute": "continent", "op": "eq", "value": "Europe"},
    )
    segment = segment_save(
        name="Recent buyers in Europe",
        rule={
            "all": [
                {"segment": "europe"},
                {"event": "Order Completed", "within_days": 30},
                {"attribute": "traits.tier", "op": "eq", "value": "gold"},
                {"engagement": "opened"},
            ]
        },
    )
    timeless = segment_save(
        name="Gold", rule={"attribute": "traits.tier", "op": "eq", "value": "gold"}
    )

    assert segment.dependencies == [
        "event:Email Opened",
        "event:Order Completed",
        "field:country_code",
        "segment:europe",
        "trait:tier",
    ]
    assert segment.time_dependent is True
    assert timeless.time_dependent is False
    assert timeless.version == 1
    assert (
        segment_save(name="Gold", slug="gold", rule={"consent": "subscribed"}).version
        == 2
    )


def test_declining_engagement_compares_the_two_halves_of_the_window():
    fading = ProfileFactory(email="fading@example.com")
    for n, days_ago in enumerate((50, 45, 40, 10)):
        track(fading, "Email Opened", days_ago=days_ago, n=n)
    steady = ProfileFactory(email="steady@example.com")
    for n, days_ago in enumerate((50, 10)):
        track(steady, "Email Opened", days_ago=days_ago, n=n)
    gone_quiet = ProfileFactory(email="quiet@example.com")
    track(gone_quiet, "Email Opened", days_ago=31)
    ProfileFactory(email="never@example.com")

    rule = {"trend": "Email Opened", "over_days": 60, "direction": "declining"}
    assert emails(rule) == {"fading@example.com", "quiet@example.com"}
    assert emails({**rule, "direction": "rising"}) == set()
