r"""A trait's pattern: \d is a digit 0 to 9 wherever the rule is applied."""

import pytest
from django.urls import reverse

from profiles.health import trait_rule_breaches
from profiles.importing import contact_import_file
from profiles.models import Profile, RejectedEvent, TraitDefinition
from profiles.processing import events_process_pending
from profiles.traits import TraitInvalid, TraitRule, trait_coerce
from tests.factories import ProfileFactory

POSTCODE = r"^\d{5}$"
FULL_WIDTH = "１２３４５"
TRACKING_AUTH = "Basic dGVzdC1lbnYtd3JpdGUta2V5Og=="


@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        (POSTCODE, FULL_WIDTH),
        # Arabic-Indic and mathematical bold digits
        (POSTCODE, "١٢٣٤٥"),
        (r"\d+", "𝟏𝟐"),
        # in a set, and beside a range
        (r"[\d-]+", "１２-３"),
        (r"[\dA-F]{4}", "1A２F"),
    ],
)
def test_a_digit_in_a_pattern_is_0_to_9_only(pattern, value):
    rule = TraitRule("code", "text", pattern=pattern)

    with pytest.raises(TraitInvalid) as caught:
        trait_coerce(rule, value)

    assert caught.value.reason == "pattern_mismatch"
    assert caught.value.message == f"code: {value!r} does not match {pattern}"


@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        (POSTCODE, "12345"),
        (r"[\d-]+", "12-3"),
        (r"[\dA-F]{4}", "1A2F"),
        (r"\D+", "abc"),
        # a backslash written as such, then a d
        (r"a\\d", "a\\d"),
        # \w, \s and case keep their meaning in every script
        (r"\w+", "Łukasz"),
        (r"\w+ \w+", "José Núñez"),
        (r"(?i)zürich", "ZÜRICH"),
        (r"\d+\s\d+", "12\u00a034"),
        # digits of any script, asked for by name
        (r"\p{Nd}+", FULL_WIDTH),
    ],
)
def test_the_rest_of_a_pattern_keeps_its_meaning(pattern, value):
    rule = TraitRule("code", "text", pattern=pattern)

    assert trait_coerce(rule, value) == value


@pytest.mark.django_db
def test_an_import_refuses_a_full_width_postcode_for_its_field_alone():
    TraitDefinition.objects.create(name="postcode", type="text", pattern=POSTCODE)
    data = (
        f"Email,Postcode\nwide@example.com,{FULL_WIDTH}\nplain@example.com,12345\n"
    ).encode()

    contact_import = contact_import_file(filename="postcodes.csv", data=data)

    assert [(r["record"], r["reason"]) for r in contact_import.rejections] == [
        (1, "pattern_mismatch")
    ]
    traits = dict(Profile.objects.values_list("email", "traits"))
    assert traits == {
        "wide@example.com": {},
        "plain@example.com": {"postcode": "12345"},
    }


@pytest.mark.django_db
def test_an_identify_leaves_out_a_full_width_postcode(client):
    TraitDefinition.objects.create(name="postcode", type="text", pattern=POSTCODE)
    body = {
        "userId": "wide-digits",
        "traits": {"email": "wide@example.com", "postcode": FULL_WIDTH, "plan": "pro"},
    }

    response = client.post(
        "/v1/identify",
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=TRACKING_AUTH,
    )
    events_process_pending()

    assert response.status_code == 200
    assert Profile.objects.get(email="wide@example.com").traits == {"plan": "pro"}
    assert list(RejectedEvent.objects.values_list("code", flat=True)) == [
        "trait_invalid:pattern_mismatch"
    ]


@pytest.mark.django_db
def test_the_traits_page_counts_a_stored_full_width_postcode_as_breaking():
    ProfileFactory(traits={"postcode": "12345"})
    wide = ProfileFactory(traits={"postcode": FULL_WIDTH})

    breaches = trait_rule_breaches(rule=TraitRule("postcode", "text", pattern=POSTCODE))

    assert (breaches["checked"], breaches["breaking"]) == (2, 1)
    assert breaches["examples"] == [
        {
            "profile_id": wide.pk,
            "message": f"postcode: {FULL_WIDTH!r} does not match {POSTCODE}",
        }
    ]


@pytest.mark.django_db
def test_a_broken_pattern_is_refused_where_it_is_broken_as_written(signed_in):
    response = signed_in.post(
        reverse("trait_new"),
        {"name": "postcode", "type": "text", "description": "", "pattern": r"\d\d("},
    )

    assert response.status_code == 200
    assert response.context["form"].errors["pattern"] == [
        "The pattern is not a valid regular expression: missing ) at position 5."
    ]
    assert TraitDefinition.objects.count() == 0
