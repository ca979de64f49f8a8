"""An identify older than what a profile holds leaves it be, in any processing order."""

import base64
import importlib
import json
from types import SimpleNamespace

import pytest
from django.apps import apps as django_apps
from django.db import connection

from profiles.models import Event, Profile
from profiles.processing import events_process_pending
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db

AUTH = "Basic " + base64.b64encode(b"test-env-write-key:").decode()


@pytest.fixture
def send(client):
    """Post one call and process it: each call is a chunk of its own."""

    def post(path: str, body: dict) -> None:
        response = client.post(
            path,
            data=json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=AUTH,
        )
        assert response.status_code == 200, response.content
        events_process_pending()

    return post


NEWER = {
    "userId": "u-ivy",
    "timestamp": "2026-03-02T09:00:00Z",
    "traits": {
        "firstName": "Ivy",
        "lastName": "Stone",
        "plan": "gold",
        "address": {"city": "Lyon", "country": "FR"},
    },
}
# History back-filled a day later, about the day before.
OLDER = {
    "userId": "u-ivy",
    "timestamp": "2026-03-01T09:00:00Z",
    "traits": {
        "firstName": "Ivy-Old",
        "lastName": "Brook",
        "plan": "bronze",
        "phone": "+44 20 7946 0000",
        "colour": "green",
        "address": {"city": "Leeds", "state": "West Yorkshire", "country": "GB"},
    },
}


def test_an_older_identify_processed_later_keeps_the_newer_values(send):
    send("/v1/identify", NEWER)
    send("/v1/identify", OLDER)

    ivy = Profile.objects.get()
    # What the newer call said stands; what only the older one said is filled in.
    assert (ivy.first_name, ivy.last_name) == ("Ivy", "Stone")
    assert (ivy.city, ivy.region, ivy.country_code) == ("Lyon", "", "FR")
    assert ivy.phone == "+44 20 7946 0000"
    assert ivy.traits["plan"] == "gold"
    assert ivy.traits["colour"] == "green"
    assert ivy.traits["address"] == NEWER["traits"]["address"]
    assert ivy.identify_times["plan"] == "2026-03-02T09:00:00.000000+00:00"
    assert ivy.identify_times["colour"] == "2026-03-01T09:00:00.000000+00:00"


def test_the_same_calls_in_time_order_give_the_same_profile(send):
    send("/v1/identify", OLDER)
    send("/v1/identify", NEWER)

    ivy = Profile.objects.get()
    assert (ivy.first_name, ivy.last_name, ivy.city) == ("Ivy", "Stone", "Lyon")
    assert (ivy.region, ivy.phone) == ("", "+44 20 7946 0000")
    assert (ivy.traits["plan"], ivy.traits["colour"]) == ("gold", "green")


def test_an_older_identify_on_the_careful_path_keeps_the_newer_values(send):
    # The older call also joins a browser's profile: it goes the careful way.
    send("/v1/identify", NEWER)
    send("/v1/page", {"anonymousId": "a-ivy", "name": "Home"})
    send("/v1/identify", {**OLDER, "anonymousId": "a-ivy"})

    ivy = Profile.objects.get()
    assert (ivy.first_name, ivy.city, ivy.traits["plan"]) == ("Ivy", "Lyon", "gold")
    assert ivy.traits["colour"] == "green"


def test_a_newer_identify_of_another_city_clears_the_region_an_older_one_set(send):
    send("/v1/identify", OLDER)
    assert Profile.objects.get().region == "West Yorkshire"

    send("/v1/identify", NEWER)

    assert Profile.objects.get().region == ""


def test_an_older_identify_moving_the_person_does_not_clear_the_newer_region(send):
    send(
        "/v1/identify",
        {
            **NEWER,
            "traits": {"address": {"city": "Lyon", "state": "ARA", "country": "FR"}},
        },
    )
    send(
        "/v1/identify",
        {**OLDER, "traits": {"address": {"city": "Leeds", "country": "GB"}}},
    )

    ivy = Profile.objects.get()
    assert (ivy.city, ivy.region, ivy.country_code) == ("Lyon", "ARA", "FR")


def test_an_identify_replaces_what_an_import_gave_whatever_its_time(send):
    # An import's values have no identify time: any identify's word is newer.
    ProfileFactory(email="ivy@example.com", first_name="Imported", traits={"plan": "x"})
    send(
        "/v1/identify",
        {
            **OLDER,
            "traits": {"email": "ivy@example.com", "firstName": "Ivy", "plan": "y"},
        },
    )

    ivy = Profile.objects.get()
    assert (ivy.first_name, ivy.traits["plan"]) == ("Ivy", "y")


def test_a_merge_keeps_each_field_the_person_named_last(send):
    # The browser's profile was told the newer name and plan; the signed-in one
    # has the address, so it is the one kept.
    send(
        "/v1/identify",
        {
            "anonymousId": "a-1",
            "timestamp": "2026-03-02T09:00:00Z",
            "traits": {"firstName": "Ivy", "plan": "gold"},
        },
    )
    send(
        "/v1/identify",
        {
            "userId": "u-ivy",
            "timestamp": "2026-03-01T09:00:00Z",
            "traits": {
                "email": "ivy@example.com",
                "firstName": "Ivy-Old",
                "lastName": "Stone",
                "plan": "bronze",
            },
        },
    )
    send("/v1/alias", {"userId": "u-ivy", "previousId": "a-1"})

    ivy = Profile.objects.get()
    assert ivy.email == "ivy@example.com"
    assert (ivy.first_name, ivy.last_name, ivy.traits["plan"]) == (
        "Ivy",
        "Stone",
        "gold",
    )
    assert ivy.identify_times["first_name"] == "2026-03-02T09:00:00.000000+00:00"
    assert ivy.identify_times["last_name"] == "2026-03-01T09:00:00.000000+00:00"

    # and a call older than both, processed after the merge, changes none of it
    send(
        "/v1/identify",
        {
            "userId": "u-ivy",
            "timestamp": "2026-02-01T09:00:00Z",
            "traits": {"firstName": "Ive", "lastName": "Rock", "plan": "tin"},
        },
    )
    ivy.refresh_from_db()
    assert (ivy.first_name, ivy.last_name, ivy.traits["plan"]) == (
        "Ivy",
        "Stone",
        "gold",
    )


def test_a_merge_keeps_the_kept_profiles_newer_name(send):
    send(
        "/v1/identify",
        {
            "anonymousId": "a-1",
            "timestamp": "2026-03-01T09:00:00Z",
            "traits": {"firstName": "Ivy-Old"},
        },
    )
    send(
        "/v1/identify",
        {
            "userId": "u-ivy",
            "timestamp": "2026-03-02T09:00:00Z",
            "traits": {"email": "ivy@example.com", "firstName": "Ivy"},
        },
    )
    send("/v1/alias", {"userId": "u-ivy", "previousId": "a-1"})

    assert Profile.objects.get().first_name == "Ivy"


@pytest.mark.parametrize("vendor", ["postgresql", "sqlite"])
def test_the_migration_gives_profiles_the_times_of_their_identifies(vendor):
    migration = importlib.import_module("profiles.migrations.0031_identify_times")
    ivy = ProfileFactory(first_name="Ivy", city="Lyon", traits={"plan": "gold"})
    other = ProfileFactory(first_name="Ann")
    stored = {"received_at": "2026-03-03T00:00:00Z", "type": "identify"}
    processed = {**stored, "processed_at": "2026-03-03T00:00:01Z"}
    Event.objects.create(
        message_id="old",
        profile=ivy,
        timestamp="2026-03-01T09:00:00Z",
        traits={"firstName": "Ivy-Old", "plan": "bronze", "refused": 1},
        **processed,
    )
    Event.objects.create(
        message_id="new",
        profile=ivy,
        timestamp="2026-03-02T09:00:00.5Z",
        traits={"name": "Ivy Stone", "plan": "gold", "address": {"city": "Lyon"}},
        **processed,
    )
    # Neither an event still waiting nor one that failed set anything.
    Event.objects.create(
        message_id="waiting",
        profile=ivy,
        timestamp="2026-03-05T09:00:00Z",
        traits={"plan": "tin", "phone": "1"},
        **stored,
    )
    Event.objects.create(
        message_id="failed",
        profile=other,
        timestamp="2026-03-05T09:00:00Z",
        traits={"firstName": "Ann"},
        processing_error="boom",
        **processed,
    )

    schema_editor = SimpleNamespace(
        connection=SimpleNamespace(vendor=vendor),
        execute=lambda sql: connection.cursor().execute(sql),
    )
    migration.times_fill(django_apps, schema_editor)

    newer = "2026-03-02T09:00:00.500000+00:00"
    assert Profile.objects.get(pk=ivy.pk).identify_times == {
        "first_name": newer,
        "last_name": newer,
        "city": newer,
        "region": newer,
        "country_code": newer,
        "plan": newer,
    }
    assert Profile.objects.get(pk=other.pk).identify_times == {}
