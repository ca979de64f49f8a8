"""One rule for a number's precision: more than 15 significant digits is refused,
whether it comes from an import, the tracking API or a Shopify payload."""

import base64
import json
from decimal import Decimal

import pytest

from profiles.models import Profile, RejectedEvent, TraitDefinition, TraitType
from profiles.processing import events_process_pending
from profiles.traits import (
    TraitInvalid,
    TraitRule,
    number_in_range,
    number_text,
    trait_coerce,
)
from segments.language import rule_number

SPEND = TraitRule("spend", "number")
ENV_KEY = "test-env-write-key"


@pytest.mark.parametrize(
    ("raw", "digits"),
    [
        ("1234567890.123456789", 19),
        ("0.1234567890123456789", 19),
        ("-999999999999999.5", 16),
        ("0.30000000000000004", 17),
        ("1.2345678901234567e5", 17),
    ],
)
def test_a_number_with_more_than_fifteen_significant_digits_is_refused(raw, digits):
    with pytest.raises(TraitInvalid) as caught:
        trait_coerce(SPEND, raw)

    assert caught.value.reason == "number_too_precise"
    assert caught.value.message == (
        f"spend: {raw!r} has {digits} significant digits, and a number keeps at "
        "most 15: it would be stored rounded. Round it, or declare the trait as "
        "text to keep every digit"
    )


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("1234567890.12345", 1234567890.12345),
        ("2.50000000000000000000", 2.5),
        ("000000000000000000012", 12),
        ("0.000000000000001", 1e-15),
        ("1 234 567 890.12345", 1234567890.12345),
        (0.1, 0.1),
        ("123456789012345e-5", 1234567890.12345),
        # A JSON number is a float: its noise past 15 digits is not the sender's.
        (0.30000000000000004, 0.3),
        (1234567890.1234567, 1234567890.12346),
    ],
)
def test_fifteen_significant_digits_or_fewer_are_kept(raw, stored):
    assert trait_coerce(SPEND, raw) == stored


def test_a_number_out_of_range_is_refused_as_such_before_its_precision():
    with pytest.raises(TraitInvalid) as caught:
        trait_coerce(SPEND, "12345678901234567.5")

    assert caught.value.reason == "number_too_large"


def test_a_segment_rule_value_keeps_the_grammar_without_the_precision_rule():
    # A rule's value is a bound compared with stored numbers, all of which have
    # 15 digits at most: a longer bound is compared as its float and not refused.
    text = number_text("0.1234567890123456789")

    assert text == "0.1234567890123456789"
    assert number_in_range(Decimal(text))
    assert rule_number("0.1234567890123456789") == 0.12345678901234568


# The tracking API ------------------------------------------------------------------


def identify(client, traits: dict) -> dict:
    token = base64.b64encode(f"{ENV_KEY}:".encode()).decode()
    body = {"userId": "u-precise", "traits": {"email": "p@example.com", **traits}}
    response = client.post(
        "/v1/identify",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Basic {token}",
    )
    return response.json()


@pytest.mark.django_db
def test_the_api_warns_of_an_over_precise_number_and_does_not_store_it(client):
    for name in ("loyalty_id", "ratio", "spend"):
        TraitDefinition.objects.create(name=name, type=TraitType.NUMBER)
    traits = {
        "loyalty_id": "1234567890.123456789",
        "ratio": 0.1234567890123456789,
        "spend": "1234567890.12345",
    }

    answer = identify(client, traits)
    events_process_pending()

    assert answer["stored"] == 1
    # The text is refused; the JSON number is read to 15 digits, as a float keeps.
    assert [w["code"] for w in answer["warnings"]] == [
        "trait_invalid:number_too_precise",
    ]
    assert answer["warnings"][0]["message"] == (
        "loyalty_id: '1234567890.123456789' has 19 significant digits, and a number "
        "keeps at most 15: it would be stored rounded. Round it, or declare the "
        "trait as text to keep every digit; not stored"
    )
    profile = Profile.objects.get(email="p@example.com")
    assert profile.traits == {"spend": 1234567890.12345, "ratio": 0.123456789012346}
    # Processing lists each refused trait on the sources page, as for any rule.
    assert sorted(RejectedEvent.objects.values_list("code", flat=True)) == [
        "trait_invalid:number_too_precise",
    ]
