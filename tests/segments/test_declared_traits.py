"""The trait schema in segment rules: declared traits are held to their type."""

import pytest

from profiles.models import TraitDefinition, TraitType
from segments.compiler import profiles_matching
from segments.language import RuleInvalid, rule_describe, rule_validate
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema():
    TraitDefinition.objects.create(name="orders", type=TraitType.NUMBER, minimum=0)
    TraitDefinition.objects.create(name="vip", type=TraitType.BOOLEAN)
    TraitDefinition.objects.create(name="joined", type=TraitType.DATE)
    TraitDefinition.objects.create(
        name="tier", type=TraitType.TEXT, allowed_values=["bronze", "silver", "gold"]
    )


def messages(rule) -> list[str]:
    return [error.message for error in rule_validate(rule)]


def trait(name: str, op: str, value=None) -> dict:
    node = {"attribute": f"traits.{name}", "op": op}
    if value is not None:
        node["value"] = value
    return node


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (
            trait("orders", "eq", "lots"),
            "traits.orders is declared a number: 'lots' is not a number",
        ),
        (
            trait("orders", "in", [3, "many"]),
            "traits.orders is declared a number: 'many' is not a number",
        ),
        (
            trait("vip", "eq", "yes"),
            "traits.vip is declared true or false: use true or false, not 'yes'",
        ),
        (
            trait("tier", "in", ["gold", "platinum"]),
            "'platinum' is not an allowed value of traits.tier (bronze, silver, gold)",
        ),
        (
            trait("vip", "contains", "t"),
            "unknown op 'contains': use one of ['eq', 'exists', 'is_empty', 'neq']",
        ),
        (
            trait("joined", "eq", "2024-01-01"),
            "unknown op 'eq': use one of ['anniversary_in_days', 'exists', "
            "'is_empty', 'more_than_days_ago', 'within_last_days']",
        ),
    ],
)
def test_a_declared_trait_refuses_values_and_ops_that_break_its_type(
    schema, node, message
):
    assert messages({"all": [node]}) == [message]


@pytest.mark.parametrize(
    "node",
    [
        trait("orders", "gte", 3),
        trait("orders", "eq", "12"),
        trait("vip", "eq", True),
        trait("tier", "eq", "Gold"),
        trait("tier", "exists"),
        trait("joined", "within_last_days", 30),
        # An undeclared trait takes any op and value, as before.
        trait("shoe_size", "contains", "4"),
    ],
)
def test_conditions_that_fit_the_schema_are_accepted(schema, node):
    assert messages(node) == []


def test_a_declared_number_compares_as_a_number_even_written_as_text(schema):
    ProfileFactory(email="twelve@example.com", traits={"orders": 12})
    ProfileFactory(email="text@example.com", traits={"orders": "12.0"})
    ProfileFactory(email="three@example.com", traits={"orders": 3})

    matched = profiles_matching(trait("orders", "eq", "12.0"))

    assert {p.email for p in matched} == {"twelve@example.com", "text@example.com"}


def test_an_undeclared_trait_still_compares_text_as_text():
    ProfileFactory(email="twelve@example.com", traits={"orders": 12})
    ProfileFactory(email="text@example.com", traits={"orders": "12.0"})

    matched = profiles_matching(trait("orders", "eq", "12.0"))

    assert {p.email for p in matched} == {"text@example.com"}


def test_declaring_a_trait_later_never_stops_a_saved_segment(schema):
    from segments.membership import segment_refresh
    from segments.models import Segment
    from segments.preview import rule_preview

    # Saved while 'tier' had no allowed values; 'platinum' is not one of them now.
    rule = trait("tier", "eq", "platinum")
    segment = Segment.objects.create(name="Platinum", slug="platinum", rule=rule)
    ProfileFactory(email="plat@example.com", traits={"tier": "platinum"})

    segment_refresh(segment_id=segment.pk)

    assert list(segment.memberships.values_list("profile__email", flat=True)) == [
        "plat@example.com"
    ]
    with pytest.raises(RuleInvalid) as refused:
        rule_preview(rule=rule)
    assert "not an allowed value of traits.tier" in str(refused.value)


@pytest.mark.parametrize(
    ("op", "days"), [("within_last_days", 36500), ("more_than_days_ago", 1)]
)
def test_an_undeclared_trait_that_names_no_day_is_no_date(op, days):
    # given undeclared "date" traits: a real day, and text that names none
    ProfileFactory(email="real@example.com", traits={"renewal": "2020-03-01"})
    ProfileFactory(email="nonsense@example.com", traits={"renewal": "2024-13-45"})
    ProfileFactory(email="feb@example.com", traits={"renewal": "2023-02-30"})
    ProfileFactory(email="leap@example.com", traits={"renewal": "2023-02-29"})
    ProfileFactory(email="tail@example.com", traits={"renewal": "2020-03-01xyz"})
    ProfileFactory(email="zero@example.com", traits={"renewal": "0000-01-01"})
    ProfileFactory(email="time@example.com", traits={"renewal": "2020-03-01T10:00Z"})
    ProfileFactory(email="junk@example.com", traits={"renewal": "2020-03-01 junk"})

    # when a rule asks how many days ago it was
    matched = profiles_matching(trait("renewal", op, days))

    # then only the real days are any number of days ago
    found = set(matched.values_list("email", flat=True))
    assert found == {"real@example.com", "time@example.com"}


@pytest.mark.parametrize(
    ("days", "said"),
    [
        (0, "traits.birthday has its anniversary today"),
        (7, "traits.birthday has its anniversary in exactly 7 days"),
    ],
)
def test_an_anniversary_rule_says_it_means_that_day_exactly(days, said):
    rule = {"attribute": "traits.birthday", "op": "anniversary_in_days", "value": days}

    assert rule_describe(rule) == said


@pytest.mark.parametrize(("value", "said"), [(True, "true"), (False, "false")])
def test_a_boolean_rule_is_said_as_a_marketer_writes_it(value, said):
    rule = {"attribute": "traits.loyal", "op": "eq", "value": value}

    assert rule_describe(rule) == f"traits.loyal is {said}"
