"""A huge number in a declared trait loses its field, never the import."""

import pytest

from profiles.importing import contact_import_file
from profiles.models import ImportStatus, Profile, TraitDefinition, TraitType

pytestmark = pytest.mark.django_db


def test_a_number_too_large_is_refused_for_its_field_and_the_rest_imports():
    TraitDefinition.objects.create(name="spend", type=TraitType.NUMBER)
    data = (
        b"Email,Spend\nbig1@example.com,1e5000\nbig2@example.com,7\n"
        b"big3@example.com,1e400\n"
    )

    contact_import = contact_import_file(filename="big.csv", data=data)

    assert contact_import.status == ImportStatus.DONE
    assert [(r["record"], r["reason"]) for r in contact_import.rejections] == [
        (1, "number_too_large"),
        (3, "number_too_large"),
    ]
    traits = dict(Profile.objects.values_list("email", "traits"))
    assert traits == {
        "big1@example.com": {},
        "big2@example.com": {"spend": 7},
        "big3@example.com": {},
    }


def test_an_identify_with_a_number_too_large_keeps_the_person_and_drops_the_trait(
    client,
):
    from profiles.models import RejectedEvent
    from profiles.processing import events_process_pending

    TraitDefinition.objects.create(name="spend", type=TraitType.NUMBER)
    body = {
        "userId": "big-spender",
        "traits": {"email": "bignum@example.com", "spend": "1e5000", "plan": "pro"},
    }

    response = client.post(
        "/v1/identify",
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION="Basic dGVzdC1lbnYtd3JpdGUta2V5Og==",
    )
    events_process_pending()

    assert response.status_code == 200
    profile = Profile.objects.get(email="bignum@example.com")
    assert profile.traits == {"plan": "pro"}
    assert list(RejectedEvent.objects.values_list("code", flat=True)) == [
        "trait_invalid:number_too_large"
    ]
