"""A blank text is no value of a declared trait: refused and named; null clears."""

import pytest
from django.urls import reverse

from profiles.models import Profile, RejectedEvent, TraitDefinition, TraitType
from profiles.traits import TraitInvalid, TraitRule, trait_coerce
from tests.profiles.conftest import tracking_processed

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("kind", ["number", "boolean", "date", "datetime", "text"])
@pytest.mark.parametrize("raw", ["", "  ", "\t\n"])
def test_a_blank_text_is_refused_by_every_declared_type(kind, raw):
    with pytest.raises(TraitInvalid) as refused:
        trait_coerce(TraitRule("vip", kind), raw)

    assert refused.value.reason == "blank"
    assert refused.value.message == (
        f"vip: {raw!r} is blank, which is no value: send null to clear the trait"
    )


@pytest.mark.parametrize("kind", ["number", "boolean", "date", "text"])
def test_null_still_clears_a_declared_trait(kind):
    assert trait_coerce(TraitRule("vip", kind), None) is None


@pytest.fixture
def declared():
    TraitDefinition.objects.create(name="vip", type=TraitType.BOOLEAN)
    TraitDefinition.objects.create(name="score", type=TraitType.NUMBER)
    TraitDefinition.objects.create(name="plan", type=TraitType.TEXT)


def identify(client, traits: dict, message_id: str) -> dict:
    body = {"userId": "zoe", "traits": traits, "messageId": message_id}
    return tracking_processed(client, "/v1/identify", body)


def test_blank_values_leave_declared_traits_as_they_were_and_are_named(
    client, declared
):
    first = {"firstName": "Zoe", "vip": True, "score": 5, "plan": "pro"}
    identify(client, {**first, "color": "red"}, "m-1")

    answer = identify(
        client,
        {"firstName": "", "vip": "  ", "score": " ", "plan": "", "color": ""},
        "m-2",
    )

    profile = Profile.objects.get()
    # An undeclared trait keeps what was sent, a blank text as any other.
    assert profile.traits == {"vip": True, "score": 5, "plan": "pro", "color": ""}
    assert profile.first_name == "Zoe"
    assert [(w["code"], w["message"]) for w in answer["warnings"]] == [
        (
            "trait_invalid:blank",
            f"{name}: {raw!r} is blank, which is no value: send null to clear "
            "the trait; not stored",
        )
        for name, raw in (("vip", "  "), ("score", " "), ("plan", ""))
    ]
    rows = sorted(
        (r.payload["trait"], r.code, r.message_id, r.payload["value"])
        for r in RejectedEvent.objects.all()
    )
    assert rows == [
        ("plan", "trait_invalid:blank", "m-2", ""),
        ("score", "trait_invalid:blank", "m-2", " "),
        ("vip", "trait_invalid:blank", "m-2", "  "),
    ]


def test_the_sources_page_lists_the_blank_values_refused(client, declared, marketer):
    identify(client, {"vip": True}, "m-1")
    identify(client, {"vip": " "}, "m-2")
    client.force_login(marketer)

    page = client.get(reverse("sources_health")).content.decode()

    assert '<tr data-notice="trait_invalid:blank"><td><code>trait_invalid:blank' in (
        page
    )
    assert "vip: &#x27; &#x27; is blank, which is no value" in page


def test_null_clears_a_declared_trait_sent_by_identify(client, declared):
    identify(client, {"vip": True, "score": 5}, "m-1")

    answer = identify(client, {"vip": None, "score": None}, "m-2")

    assert Profile.objects.get().traits == {"vip": None, "score": None}
    assert "warnings" not in answer or answer["warnings"] == []
    assert RejectedEvent.objects.count() == 0
