"""A declared trait's allowed values are one rule in any case, wherever they are held.

Import and the tracking API accept any case and store the declared spelling; segments
match whatever case the rule and the stored value are written in.
"""

import base64
import json

import pytest

from profiles.importing import contact_import_file
from profiles.models import Profile, TraitDefinition, TraitType
from profiles.processing import events_process_pending
from profiles.traits import TraitInvalid, TraitRule, trait_coerce
from segments.compiler import profiles_matching
from segments.language import rule_validate
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db

ENV_KEY = "test-env-write-key"
PLAN = TraitRule("plan", TraitType.TEXT, allowed_values=("free", "pro"))


@pytest.fixture
def plan_declared(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    TraitDefinition.objects.create(
        name="plan", type=TraitType.TEXT, allowed_values=["free", "pro"]
    )


@pytest.mark.parametrize("raw", ["pro", "PRO", " Pro "])
def test_any_case_of_an_allowed_value_is_stored_as_declared(raw):
    assert trait_coerce(PLAN, raw) == "pro"


def test_a_value_that_is_not_allowed_in_any_case_is_still_refused():
    with pytest.raises(TraitInvalid) as caught:
        trait_coerce(PLAN, "PREMIUM")

    assert caught.value.reason == "not_allowed"


def test_an_import_accepts_any_case_and_stores_the_declared_spelling(plan_declared):
    data = b"Email,Plan\nana@example.com,PRO\nben@example.com,Free\n"

    contact_import = contact_import_file(filename="plans.csv", data=data)

    assert (contact_import.accepted, contact_import.rejected) == (2, 0)
    plans = dict(Profile.objects.values_list("email", "traits__plan"))
    assert plans == {"ana@example.com": "pro", "ben@example.com": "free"}


def test_an_identify_accepts_any_case_and_stores_the_declared_spelling(
    client, plan_declared
):
    token = base64.b64encode(f"{ENV_KEY}:".encode()).decode()
    body = {
        "userId": "u-7",
        "traits": {"email": "cy@example.com", "plan": "PRO"},
    }

    response = client.post(
        "/v1/identify",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Basic {token}",
    )
    events_process_pending()

    answer = response.json()
    assert (answer["stored"], answer.get("warnings", [])) == (1, [])
    assert Profile.objects.get(email="cy@example.com").traits["plan"] == "pro"


def test_a_segment_matches_an_allowed_value_in_any_case(plan_declared):
    pro = ProfileFactory(email="pro@example.com", traits={"plan": "pro"})
    ProfileFactory(email="free@example.com", traits={"plan": "free"})
    rule = {"attribute": "traits.plan", "op": "eq", "value": "PRO"}

    assert rule_validate(rule) == []
    assert list(profiles_matching(rule)) == [pro]


@pytest.mark.parametrize("raw", ["istanbul", "ISTANBUL", "İSTANBUL", "İstanbul"])
def test_a_capital_dotted_i_is_the_same_letter_in_any_case(raw):
    city = TraitRule("city", TraitType.TEXT, allowed_values=("İstanbul", "Zürich"))

    assert trait_coerce(city, raw) == "İstanbul"


def test_a_decomposed_accent_is_the_same_letter():
    city = TraitRule("city", TraitType.TEXT, allowed_values=("Zürich", "Köln"))

    assert trait_coerce(city, "zu\u0308rich") == "Zürich"
