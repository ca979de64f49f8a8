"""Names that would mean two things: a trait named like a profile field, two keys alike."""

import pytest
from django.urls import reverse

from profiles.keys import write_key_create, write_key_revoke
from profiles.models import TraitDefinition, WriteKey
from profiles.processing_identify import IDENTIFY_FIELD_TRAITS
from profiles.traits import trait_name_is_reserved

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "name",
    [
        "email",
        "first_name",
        "firstName",
        "city",
        "tags",
        "Email",
        "City",
        "FIRST_NAME",
        "Lifetime_Value",
        "Full_Name",
    ],
)
def test_a_trait_cannot_be_declared_under_a_profile_fields_name(signed_in, name):
    response = signed_in.post(
        reverse("trait_new"), {"name": name, "type": "number", "description": ""}
    )

    assert response.status_code == 200
    assert "is a profile field, not a custom trait" in response.content.decode()
    assert not TraitDefinition.objects.exists()


def test_every_name_an_identify_or_a_template_reads_from_a_profile_is_reserved():
    from campaigns.rendering import PROFILE_KEYS

    names = IDENTIFY_FIELD_TRAITS | PROFILE_KEYS | {"id", "created_at"}

    assert [name for name in names if not trait_name_is_reserved(name)] == []
    assert not trait_name_is_reserved("favorite_color")


def test_a_second_key_with_the_same_name_is_refused_until_the_first_is_revoked(
    signed_in,
):
    first = write_key_create(name="Shop website")

    refused = signed_in.post(reverse("source_keys"), {"name": "shop website "})

    assert "A key named “shop website” is in use already" in refused.content.decode()
    assert WriteKey.objects.count() == 1
    write_key_revoke(write_key_id=first.pk)
    signed_in.post(reverse("source_keys"), {"name": "Shop website"})
    assert WriteKey.objects.filter(revoked_at=None).count() == 1


def test_the_admin_refuses_a_second_key_of_that_name_and_makes_the_secret(
    admin_client,
):
    write_key_create(name="Shop website")
    url = reverse("admin:profiles_writekey_add")

    refused = admin_client.post(url, {"name": "SHOP WEBSITE"})
    assert "A key named “SHOP WEBSITE” is in use already" in refused.content.decode()

    admin_client.post(url, {"name": "App", "key": "chosen-by-hand"})
    app = WriteKey.objects.get(name="App")
    assert app.key != "chosen-by-hand"
    assert len(app.key) >= 32


@pytest.mark.parametrize(
    ("bound", "message"),
    [
        ("1_0", "“1_0” is not a number"),
        ("٥", "“٥” is not a number"),
        ("1e-5000", "“1e-5000” is out of range"),
        ("-1e400", "“-1e400” is out of range"),
    ],
)
def test_a_rule_bound_is_read_as_values_are(signed_in, bound, message):
    response = signed_in.post(
        reverse("trait_new"),
        {"name": "score", "type": "number", "description": "", "minimum": bound},
    )

    assert message in response.content.decode()
    assert not TraitDefinition.objects.exists()


@pytest.mark.parametrize("lookalike", ["Ｓｈｏｐ", "Shop\u200b", " shop "])
def test_a_name_that_only_looks_different_is_the_same_name(signed_in, lookalike):
    write_key_create(name="Shop")

    response = signed_in.post(reverse("source_keys"), {"name": lookalike})

    assert "is in use already" in response.content.decode()
    assert WriteKey.objects.count() == 1


def test_an_identify_trait_named_like_a_profile_field_is_named_and_not_stored(
    db, client, django_capture_on_commit_callbacks
):
    import base64
    import json

    from profiles.models import IdentityKind, ProfileIdentity, RejectedEvent
    from profiles.processing import events_process_pending

    token = base64.b64encode(b"test-env-write-key:").decode()
    body = {
        "userId": "usr_carol",
        "messageId": "carol-1",
        "traits": {
            "email": "carol@example.com",
            "lifetime_value": 5000,
            "city": "Lyon",
            "id": "usr_carol",
            "plan": "pro",
        },
    }

    response = client.post(
        "/v1/identify",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Basic {token}",
    )
    events_process_pending()

    assert response.status_code == 200
    notices = response.json()["warnings"]
    assert [n["code"] for n in notices] == ["trait_invalid:reserved_name"] * 2
    by_trait = {n["message"].split(":")[0]: n["message"] for n in notices}
    assert "a place goes in address.city" in by_trait["city"]
    assert by_trait["lifetime_value"].endswith("so it is not kept as a custom trait")
    carol = ProfileIdentity.objects.get(kind=IdentityKind.USER_ID, value="usr_carol")
    assert carol.profile.traits == {"plan": "pro"}
    refused = RejectedEvent.objects.filter(code="trait_invalid:reserved_name")
    assert sorted(r.payload["trait"] for r in refused) == ["city", "lifetime_value"]
