"""An identify older than what a profile holds leaves it be, in any processing order."""

import importlib
from types import SimpleNamespace

import pytest
import time_machine
from django.apps import apps as django_apps
from django.db import connection

from profiles.importing import contact_import_file, runs
from profiles.models import (
    Event,
    IdentityKind,
    Profile,
    ProfileIdentity,
    ProfileMerge,
    RejectedEvent,
)
from profiles.processing_identities import profile_merge
from profiles.value_times import FLOOR
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def send(send_processed):
    return send_processed


def profile_of(user_id: str) -> Profile:
    return ProfileIdentity.objects.get(kind=IdentityKind.USER_ID, value=user_id).profile


def places_sent(send, prefix: str, calls: list, order: list[int]) -> Profile:
    """Send each (time, address) identify in this order as one user; return them."""
    user = prefix + "".join(map(str, order))
    for number in order:
        at, address = calls[number]
        send(
            "/v1/identify",
            {"userId": user, "timestamp": at, "traits": {"address": address}},
        )
    return profile_of(user)


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
    assert ivy.value_times["plan"] == "2026-03-02T09:00:00.000000+00:00"
    assert ivy.value_times["colour"] == "2026-03-01T09:00:00.000000+00:00"


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


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "orm"])
def test_an_import_dates_what_it_changes_by_when_it_ran(send, monkeypatch, copy):
    # given a name and plan an identify set in March, then in April a file that
    # changes the name only
    monkeypatch.setattr(runs, "COPY_MIN_ROWS", 0 if copy else 10**9)
    send(
        "/v1/identify",
        {
            **NEWER,
            "traits": {"email": "ivy@example.com", "firstName": "Ivy", "plan": "a"},
        },
    )
    data = b"Email,First Name,plan\nivy@example.com,Imported,a\n"
    with time_machine.travel("2026-04-01T00:00:00Z", tick=False):
        contact_import_file(filename="crm.csv", data=data)
    ivy = Profile.objects.get()
    assert ivy.first_name == "Imported"
    assert ivy.value_times == {
        "plan": "2026-03-02T09:00:00.000000+00:00",
        FLOOR: "2026-04-01T00:00:00.000000+00:00",
    }

    # when calls older than the import are processed, then one said after it
    send("/v1/identify", {**OLDER, "traits": {"firstName": "Ivy-Old", "plan": "b"}})
    ivy.refresh_from_db()
    assert (ivy.first_name, ivy.traits["plan"]) == ("Imported", "a")
    later = {"userId": "u-ivy", "timestamp": "2026-05-01T00:00:00Z"}
    send("/v1/identify", {**later, "traits": {"firstName": "Ivy-New", "plan": "c"}})

    # then only the later one replaces what the import and the identify said
    ivy.refresh_from_db()
    assert (ivy.first_name, ivy.traits["plan"]) == ("Ivy-New", "c")


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "orm"])
def test_a_new_profile_an_import_makes_is_dated_by_the_import(send, monkeypatch, copy):
    monkeypatch.setattr(runs, "COPY_MIN_ROWS", 0 if copy else 10**9)
    data = b"Email,First Name\nivy@example.com,Ivy\nbare@example.com,\n"
    with time_machine.travel("2026-04-01T00:00:00Z", tick=False):
        contact_import_file(filename="crm.csv", data=data)

    times = dict(Profile.objects.values_list("email", "value_times"))
    assert times == {
        "ivy@example.com": {FLOOR: "2026-04-01T00:00:00.000000+00:00"},
        "bare@example.com": {},
    }
    send(
        "/v1/identify",
        {**OLDER, "traits": {"email": "ivy@example.com", "firstName": "Ivy-Old"}},
    )
    assert Profile.objects.get(email="ivy@example.com").first_name == "Ivy"


def test_a_newest_call_naming_part_of_an_address_keeps_the_rest_in_any_order(send):
    graz = {"timestamp": "2025-01-01T00:00:00Z", "city": "Graz", "state": "Styria"}
    vienna = {"timestamp": "2025-02-01T00:00:00Z", "city": "Vienna", "state": "Wien"}
    country = {"timestamp": "2025-03-01T00:00:00Z", "country": "AT"}
    calls = {"graz": graz, "vienna": vienna, "country": country}
    for order in (
        ["graz", "vienna", "country"],
        ["graz", "country", "vienna"],
        ["country", "vienna", "graz"],
        ["country", "graz", "vienna"],
    ):
        user = "-".join(order)
        for name in order:
            address = {k: v for k, v in calls[name].items() if k != "timestamp"}
            send(
                "/v1/identify",
                {
                    "userId": user,
                    "timestamp": calls[name]["timestamp"],
                    "traits": {"address": {"country": "AT", **address}},
                },
            )
        found = profile_of(user)
        assert (found.city, found.region, found.country_code) == (
            "Vienna",
            "Wien",
            "AT",
        ), order


def test_a_state_alone_said_last_stands_in_any_order(send):
    calls = [
        ("2025-01-01T00:00:00Z", {"city": "Graz", "state": "Styria", "country": "AT"}),
        ("2025-02-01T00:00:00Z", {"city": "Vienna", "country": "AT"}),
        ("2025-03-01T00:00:00Z", {"state": "Wien"}),
    ]
    for order in ([0, 1, 2], [0, 2, 1], [2, 0, 1], [2, 1, 0]):
        found = places_sent(send, "u", calls, order)
        assert (found.city, found.region) == ("Vienna", "Wien"), order


def test_a_merge_keeps_a_newer_address_whole(send):
    # The signed-in profile lives in Vienna, Wien; the browser was told Graz later,
    # with no state: Graz's region is not Wien.
    send(
        "/v1/identify",
        {
            "userId": "g1",
            "timestamp": "2025-01-01T00:00:00Z",
            "traits": {
                "email": "g@example.com",
                "address": {"city": "Vienna", "state": "Wien", "country": "AT"},
            },
        },
    )
    send(
        "/v1/identify",
        {
            "anonymousId": "ga1",
            "timestamp": "2025-02-01T00:00:00Z",
            "traits": {"address": {"city": "Graz", "country": "AT"}},
        },
    )
    send("/v1/identify", {"userId": "g1", "anonymousId": "ga1"})

    found = Profile.objects.get()
    assert (found.city, found.region, found.country_code) == ("Graz", "", "AT")


def test_a_merge_does_not_fill_a_region_cleared_later_with_an_older_one(send):
    def identify(who: dict, at: str, address: dict) -> None:
        body = {**who, "timestamp": at, "traits": {"address": address}}
        send("/v1/identify", body)

    kept = {"userId": "k1"}
    send("/v1/identify", {**kept, "traits": {"email": "k@example.com"}})
    identify(kept, "2025-01-01T00:00:00Z", {"city": "Graz", "state": "Styria"})
    identify(kept, "2025-03-01T00:00:00Z", {"city": "Vienna"})
    identify(
        {"anonymousId": "ka1"}, "2025-02-01T00:00:00Z", {"city": "Linz", "state": "OÖ"}
    )
    send("/v1/identify", {"userId": "k1", "anonymousId": "ka1"})

    found = Profile.objects.get()
    assert (found.city, found.region) == ("Vienna", "")


def test_a_clock_ahead_of_bespokes_does_not_outrank_what_comes_after(send):
    # An identify stamped 12 hours ahead, with no sentAt to correct it, counts as
    # said when it arrived: the next call replaces its name.
    with time_machine.travel("2026-03-02T09:00:00Z", tick=False):
        send(
            "/v1/identify",
            {
                "userId": "u-c",
                "timestamp": "2026-03-02T21:00:00Z",
                "traits": {"firstName": "Ahead"},
            },
        )
    with time_machine.travel("2026-03-02T09:05:00Z", tick=False):
        send("/v1/identify", {"userId": "u-c", "traits": {"firstName": "Next"}})

    assert Profile.objects.get().first_name == "Next"


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
    assert ivy.value_times["first_name"] == "2026-03-02T09:00:00.000000+00:00"
    assert ivy.value_times["last_name"] == "2026-03-01T09:00:00.000000+00:00"

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
    migration = importlib.import_module("profiles.migrations.0031_value_times")
    ivy = ProfileFactory(
        first_name="Ivy",
        last_name="Stone",
        phone="",
        city="Lyon",
        traits={"plan": "gold", "team": "red"},
    )
    other = ProfileFactory(first_name="Ann", traits={})
    stored = {"received_at": "2026-03-03T00:00:00Z", "type": "identify"}
    processed = {**stored, "processed_at": "2026-03-03T00:00:01Z"}
    identifies = [
        # what the profile holds no longer (a newer call changed it)
        ("2026-03-01T09:00:00Z", {"firstName": "Ivy-Old", "plan": "bronze"}),
        # what it holds: the name, the plan and the place
        (
            "2026-03-02T09:00:00.5Z",
            {"name": "Ivy Stone", "plan": "gold", "address": {"city": "LYON "}},
        ),
        # a value sent later but refused (a rule broken): the profile kept "red"
        ("2026-03-04T09:00:00Z", {"team": "platinum", "phone": "1"}),
        ("2026-02-01T09:00:00Z", {"team": "red"}),
        # stamped ahead of its arrival: said when it arrived
        ("2026-03-09T00:00:00Z", {"lastName": "Stone"}),
    ]
    for number, (at, traits) in enumerate(identifies):
        Event.objects.create(
            message_id=f"m-{number}",
            profile=ivy,
            timestamp=at,
            traits=traits,
            **processed,
        )
    # Neither an event still waiting nor one that failed set anything.
    Event.objects.create(
        message_id="waiting",
        profile=ivy,
        timestamp="2026-03-05T09:00:00Z",
        traits={"plan": "gold"},
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
    assert Profile.objects.get(pk=ivy.pk).value_times == {
        "first_name": newer,
        "last_name": "2026-03-03T00:00:00.000000+00:00",
        "city": newer,
        "region": newer,
        "plan": newer,
        "team": "2026-02-01T09:00:00.000000+00:00",
    }
    assert Profile.objects.get(pk=other.pk).value_times == {}


@pytest.mark.parametrize(
    ("kept_place", "merged_place", "result"),
    [
        # the kept profile knows a region and country, the other a city: one place
        (("", "QC", "CA"), ("Besançon", "", "FR"), ("Besançon", "", "FR")),
        # each knows another city: the kept one's place stays whole
        (("Lyon", "", ""), ("Paris", "IDF", "FR"), ("Lyon", "", "")),
        # one city, told apart by case: the blanks are filled
        (("Lyon", "", ""), ("LYON", "ARA", "FR"), ("Lyon", "ARA", "FR")),
    ],
)
def test_a_merge_takes_a_place_whole(kept_place, merged_place, result):
    fields = ("city", "region", "country_code")
    kept = ProfileFactory(
        email="f@example.com", **dict(zip(fields, kept_place, strict=True))
    )
    merged = Profile.objects.create(**dict(zip(fields, merged_place, strict=True)))

    profile_merge(first=kept, second=merged, reason="test", explicit=True)

    kept.refresh_from_db()
    assert (kept.city, kept.region, kept.country_code) == result


def test_a_city_named_again_without_a_state_speaks_for_the_region_in_any_order(send):
    calls = [
        ("2025-01-01T00:00:00Z", {"city": "Austin", "state": "TX"}),
        ("2025-02-01T00:00:00Z", {"city": "Paris", "state": "IDF"}),
        ("2025-03-01T00:00:00Z", {"city": "Austin"}),
    ]
    for order in ([0, 1, 2], [0, 2, 1], [2, 1, 0], [1, 2, 0]):
        found = places_sent(send, "a", calls, order)
        # Never Paris's region under Austin.
        assert found.city == "Austin", order
        assert found.region in ("", "TX"), order


def test_a_move_to_another_country_alone_clears_the_region_in_either_order(send):
    vienna = (
        "2025-01-01T00:00:00Z",
        {"city": "Vienna", "state": "Wien", "country": "AT"},
    )
    germany = ("2025-02-01T00:00:00Z", {"country": "DE"})
    known = ("2024-12-01T00:00:00Z", {"country": "AT"})
    for name, order in (
        ("in-time", [known, vienna, germany]),
        ("late", [known, germany, vienna]),
    ):
        for at, address in order:
            send(
                "/v1/identify",
                {"userId": name, "timestamp": at, "traits": {"address": address}},
            )
        found = profile_of(name)
        assert (found.city, found.region, found.country_code) == ("Vienna", "", "DE"), (
            name
        )


def test_new_people_with_an_address_are_made_without_the_careful_path(
    send, monkeypatch
):
    from profiles import processing_chunk
    from profiles.services import suppression_add

    def careful(*args, **kwargs):
        raise AssertionError("went the careful way")

    suppression_add(email_key="gone@example.com", reason="complaint", source="test")
    monkeypatch.setattr(processing_chunk, "event_apply", careful)
    batch = [
        {"type": "identify", "userId": "n-1", "traits": {"email": "New@Example.com"}},
        {"type": "identify", "userId": "n-2", "traits": {"email": "jörg@example.com"}},
        {"type": "identify", "userId": "n-3", "traits": {"email": "gone@example.com"}},
    ]

    send("/v1/batch", {"batch": batch})

    made = {p.email: p for p in Profile.objects.all()}
    assert set(made) == {"new@example.com", "jörg@example.com", "gone@example.com"}
    assert made["new@example.com"].email_display == "New@Example.com"
    assert profile_of("n-1") == made["new@example.com"]
    assert made["jörg@example.com"].traits == {"email_needs_smtputf8": True}
    assert made["gone@example.com"].suppressed_at is not None
    assert made["new@example.com"].suppressed_at is None


def test_two_new_people_naming_one_new_address_in_a_chunk_make_one_owner(send):
    batch = [
        {"type": "identify", "userId": "t-1", "traits": {"email": "one@example.com"}},
        {"type": "identify", "userId": "t-2", "traits": {"email": "one@example.com"}},
    ]

    send("/v1/batch", {"batch": batch})

    owner = Profile.objects.get(email="one@example.com")
    assert profile_of("t-1") == owner
    assert Profile.objects.count() == 2
    assert not Event.objects.exclude(processing_error="").exists()


def test_ids_of_an_imported_customer_join_their_profile_without_the_careful_path(
    send, monkeypatch
):
    from profiles import processing_chunk

    def careful(*args, **kwargs):
        raise AssertionError("went the careful way")

    customer = ProfileFactory(email="cus@example.com", first_name="Imported")
    taken = ProfileFactory(email="taken@example.com")
    ProfileIdentity.objects.create(
        profile=taken, kind=IdentityKind.USER_ID, value="someone-else"
    )
    monkeypatch.setattr(processing_chunk, "event_apply", careful)

    send(
        "/v1/identify",
        {
            "userId": "c-1",
            "anonymousId": "c-anon",
            "traits": {"email": "CUS@example.com", "plan": "gold"},
        },
    )

    assert profile_of("c-1") == customer
    customer.refresh_from_db()
    assert customer.traits["plan"] == "gold"
    assert ProfileIdentity.objects.get(value="c-anon").profile == customer

    # An address another userId holds still goes the careful way, which refuses it.
    monkeypatch.undo()
    send("/v1/identify", {"userId": "c-2", "traits": {"email": "taken@example.com"}})
    assert profile_of("c-2") != taken
    assert RejectedEvent.objects.filter(code="email_taken").exists()


def test_an_address_another_writer_takes_meanwhile_redoes_the_chunk_whole(
    send, monkeypatch
):
    from profiles import processing, processing_chunk

    # given a chunk that read nobody owning an address, which an import then gave
    # a profile of its own before the chunk wrote
    owner = ProfileFactory(email="race@example.com")
    real = processing_chunk._email_owners_load
    looks = []

    def stale_once(keys):
        looks.append(keys)
        found = real(keys)
        return dict.fromkeys(found) if len(looks) == 1 else found

    def one_by_one(*args, **kwargs):
        raise AssertionError("the chunk fell back to one event at a time")

    monkeypatch.setattr(processing_chunk, "_email_owners_load", stale_once)
    monkeypatch.setattr(processing, "_chunk_one_by_one", one_by_one)

    send("/v1/identify", {"userId": "r-1", "traits": {"email": "race@example.com"}})

    # then the chunk is done again, and the ids join the address's profile
    assert len(looks) >= 2
    assert profile_of("r-1") == owner
    assert Profile.objects.filter(email="race@example.com").count() == 1


def test_an_address_taken_meanwhile_on_the_careful_path_redoes_the_chunk(
    send, monkeypatch
):
    from profiles import processing_chunk, processing_identities

    # given two profiles an identify will join (so it goes the careful way), and
    # an address that a writer gave a profile after the chunk looked for it
    send(
        "/v1/batch",
        {
            "batch": [
                {"type": "track", "event": "Seen", "anonymousId": "ax"},
                {"type": "track", "event": "Seen", "userId": "uy"},
            ]
        },
    )
    owner = ProfileFactory(email="race@example.com")
    real_owners = processing_chunk._email_owners_load
    real_lookup = processing_identities.profile_by_email_key
    stale = {"owners": 1, "lookup": 1}

    def owners_once(keys):
        found = real_owners(keys)
        if stale["owners"]:
            stale["owners"] -= 1
            return dict.fromkeys(found)
        return found

    def lookup_once(key):
        if stale["lookup"]:
            stale["lookup"] -= 1
            return None
        return real_lookup(key)

    monkeypatch.setattr(processing_chunk, "_email_owners_load", owners_once)
    monkeypatch.setattr(processing_identities, "profile_by_email_key", lookup_once)

    send(
        "/v1/identify",
        {
            "userId": "uy",
            "anonymousId": "ax",
            "traits": {"email": "race@example.com", "plan": "gold"},
        },
    )

    # then the identify is applied, not failed: on the address's profile
    assert not Event.objects.exclude(processing_error="").exists()
    joined = profile_of("uy")
    assert joined.email == "race@example.com"
    assert joined.traits["plan"] == "gold"
    assert joined.pk == owner.pk or ProfileMerge.objects.exists()


def test_a_trait_named_like_the_floor_of_the_value_times_is_refused(send):
    send("/v1/identify", {"userId": "s-1", "traits": {"*": "x", "plan": "a"}})

    star = profile_of("s-1")
    assert star.traits == {"plan": "a"}
    assert FLOOR not in star.value_times
    assert RejectedEvent.objects.get().message == (
        "Trait *: is a name Bespoke keeps for itself, so it is not kept as a custom "
        "trait"
    )


def test_a_trait_holding_a_control_character_is_refused_on_every_path(send):
    from profiles.models import TraitDefinition

    TraitDefinition.objects.create(name="code", type="text")
    traits = {"note": "red\x1b[31m", "code": "A\u202eB", "memo": "line one\nline two"}
    send("/v1/identify", {"userId": "cc-1", "traits": traits})

    found = profile_of("cc-1")
    # A line break is text; an escape and a direction override are not.
    assert found.traits == {"memo": "line one\nline two"}
    assert sorted(RejectedEvent.objects.values_list("code", flat=True)) == [
        "trait_invalid:control_character",
        "trait_invalid:control_character",
    ]

    data = b"Email,note,memo\ncc@example.com,red\x1b[31m,fine\n"
    done = contact_import_file(filename="cc.csv", data=data)
    imported = Profile.objects.get(email="cc@example.com")
    assert imported.traits == {"memo": "fine"}
    assert any("control character U+001B" in n["message"] for n in done.notes)
