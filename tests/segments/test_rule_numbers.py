"""Numbers in segment rules are read as imports and the tracking API read them."""

import pytest

from segments.compiler import profiles_matching
from segments.language import rule_validate
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("value", ["1_2", "١٢", "1 2", "0x10"])
def test_a_value_no_import_would_read_as_a_number_is_refused(value):
    rule = {"attribute": "traits.score", "op": "gte", "value": value}

    assert [error.message for error in rule_validate(rule)] == [
        f"op 'gte' needs a number, not {value!r}"
    ]


OUT_OF_RANGE = (
    "is out of range: a number must be under 1e15 in size (at most 15 digits before "
    "the decimal point) and, unless it is 0, at least 1e-15"
)


@pytest.mark.parametrize("value", [1e300, "1e-5000", "-1e400", 10**15])
def test_a_number_out_of_range_is_refused_with_the_limit(value):
    rule = {"metric": "lifetime_value", "op": "gt", "value": value}

    assert [error.message for error in rule_validate(rule)] == [
        f"op 'gt': {value!r} {OUT_OF_RANGE}"
    ]


def test_a_between_bound_out_of_range_is_refused_with_the_limit():
    rule = {"attribute": "traits.score", "op": "between", "value": [1, 1e300]}

    assert [error.message for error in rule_validate(rule)] == [
        f"'is between': 1e+300 {OUT_OF_RANGE}"
    ]


def test_a_between_with_its_bounds_swapped_is_refused_naming_them():
    rule = {"metric": "lifetime_value", "op": "between", "value": [100, "0"]}

    assert [error.message for error in rule_validate(rule)] == [
        "'is between' takes the smaller number first: 100 is above 0; "
        "swap them (0 and 100)"
    ]


def test_a_between_of_one_number_is_taken():
    rule = {"metric": "lifetime_value", "op": "between", "value": [5, 5.0]}

    assert rule_validate(rule) == []


def test_the_preview_api_names_the_limit(admin_client):
    rule = {"metric": "lifetime_value", "op": "gt", "value": 1e300}

    response = admin_client.post(
        "/segments/api/preview", {"rule": rule}, content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] == f"op 'gt': 1e+300 {OUT_OF_RANGE}"


def test_thousands_written_with_spaces_compare_as_the_number():
    ProfileFactory(email="big@example.com", traits={"score": 1_500_000})
    ProfileFactory(email="small@example.com", traits={"score": 999})

    matched = profiles_matching(
        {"attribute": "traits.score", "op": "gte", "value": "1 000 000"}
    )

    assert [profile.email for profile in matched] == ["big@example.com"]


@pytest.mark.parametrize("name", ["traits.score\u0000", "traits.", "traits.a b"])
def test_a_trait_name_that_could_break_a_json_path_is_refused(name):
    errors = rule_validate({"attribute": name, "op": "exists"})

    assert [error.message for error in errors] == [
        f"unknown attribute {name!r}: use city, country_code, created_at, email, "
        "first_name, last_name, phone, region, timezone, continent, tags or "
        "traits.<name>"
    ]


def test_a_segment_saved_with_such_a_name_leaves_the_pages_working(client, marketer):
    from django.urls import reverse

    from segments.models import Segment

    Segment.objects.create(
        name="Broken",
        slug="broken",
        rule={"attribute": "traits.x y", "op": "exists"},
    )
    person = ProfileFactory(email="p@example.com", traits={"x": 1})
    client.force_login(marketer)

    assert client.get(reverse("segment_list")).status_code == 200
    profile_page = reverse("profile_detail", kwargs={"pk": person.pk})
    assert client.get(profile_page).status_code == 200


def test_the_preview_api_names_a_number_past_a_floats_range(admin_client):
    # 1e999 reads as infinity: the answer names where it is, not "invalid JSON".
    body = (
        '{"rule": {"all": [{"metric": "lifetime_value", "op": "gt", "value": 1e999}]}}'
    )

    response = admin_client.post(
        "/segments/api/preview", body, content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "path": "rule",
            "message": f"The number at rule.all[0].value {OUT_OF_RANGE}.",
        }
    ]


def test_a_between_of_one_bound_asks_for_two_numbers():
    rule = {"metric": "lifetime_value", "op": "between", "value": [5]}

    assert [error.message for error in rule_validate(rule)] == [
        "'is between' needs two numbers, the smaller first"
    ]


@pytest.mark.parametrize("value", ["EU", ["FR", "Ruritania"]])
def test_a_country_bespoke_cannot_read_is_refused_naming_what_it_reads(value):
    op = "in" if isinstance(value, list) else "eq"

    errors = rule_validate({"attribute": "country_code", "op": op, "value": value})

    (error,) = errors
    assert error.message.endswith(
        "is no country Bespoke knows, so no profile has it: write a two-letter ISO "
        "3166 code such as GB, or a country's name in English or its own language"
    )


@pytest.mark.parametrize("value", ["GB", "fr", ["DE", "XK"], "UK", "France"])
def test_a_country_a_profile_can_have_is_taken(value):
    op = "in" if isinstance(value, list) else "eq"

    assert rule_validate({"attribute": "country_code", "op": op, "value": value}) == []


@pytest.mark.parametrize("op", ["eq", "neq"])
@pytest.mark.parametrize("value", ["", "  "])
def test_a_field_compared_with_empty_text_is_refused_on_saving_not_refreshing(
    op, value
):
    # qa24: the builder's new condition, saved before a value was chosen, matched
    # everyone whose country is empty.
    rule = {"attribute": "country_code", "op": op, "value": value}

    (error,) = rule_validate(rule)

    assert error.message == (
        "country_code is compared with empty text: choose a value, or use "
        "is_empty for profiles with no country_code (exists for those with one)"
    )
    assert rule_validate(rule, check_schema=False) == []


@pytest.mark.parametrize(
    ("op", "value"),
    [("eq", "UK"), ("eq", "united kingdom"), ("in", ["uk", "FR"]), ("eq", "gb")],
)
def test_a_country_is_compared_as_profiles_keep_it(db, op, value):
    from profiles.models import Profile
    from segments.compiler import rule_compile

    Profile.objects.create(email="gb@example.com", country_code="GB")
    Profile.objects.create(email="de@example.com", country_code="DE")
    rule = {"attribute": "country_code", "op": op, "value": value}

    matched = Profile.objects.filter(rule_compile(rule))

    assert list(matched.values_list("email", flat=True)) == ["gb@example.com"]


@pytest.mark.parametrize(
    ("op", "value", "message"),
    [
        ("eq", 44, "a country is text"),
        ("eq", ["UK", "FR"], "a country is text"),
        ("in", ["UK", ["FR"]], "a country is text"),
        ("contains", "UK", "country_code holds two-letter codes"),
        ("starts_with", "United", "country_code holds two-letter codes"),
    ],
)
def test_a_country_rule_that_could_only_match_nobody_is_refused(op, value, message):
    errors = rule_validate({"attribute": "country_code", "op": op, "value": value})

    assert [error.message.startswith(message) for error in errors] == [True]


def test_a_segment_built_on_one_saved_before_a_check_is_still_taken(db):
    from segments.models import Segment

    Segment.objects.create(
        name="Old",
        slug="old",
        rule={"attribute": "country_code", "op": "eq", "value": "EU"},
    )

    assert rule_validate({"segment": "old"}) == []
