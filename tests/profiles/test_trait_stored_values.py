"""Values stored before their trait was declared, or before its type or rules changed."""

import pytest
from django.urls import reverse

from profiles.health import trait_rule_breaches
from profiles.models import TraitDefinition, TraitType
from profiles.traits import TraitRule
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(client, marketer):
    client.force_login(marketer)
    return client


def test_a_value_not_stored_as_its_type_counts_as_breaking_the_rule():
    ProfileFactory(traits={"loyal": True})
    yes = ProfileFactory(traits={"loyal": "yes"})
    upper = ProfileFactory(traits={"loyal": "TRUE"})
    one = ProfileFactory(traits={"loyal": 1})
    ProfileFactory(traits={"loyal": False})
    ProfileFactory(traits={"loyal": None})

    breaches = trait_rule_breaches(rule=TraitRule("loyal", "boolean"))

    how = "is stored as it was sent, not as its declared type stores it (true)"
    assert breaches == {
        "checked": 6,
        "breaking": 3,
        "examples": [
            {"profile_id": yes.pk, "message": f"loyal: 'yes' {how}"},
            {"profile_id": upper.pk, "message": f"loyal: 'TRUE' {how}"},
            {"profile_id": one.pk, "message": f"loyal: 1 {how}"},
        ],
        "complete": True,
    }


@pytest.mark.parametrize(
    ("rule", "stored", "breaking"),
    [
        # A whole float is the number it holds, as PostgreSQL compares them.
        (TraitRule("pts", "number"), [42, 42.0, 4.5], 0),
        (TraitRule("pts", "number"), ["42", " 7 ", "1 000", True], 4),
        (TraitRule("renew", "date"), ["2026-12-10", "--12-10"], 0),
        (TraitRule("renew", "date"), ["2026-12-10 ", "2026-12-10T05:00:00Z"], 2),
        (TraitRule("plan", "text"), ["pro", "42"], 0),
        (TraitRule("plan", "text"), [42, False, " pro"], 3),
        # Stored in the declared spelling of an allowed value.
        (TraitRule("plan", "text", allowed_values=("Pro",)), ["Pro", "PRO"], 1),
    ],
)
def test_each_type_counts_what_it_would_store_otherwise(rule, stored, breaking):
    for value in stored:
        ProfileFactory(traits={rule.name: value})

    assert trait_rule_breaches(rule=rule)["breaking"] == breaking


def test_the_page_counts_the_values_a_segment_would_miss(signed_in):
    for value in ("yes", "true", True, "1", "TRUE", "no", False):
        ProfileFactory(traits={"loyal": value})
    definition = TraitDefinition.objects.create(name="loyal", type=TraitType.BOOLEAN)

    page = signed_in.get(reverse("trait_edit", kwargs={"pk": definition.pk}))

    assert (
        "<strong data-breaking>5</strong> of 7 profiles with this trait hold a value "
        "that breaks the rule or is not stored as its type."
    ) in page.content.decode()
