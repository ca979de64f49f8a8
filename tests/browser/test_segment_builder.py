"""A marketer widens the spring sale audience in the builder, watching the count."""

import pytest
from django.db.models import Q
from playwright.sync_api import expect

from profiles.models import Profile
from segments.models import Segment

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NEWSLETTER_OR_VIEWED = Q(tags__name__iexact="Newsletter") | Q(
    events__event="Product Viewed"
)


def count(condition: Q) -> int:
    # Counted with joins, apart from the compiler's EXISTS, as a check on it.
    return Profile.objects.filter(condition).distinct().count()


def test_a_marketer_adds_a_condition_sees_the_count_change_asks_why_and_saves(
    page, signed_in
):
    before = count(NEWSLETTER_OR_VIEWED)
    subscribed = count(Q(subscription_status="subscribed"))
    after = count(NEWSLETTER_OR_VIEWED | Q(subscription_status="subscribed"))
    assert after > before  # the demo has subscribers outside the audience

    page.get_by_role("link", name="Segments").first.click()
    page.get_by_role("link", name="Spring sale audience").click()
    expect(page.locator("[data-live-count]")).to_have_text(str(before))
    expect(page.locator("[data-description]")).to_have_text(
        "(tags contains 'Newsletter' OR did Product Viewed)"
    )

    root = page.locator('[data-path="rule"]')
    root.locator(".node-head").first.get_by_role("button", name="Add condition").click()
    added = page.locator('[data-path="rule.any[2]"]')
    added.get_by_label("Condition kind").select_option(label="Consent")
    expect(added.get_by_label("Consent")).to_have_value("subscribed")

    expect(page.locator("[data-live-count]")).to_have_text(str(after))
    expect(page.locator('[data-count-for="rule.any[2]"]')).to_have_text(str(subscribed))
    expect(page.locator("[data-entering]")).to_have_text(f"+{after - before}")
    expect(page.locator("[data-leaving]")).to_have_text("−0")
    assert Segment.objects.get(slug="spring-sale-audience").version == 1

    page.get_by_label("Email or profile id").fill("ana.souza@example.com")
    page.get_by_role("button", name="Why?").click()
    expect(page.locator("[data-why-answer]")).to_have_text("In")
    assert page.locator("[data-why-summary]").inner_text().startswith("In because: ")

    page.get_by_role("button", name="JSON").click()
    raw = page.get_by_label("Rule (JSON)")
    expect(raw).to_be_visible()
    assert '"consent": "subscribed"' in raw.input_value()
    page.get_by_role("button", name="Structured editor").click()
    expect(added.get_by_label("Consent")).to_be_visible()

    page.get_by_role("button", name="Save segment").click()
    expect(page.get_by_text("Segment “Spring sale audience” saved.")).to_be_visible()
    segment = Segment.objects.get(slug="spring-sale-audience")
    assert segment.version == 2
    assert segment.rule["any"][2] == {"consent": "subscribed"}
    expect(page.locator("[data-live-count]")).to_have_text(str(after))
