"""The Traits page's count of breaking values stops at a time budget, and says so."""

import time

import pytest
from django.urls import reverse

from profiles import health
from profiles.health import trait_rule_breaches
from profiles.models import Profile, TraitDefinition
from profiles.traits import PATTERN_TIMEOUT_SECONDS, TraitRule
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db

# Each of these values takes a backtracking pattern its whole per-value limit.
BACKTRACKS = "(a|aa)+$"
SLOW_VALUE = "a" * 40 + "!"


def clock_stopping_after(monkeypatch, reads: int) -> None:
    """Make the check's clock stand still for `reads` reads, then jump past any budget."""
    times = iter([0.0] * reads)
    monkeypatch.setattr(health, "monotonic", lambda: next(times, 3600.0))


def test_a_backtracking_pattern_stops_the_check_at_its_budget_not_after_every_value(
    monkeypatch,
):
    # given 400 values that each take the pattern's 50 ms limit: 20 s in all
    Profile.objects.bulk_create(
        Profile(email=f"slow{n}@example.com", traits={"code": SLOW_VALUE})
        for n in range(400)
    )
    monkeypatch.setattr(health, "TRAIT_CHECK_BUDGET_SECONDS", 0.3)
    rule = TraitRule("code", "text", pattern=BACKTRACKS)

    # when the page's check runs
    started = time.monotonic()
    breaches = trait_rule_breaches(rule=rule)
    took = time.monotonic() - started

    # then it stops near its budget, says it did, and counts only what it checked
    assert took < 2
    assert (breaches["complete"], breaches["stopped_by"]) == (False, "time")
    most = int(0.3 / PATTERN_TIMEOUT_SECONDS) + 1
    assert 0 < breaches["checked"] <= most
    assert breaches["breaking"] == breaches["checked"]
    assert breaches["examples"][0]["message"] == (
        f"code: checking 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' against {BACKTRACKS} "
        "took too long"
    )


def test_the_check_counts_only_the_values_read_before_the_time_ran_out(monkeypatch):
    first = ProfileFactory(traits={"code": "ok"})
    second = ProfileFactory(traits={"code": "no good"})
    ProfileFactory(traits={"code": "never read"})
    # One read sets the deadline; then one before each value: two values in time.
    clock_stopping_after(monkeypatch, 3)
    rule = TraitRule("code", "text", pattern="[a-z]+")

    breaches = trait_rule_breaches(rule=rule)

    assert first.pk < second.pk
    assert breaches == {
        "checked": 2,
        "breaking": 1,
        "examples": [
            {
                "profile_id": second.pk,
                "message": "code: 'no good' does not match [a-z]+",
            }
        ],
        "complete": False,
        "stopped_by": "time",
    }


def test_the_page_says_the_count_is_incomplete_and_how_many_values_were_checked(
    signed_in, monkeypatch
):
    for value in ("ok", "no good", "bad one", "never read"):
        ProfileFactory(traits={"code": value})
    definition = TraitDefinition.objects.create(
        name="code", type="text", pattern="[a-z]+"
    )
    clock_stopping_after(monkeypatch, 4)

    response = signed_in.get(reverse("trait_edit", kwargs={"pk": definition.pk}))

    page = response.content.decode()
    assert (
        "This count is incomplete: the check stops after 2 seconds, and it had "
        "checked the values of only <strong data-checked>3</strong> profiles with "
        "this trait. Of those, <strong data-breaking>2</strong> hold a value that "
        "breaks the rule"
    ) in page
    assert "of 3 profiles with this trait hold" not in page


def test_the_page_says_a_check_stopped_at_the_most_values_it_reads(
    signed_in, monkeypatch
):
    for value in ("ok", "no good", "never read"):
        ProfileFactory(traits={"code": value})
    definition = TraitDefinition.objects.create(
        name="code", type="text", pattern="[a-z]+"
    )
    # Lowered to be reached with three values; the page names the real limit.
    monkeypatch.setattr(health, "TRAIT_CHECK_MAX_VALUES", 2)

    response = signed_in.get(reverse("trait_edit", kwargs={"pk": definition.pk}))

    page = response.content.decode()
    assert (
        "This count is incomplete: the check stops after 200,000 values, and it had "
        "checked the values of only <strong data-checked>2</strong> profiles"
    ) in page
