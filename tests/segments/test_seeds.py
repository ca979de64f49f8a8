"""The seed segments select exactly the people their names promise."""

from datetime import UTC, datetime, timedelta

import pytest

from profiles.models import Event
from segments.compiler import profiles_matching
from segments.seeds import SEED_SEGMENTS
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
RULES = {seed["slug"]: seed["rule"] for seed in SEED_SEGMENTS}


def events(profile, name: str, *days_ago: float) -> None:
    for n, days in enumerate(days_ago):
        Event.objects.create(
            message_id=f"{profile.pk}-{name}-{n}",
            type="track",
            event=name,
            profile=profile,
            properties={},
            timestamp=NOW - timedelta(days=days),
            received_at=NOW,
        )


def members(slug: str) -> set[str]:
    return set(profiles_matching(RULES[slug], now=NOW).values_list("email", flat=True))


def test_high_value_customers_spend_much_bought_lately_and_engage():
    star = ProfileFactory(
        email="star@example.com", lifetime_value=900, engagement_score=75
    )
    events(star, "Order Completed", 3)
    lapsed = ProfileFactory(
        email="lapsed@example.com", lifetime_value=900, engagement_score=75
    )
    events(lapsed, "Order Completed", 45)
    quiet = ProfileFactory(
        email="quiet@example.com", lifetime_value=900, engagement_score=20
    )
    events(quiet, "Order Completed", 3)
    small = ProfileFactory(
        email="small@example.com", lifetime_value=80, engagement_score=90
    )
    events(small, "Order Completed", 3)

    assert members("high-value-customers") == {"star@example.com"}


def test_at_risk_profiles_open_less_buy_nothing_but_still_read():
    fading = ProfileFactory(email="fading@example.com")
    events(fading, "Email Opened", 55, 50, 45, 20)
    bought = ProfileFactory(email="bought@example.com")
    events(bought, "Email Opened", 55, 50, 45, 20)
    events(bought, "Order Completed", 10)
    gone = ProfileFactory(email="gone@example.com")
    events(gone, "Email Opened", 55, 50, 45)
    steady = ProfileFactory(email="steady@example.com")
    events(steady, "Email Opened", 50, 20)

    assert members("at-risk") == {"fading@example.com"}


def test_engaged_browsers_view_often_and_never_buy():
    browser = ProfileFactory(email="browser@example.com")
    events(browser, "Product Viewed", 1, 2, 3, 4, 5)
    buyer = ProfileFactory(email="buyer@example.com")
    events(buyer, "Product Viewed", 1, 2, 3, 4, 5)
    events(buyer, "Order Completed", 200)
    window_shopper = ProfileFactory(email="few@example.com")
    events(window_shopper, "Product Viewed", 1, 2, 3, 4, 40)

    assert members("engaged-browsers") == {"browser@example.com"}


def test_frequent_buyers_in_europe_ordered_more_than_three_times_this_month():
    paris = ProfileFactory(email="paris@example.com", country_code="FR")
    events(paris, "Order Completed", 1, 5, 9, 20)
    boston = ProfileFactory(email="boston@example.com", country_code="US")
    events(boston, "Order Completed", 1, 5, 9, 20)
    berlin = ProfileFactory(email="berlin@example.com", country_code="DE")
    events(berlin, "Order Completed", 1, 5, 9, 31)

    assert members("frequent-buyers-in-europe") == {"paris@example.com"}
