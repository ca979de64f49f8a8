"""Text rules ignore case the same way for every letter, on both databases.

A capital dotted İ (Turkish) is lower-cased to i; a letter with an accent keeps it
(Ü and ü are one letter, ü and u are two).
"""

import pytest
from django.utils import timezone

from profiles.models import Event, Profile, ProfileTag, TraitDefinition, TraitType
from segments.compiler import rule_compile
from segments.language import rule_validate

pytestmark = pytest.mark.django_db(databases=["default", "sqlite"])

NOW = timezone.now()


def selected(alias: str, rule: dict) -> set[str]:
    assert rule_validate(rule) == []
    found = Profile.objects.using(alias).filter(rule_compile(rule, now=NOW))
    return set(found.values_list("email", flat=True))


def person(alias: str, email: str, *, city: str, category: str) -> None:
    profile = Profile.objects.using(alias).create(
        email=email, city=city, traits={"district": city}
    )
    ProfileTag.objects.using(alias).create(profile=profile, name=city)
    Event.objects.using(alias).create(
        message_id=f"{alias}-{email}",
        type="track",
        event="Order Completed",
        profile=profile,
        properties={"category": category, "products": [{"category": category}]},
        timestamp=NOW,
        received_at=NOW,
    )


@pytest.fixture(params=["default", "sqlite"])
def alias(request):
    person(request.param, "ayse@example.com", city="İstanbul", category="İç Giyim")
    person(request.param, "jonas@example.com", city="ZÜRICH", category="Outerwear")
    person(request.param, "ines@example.com", city="Izmir", category="Socks")
    return request.param


@pytest.mark.parametrize("written", ["İstanbul", "istanbul", "İSTANBUL", "ISTANBUL"])
@pytest.mark.parametrize("field", ["city", "traits.district"])
def test_an_equal_rule_finds_the_city_however_it_is_written(alias, field, written):
    rule = {"attribute": field, "op": "eq", "value": written}
    assert selected(alias, rule) == {"ayse@example.com"}

    rule = {"attribute": field, "op": "in", "value": [written, "nowhere"]}
    assert selected(alias, rule) == {"ayse@example.com"}

    rule = {"attribute": field, "op": "neq", "value": written}
    assert selected(alias, rule) == {"jonas@example.com", "ines@example.com"}


@pytest.mark.parametrize("field", ["city", "traits.district"])
def test_contains_and_starts_with_ignore_case_beyond_ascii(alias, field):
    contains = {"attribute": field, "op": "contains", "value": "İSTAN"}
    assert selected(alias, contains) == {"ayse@example.com"}
    assert selected(alias, {**contains, "value": "zür"}) == {"jonas@example.com"}
    assert selected(alias, {**contains, "value": "zur"}) == set()

    starts = {"attribute": field, "op": "starts_with", "value": "i"}
    assert selected(alias, starts) == {"ayse@example.com", "ines@example.com"}


def test_a_tag_matches_however_it_is_written(alias):
    rule = {"attribute": "tags", "op": "contains", "value": "istanbul"}
    assert selected(alias, rule) == {"ayse@example.com"}


@pytest.mark.parametrize(
    "condition",
    [
        {"property": "category", "op": "eq", "value": "İÇ GİYİM"},
        {"property": "category", "op": "contains", "value": "iç"},
        {"property": "products.category", "op": "eq", "value": "iç giyim"},
        {"property": "products.category", "op": "contains", "value": "İÇ G"},
    ],
)
def test_an_event_property_matches_however_it_is_written(alias, condition):
    rule = {"event": "Order Completed", "did": True, "where": [condition]}
    assert selected(alias, rule) == {"ayse@example.com"}


@pytest.mark.parametrize("written", ["istanbul", "İSTANBUL", "ISTANBUL"])
def test_a_declared_city_is_accepted_and_found_however_it_is_written(alias, written):
    TraitDefinition.objects.create(
        name="district", type=TraitType.TEXT, allowed_values=["İstanbul", "Zürich"]
    )
    rule = {"attribute": "traits.district", "op": "eq", "value": written}
    assert selected(alias, rule) == {"ayse@example.com"}

    wrong = {"attribute": "traits.district", "op": "eq", "value": "Izmir"}
    (error,) = rule_validate(wrong)
    assert "'Izmir' is not an allowed value of traits.district" in error.message


@pytest.mark.parametrize(
    ("condition", "found"),
    [
        ({"property": "products.price", "op": "eq", "value": 89}, True),
        ({"property": "products.quantity", "op": "in", "value": [1, 2]}, True),
        ({"property": "products.gift", "op": "eq", "value": "true"}, True),
        ({"property": "products.sku", "op": "contains", "value": "1"}, True),
    ],
)
def test_a_product_value_that_is_a_number_or_boolean_compares_as_text(
    alias, condition, found
):
    profile = Profile.objects.using(alias).get(email="ines@example.com")
    Event.objects.using(alias).create(
        message_id=f"{alias}-numbers",
        type="track",
        event="Cart Viewed",
        profile=profile,
        properties={
            "products": [{"price": 89, "quantity": 2, "gift": True, "sku": 501}]
        },
        timestamp=NOW,
        received_at=NOW,
    )
    rule = {"event": "Cart Viewed", "did": True, "where": [condition]}

    assert selected(alias, rule) == ({"ines@example.com"} if found else set())


@pytest.mark.parametrize("written", ["STRASSE", "straße", "Stra\u00dfe"])
def test_a_rule_value_is_read_as_a_declared_traits_values_are(alias, written):
    TraitDefinition.objects.create(
        name="street", type=TraitType.TEXT, allowed_values=["Straße", "Zürich"]
    )
    profile = Profile.objects.using(alias).get(email="jonas@example.com")
    profile.traits = {"street": "Straße", "district": "Zürich"}
    profile.save()

    rule = {"attribute": "traits.street", "op": "eq", "value": written}
    assert selected(alias, rule) == {"jonas@example.com"}


def test_a_decomposed_accent_is_the_same_allowed_value(alias):
    TraitDefinition.objects.create(
        name="district", type=TraitType.TEXT, allowed_values=["İstanbul", "Zürich"]
    )
    profile = Profile.objects.using(alias).get(email="jonas@example.com")
    profile.traits = {"district": "Zürich"}
    profile.save()

    rule = {"attribute": "traits.district", "op": "in", "value": ["Zu\u0308rich"]}
    assert selected(alias, rule) == {"jonas@example.com"}


def test_values_stored_before_a_trait_was_declared_are_still_found(alias):
    profile = Profile.objects.using(alias).get(email="jonas@example.com")
    profile.traits = {"road": "STRASSE"}
    profile.save()
    other = Profile.objects.using(alias).get(email="ines@example.com")
    other.traits = {"road": "Straße"}
    other.save()
    TraitDefinition.objects.create(
        name="road", type=TraitType.TEXT, allowed_values=["Straße", "Zürich"]
    )

    both = {"jonas@example.com", "ines@example.com"}
    for written in ("STRASSE", "Straße"):
        rule = {"attribute": "traits.road", "op": "eq", "value": written}
        assert selected(alias, rule) >= {"ines@example.com"}
    rule = {"attribute": "traits.road", "op": "eq", "value": "STRASSE"}
    assert selected(alias, rule) == both
    rule = {"attribute": "traits.road", "op": "neq", "value": "STRASSE"}
    assert selected(alias, rule) == {"ayse@example.com"}
