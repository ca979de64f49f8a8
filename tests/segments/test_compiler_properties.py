"""Property-based check: the compiled SQL selects exactly whom the reference says.

Hypothesis draws random people (fields, JSON traits stored as text or numbers, tags,
events with properties and product lists) and random rules over every kind of
condition, and the single SQL query must select the same profiles as the plain
Python evaluator in tests/segments/reference.py.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiles.models import Event, Profile, ProfileTag
from segments.compiler import rule_compile
from segments.language import rule_number, rule_validate
from tests.segments.reference import Person, Reference

pytestmark = pytest.mark.django_db(databases=["default", "sqlite"])

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
DAY_OFFSETS = [0, 0.5, 1, 6.99, 7, 7.01, 29.99, 30, 30.01, 45, 400]
EVENT_NAMES = [
    "Product Viewed",
    "Order Completed",
    "Checkout Started",
    "Email Opened",
    "Email Link Clicked",
]

texts = st.sampled_from(
    ["Ana", "ana", "Ben", "", "Chloé", "Paris", "paris", "São Paulo", "İstanbul"]
    + ["ZÜRICH", "Zürich"]
)
days = st.sampled_from([0, 1, 3, 7, 30, 365])
moments = st.one_of(
    st.none(), st.sampled_from(DAY_OFFSETS).map(lambda d: NOW - timedelta(days=d))
)
numbers = st.sampled_from([0, 3, 3.5, 7.25, 99.5, 500, 500.01])
numeric_text = st.sampled_from(["3", " 3.5 ", "29.50", "abc", "", "-1", "7.25"])
birthdays = st.sampled_from(
    [
        (NOW.date() + timedelta(days=d)).replace(year=1990).isoformat()
        for d in (0, 1, 3, 30)
    ]
    + ["2024-12-01", "2026-06-14", "2026-05-16", "2026-06-15T08:00:00+00:00"]
    # Birthdays with no year, one of them today.
    + [(NOW.date() + timedelta(days=d)).strftime("--%m-%d") for d in (0, 3)]
    # Text that names no day, as an undeclared trait may hold.
    + ["2024-13-45", "2026-02-30", "2026-6-1", "--13-01", "--06-15x", "soon"]
    + ["2023-02-29", "2024-02-29", "2026-06-10xyz", "0000-06-10", "--06-15\n"]
    + ["2026-06-10T", "2026-06-10 late", "2026-06-10 09:30", "2026-06-10T9:30"]
)


@st.composite
def products(draw):
    return [
        {
            "product_id": draw(st.sampled_from(["p1", "p2"])),
            "category": draw(
                st.sampled_from(["Outerwear", "outerwear", "Socks", "İç Giyim"])
            ),
            "price": draw(st.one_of(numbers, numeric_text)),
        }
        for _ in range(draw(st.integers(0, 2)))
    ]


@st.composite
def events(draw):
    properties = {}
    for key, values in (
        ("category", st.sampled_from(["Outerwear", "outerwear", "Socks", "İç Giyim"])),
        ("total", st.one_of(numbers, numeric_text)),
        ("product_id", st.sampled_from(["p1", "p2"])),
        ("campaign_id", st.sampled_from(["1", "2"])),
        # The site's and the shop's report of one order: one order in a count.
        ("order_id", st.sampled_from(["1057", 1057, 1057.0, "1058", "", None, 0])),
        ("checkout_id", st.sampled_from(["c1", "c2", ""])),
    ):
        if draw(st.booleans()):
            properties[key] = draw(values)
    if draw(st.booleans()):
        properties["products"] = draw(products())
    if draw(st.integers(0, 4)) == 0:
        properties["machine_open"] = True
    return {
        "event": draw(st.sampled_from(EVENT_NAMES)),
        "timestamp": NOW - timedelta(days=draw(st.sampled_from(DAY_OFFSETS))),
        "properties": properties,
    }


@st.composite
def people(draw):
    result = []
    for pk in range(draw(st.integers(1, 7))):
        traits = {}
        for key, values in (
            ("tier", st.sampled_from(["gold", "Gold", "silver", "", None])),
            ("score", st.one_of(numbers, numeric_text)),
            ("vip", st.booleans()),
            ("birthday", birthdays),
        ):
            if draw(st.booleans()):
                traits[key] = draw(values)
        result.append(
            Person(
                pk=pk,
                fields={
                    "email": draw(st.sampled_from([f"p{pk}@example.com", None])),
                    "first_name": draw(texts),
                    "city": draw(texts),
                    "country_code": draw(st.sampled_from(["FR", "DE", "US", "BR", ""])),
                    "subscription_status": draw(
                        st.sampled_from(
                            ["subscribed", "unsubscribed", "not_subscribed"]
                        )
                    ),
                    "suppressed_at": draw(st.sampled_from([None, NOW])),
                    "lifetime_value": Decimal(str(draw(numbers))),
                    "order_count": draw(st.integers(0, 4)),
                    "engagement_score": draw(st.sampled_from([0, 50, 100])),
                    "favourite_category": draw(
                        st.sampled_from(["", "Outerwear", "Socks"])
                    ),
                    "last_order_at": draw(moments),
                    "created_at": draw(moments) or NOW,
                },
                traits=traits,
                tags=draw(
                    st.lists(st.sampled_from(["VIP", "Newsletter"]), unique=True)
                ),
                events=draw(st.lists(events(), max_size=5)),
            )
        )
    return result


def compares_with_a_country_code(leaf: dict) -> bool:
    # A rule comparing country_code with anything but a code is refused (the
    # builder names the code): such leaves are not rules to compile.
    if leaf["attribute"] != "country_code":
        return True
    if leaf["op"] in ("contains", "starts_with"):
        return False
    if leaf["op"] not in EQUALITY_OPS:
        return True
    values = leaf["value"] if isinstance(leaf["value"], list) else [leaf["value"]]
    return all(value in ("", "FR") for value in values)


EQUALITY_OPS = ("eq", "neq", "in", "not_in")


def text_leaf():
    return (
        st.builds(
            lambda name, op, value: {"attribute": name, "op": op, "value": value},
            st.sampled_from(
                ["first_name", "city", "country_code", "email", "traits.tier"]
            ),
            st.sampled_from(
                ["eq", "neq", "contains", "starts_with", "exists", "is_empty"]
            ),
            st.sampled_from(["ana", "Paris", "FR", "gold", "", "o", "istanbul", "zür"]),
        )
        | st.builds(
            lambda name, op, values: {"attribute": name, "op": op, "value": values},
            st.sampled_from(["first_name", "traits.tier", "country_code"]),
            st.sampled_from(["in", "not_in"]),
            st.lists(
                st.sampled_from(["ana", "gold", "FR", "Ben", "İSTANBUL", "zürich"]),
                min_size=1,
                max_size=3,
            ),
        )
    ).filter(compares_with_a_country_code)


def number_leaf():
    compare = st.builds(
        lambda name, op, value: {name[0]: name[1], "op": op, "value": value},
        st.sampled_from(
            [
                ("attribute", "traits.score"),
                ("metric", "lifetime_value"),
                ("metric", "order_count"),
                ("metric", "engagement_score"),
            ]
        ),
        st.sampled_from(["eq", "neq", "gt", "gte", "lt", "lte", "exists", "is_empty"]),
        numbers,
    )
    between = st.builds(
        lambda low, high: {
            "attribute": "traits.score",
            "op": "between",
            # Bounds the wrong way round are refused (test_rule_numbers).
            "value": sorted([low, high], key=rule_number),
        },
        numbers,
        numbers,
    )
    return compare | between


def date_leaf():
    return st.builds(
        lambda target, op, value: {target[0]: target[1], "op": op, "value": value},
        st.sampled_from(
            [
                ("attribute", "traits.birthday"),
                ("attribute", "created_at"),
                ("metric", "last_order_at"),
            ]
        ),
        st.sampled_from(
            ["within_last_days", "more_than_days_ago", "anniversary_in_days", "exists"]
        ),
        days,
    )


def property_condition():
    return st.one_of(
        st.builds(
            lambda op, value: {"property": "category", "op": op, "value": value},
            st.sampled_from(["eq", "neq", "contains"]),
            st.sampled_from(["outerwear", "Socks", "İÇ GİYİM", "iç"]),
        ),
        st.builds(
            lambda op, value: {"property": "total", "op": op, "value": value},
            st.sampled_from(["gt", "lte", "eq", "exists"]),
            numbers,
        ),
        st.builds(
            lambda key, op, value: {
                "property": f"products.{key}",
                "op": op,
                "value": value,
            },
            st.sampled_from(["category", "price"]),
            st.sampled_from(["eq", "gt", "lte", "contains"]),
            st.sampled_from(["outerwear", 3, 29.5, "iç giyim", "İÇ"]),
        ).filter(
            lambda c: (c["op"] in ("gt", "lte")) == isinstance(c["value"], int | float)
        ),
    )


@st.composite
def event_leaf(draw):
    leaf = {"event": draw(st.sampled_from(EVENT_NAMES)), "did": draw(st.booleans())}
    if draw(st.booleans()):
        leaf["within_days"] = draw(st.sampled_from([7, 30]))
    if draw(st.booleans()):
        leaf["count"] = {
            "op": draw(st.sampled_from(["gte", "gt", "lte", "lt", "eq"])),
            "value": draw(st.integers(0, 3)),
        }
    if draw(st.booleans()):
        leaf["where"] = [draw(property_condition())]
    if draw(st.integers(0, 3)) == 0:
        leaf["followed_by"] = {
            "event": draw(
                st.sampled_from([n for n in EVENT_NAMES if n != leaf["event"]])
            ),
            "did": draw(st.booleans()),
        }
        if draw(st.booleans()):
            leaf["followed_by"]["within_days"] = 7
        if draw(st.booleans()):
            leaf["followed_by"]["same"] = "product_id"
    return leaf


def other_leaf():
    return st.one_of(
        st.builds(
            lambda op, value: {"attribute": "continent", "op": op, "value": value},
            st.sampled_from(["eq", "neq"]),
            st.sampled_from(["Europe", "South America"]),
        ),
        st.builds(
            lambda op: {"attribute": "tags", "op": op, "value": "newsletter"},
            st.sampled_from(["contains", "exists", "is_empty"]),
        ),
        st.builds(
            lambda value, op: {"attribute": "traits.vip", "op": op, "value": value},
            st.booleans(),
            st.sampled_from(["eq", "neq"]),
        ),
        st.builds(
            lambda s: {"consent": s}, st.sampled_from(["subscribed", "unsubscribed"])
        ),
        st.builds(lambda b: {"suppressed": b}, st.booleans()),
        st.builds(
            lambda name, days, direction: {
                "trend": name,
                "over_days": days,
                "direction": direction,
            },
            st.sampled_from(EVENT_NAMES),
            st.sampled_from([2, 14, 60]),
            st.sampled_from(["declining", "rising"]),
        ),
        st.builds(
            lambda kind, within: {"engagement": kind, "within_days": within},
            st.sampled_from(["opened", "clicked"]),
            st.sampled_from([None, 30]),
        ),
    )


leaves = st.one_of(text_leaf(), number_leaf(), date_leaf(), event_leaf(), other_leaf())
rules = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda c: {"all": c}),
        st.lists(children, max_size=3).map(lambda c: {"any": c}),
        children.map(lambda c: {"not": c}),
    ),
    max_leaves=6,
)


def store(persons: list[Person], alias: str) -> dict[int, int]:
    """Write the people to the database; return person pk -> profile id."""
    Event.objects.using(alias).all().delete()
    Profile.objects.using(alias).all().delete()
    ids = {}
    for person in persons:
        fields = {k: v for k, v in person.fields.items() if k != "created_at"}
        profile = Profile.objects.using(alias).create(traits=person.traits, **fields)
        Profile.objects.using(alias).filter(pk=profile.pk).update(
            created_at=person.fields["created_at"]
        )
        ProfileTag.objects.using(alias).bulk_create(
            ProfileTag(profile=profile, name=t) for t in person.tags
        )
        Event.objects.using(alias).bulk_create(
            Event(
                message_id=f"{profile.pk}-{n}",
                type="track",
                profile=profile,
                event=e["event"],
                properties=e["properties"],
                timestamp=e["timestamp"],
                received_at=NOW,
            )
            for n, e in enumerate(person.events)
        )
        ids[person.pk] = profile.pk
    return ids


@pytest.mark.parametrize("alias", ["default", "sqlite"])
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(persons=people(), rule=rules)
def test_compiled_rules_select_exactly_whom_the_reference_selects(
    alias, persons, rule, settings
):
    settings.BESPOKE_ACCOUNT_TIME_ZONE = "Europe/Paris"
    # As a saved rule is refreshed: what saving refuses since (a field compared
    # with empty text) still compiles, and selects as the reference does.
    assert rule_validate(rule, check_schema=False) == []
    ids = store(persons, alias)
    reference = Reference(now=NOW, zone="Europe/Paris", segments={}, campaigns={})

    compiled = rule_compile(rule, now=NOW)
    selected = set(
        Profile.objects.using(alias).filter(compiled).values_list("pk", flat=True)
    )
    # The shape used to ask about one profile at a time must agree too.
    one_at_a_time = {
        pk
        for pk in ids.values()
        if Profile.objects.using(alias)
        .filter(rule_compile(rule, now=NOW, one_profile=True), pk=pk)
        .exists()
    }

    expected = {ids[p.pk] for p in persons if reference.matches(rule, p)}
    assert selected == expected
    assert one_at_a_time == expected
