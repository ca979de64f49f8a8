"""One event the database refuses fails alone; it never holds up the events after it."""

import pytest
from django.db import DataError
from django.utils import timezone

from profiles import processing_chunk
from profiles.models import Event, Profile
from profiles.processing import events_process_pending

pytestmark = pytest.mark.django_db


def identify(message_id: str, user_id: str, traits: dict) -> Event:
    now = timezone.now()
    return Event.objects.create(
        message_id=message_id,
        type="identify",
        user_id=user_id,
        traits=traits,
        timestamp=now,
        received_at=now,
    )


def page(message_id: str, user_id: str) -> Event:
    now = timezone.now()
    return Event.objects.create(
        message_id=message_id,
        type="page",
        user_id=user_id,
        timestamp=now,
        received_at=now,
    )


@pytest.mark.parametrize("written", ["ßa", "ǆa", "D1", "Atlantis", "p"])
def test_a_country_that_is_no_two_letter_code_is_left_out(written):
    identify("m1", "u1", {"email": "kim@example.com", "address": {"country": written}})
    identify("m2", "u2", {"firstName": "Ana", "address": {"country": written}})
    page("m3", "u3")

    assert events_process_pending() == 3

    assert not Event.objects.exclude(processing_error="").exists()
    assert Profile.objects.get(email="kim@example.com").country_code == ""
    assert Profile.objects.get(first_name="Ana").country_code == ""


def test_a_country_code_is_kept_in_capitals():
    identify("m1", "u1", {"address": {"country": " pt "}})
    events_process_pending()
    assert Profile.objects.get().country_code == "PT"


def test_an_event_whose_write_the_database_refuses_fails_alone(monkeypatch):
    write = processing_chunk.profiles_identify_write

    def refusing(*, profiles):
        profiles = list(profiles)
        if any(profile.first_name == "Poison" for profile in profiles):
            raise DataError("value too long for type character varying(2)")
        return write(profiles=profiles)

    monkeypatch.setattr(processing_chunk, "profiles_identify_write", refusing)
    identify("before", "u1", {"firstName": "Ana"})
    identify("poison", "u2", {"firstName": "Poison"})
    identify("after", "u3", {"firstName": "Ben"})
    page("later", "u1")

    assert events_process_pending() == 4

    poison = Event.objects.get(message_id="poison")
    assert poison.processed_at is not None
    assert poison.processing_error.startswith("DataError: value too long")
    others = Event.objects.exclude(message_id="poison")
    assert all(event.processed_at for event in others)
    assert not others.exclude(processing_error="").exists()
    assert set(Profile.objects.values_list("first_name", flat=True)) >= {"Ana", "Ben"}
    assert events_process_pending() == 0


def test_a_fault_no_event_gets_past_fails_none_of_them(monkeypatch):
    write = processing_chunk.profiles_identify_write

    def broken(*, profiles):
        raise DataError("relation is broken for everyone")

    monkeypatch.setattr(processing_chunk, "profiles_identify_write", broken)
    identify("one", "u1", {"firstName": "Ana"})
    identify("two", "u2", {"firstName": "Ben"})

    with pytest.raises(DataError):
        events_process_pending()

    assert not Event.objects.filter(processed_at__isnull=False).exists()
    monkeypatch.setattr(processing_chunk, "profiles_identify_write", write)
    assert events_process_pending() == 2
    assert not Event.objects.exclude(processing_error="").exists()
