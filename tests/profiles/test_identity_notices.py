"""What an identify or alias asked for and did not get is reported, not only logged."""

import pytest

from profiles.models import Profile, RejectedEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def send(send_processed):
    return send_processed


def notices() -> list[tuple[str, str]]:
    return list(RejectedEvent.objects.order_by("id").values_list("code", "message"))


@pytest.mark.parametrize("device", [{}, {"anonymousId": "x-one"}])
def test_a_known_person_with_a_new_address_keeps_the_old_one_and_it_is_said(
    send, device
):
    send(
        "/v1/identify",
        {"userId": "u-1", **device, "traits": {"email": "one@example.com"}},
    )
    send(
        "/v1/identify",
        {"userId": "u-1", **device, "traits": {"email": "new@example.com"}},
    )

    assert Profile.objects.get().email == "one@example.com"
    assert notices() == [
        (
            "email_not_changed",
            "The identify names new@example.com, but this person's profile has "
            "one@example.com: an identify does not change a known address, so "
            "new@example.com was not stored.",
        )
    ]


def test_an_address_another_user_holds_is_not_given_and_it_is_said(send):
    send("/v1/identify", {"userId": "u-2", "traits": {"email": "two@example.com"}})
    send("/v1/identify", {"userId": "u-3", "traits": {"email": "two@example.com"}})

    assert Profile.objects.filter(email="two@example.com").count() == 1
    assert [code for code, _ in notices()] == ["email_taken"]
    assert "two@example.com belongs to another person's profile" in notices()[0][1]


def test_an_alias_of_two_people_with_addresses_is_refused_and_it_is_said(send):
    send("/v1/identify", {"userId": "u-4", "traits": {"email": "four@example.com"}})
    send("/v1/identify", {"userId": "u-5", "traits": {"email": "five@example.com"}})
    send("/v1/alias", {"userId": "u-5", "previousId": "u-4"})

    assert Profile.objects.count() == 2
    assert [code for code, _ in notices()] == ["merge_refused"]
    assert "both profiles have an email address" in notices()[0][1]


def test_the_usual_identify_and_a_repeat_report_nothing(send):
    send("/v1/identify", {"userId": "u-6", "traits": {"email": "Six@Example.com"}})
    send("/v1/identify", {"userId": "u-6", "traits": {"email": "six@example.com"}})

    assert notices() == []


def test_a_device_of_another_person_with_an_address_is_not_merged_and_it_is_said(send):
    # A browser that identified as one address, then signs in as someone who has
    # another: the two stay apart, and the refusal is on the sources page.
    send("/v1/track", {"anonymousId": "anon-x", "event": "Product Viewed"})
    send(
        "/v1/identify", {"anonymousId": "anon-x", "traits": {"email": "p@example.com"}}
    )
    send("/v1/identify", {"userId": "u-7", "traits": {"email": "a@example.com"}})
    send("/v1/identify", {"userId": "u-7", "anonymousId": "anon-x"})

    assert Profile.objects.count() == 2
    assert [code for code, _ in notices()] == ["merge_refused"]
    assert "both profiles have an email address" in notices()[0][1]


def test_someone_signing_in_on_a_shared_browser_gets_a_profile_of_their_own(send):
    # Dora used the browser first; Ed signs in on it with his own address.
    send(
        "/v1/identify",
        {"anonymousId": "shared", "traits": {"email": "dora@example.com"}},
    )
    send("/v1/track", {"anonymousId": "shared", "event": "Product Viewed"})
    send(
        "/v1/identify",
        {
            "anonymousId": "shared",
            "userId": "u-ed",
            "traits": {"email": "ed@example.com", "firstName": "Ed"},
        },
    )
    send(
        "/v1/track",
        {"anonymousId": "shared", "userId": "u-ed", "event": "Checkout Started"},
    )

    dora = Profile.objects.get(email="dora@example.com")
    ed = Profile.objects.get(email="ed@example.com")
    assert dora.first_name == ""
    assert ed.first_name == "Ed"
    assert list(ed.identities.values_list("value", flat=True)) == ["u-ed"]
    assert list(dora.events.values_list("event", flat=True).order_by("id")) == [
        "",
        "Product Viewed",
    ]
    assert list(ed.events.values_list("event", flat=True).order_by("id")) == [
        "",
        "Checkout Started",
    ]
    # Said once, for the identify: not for every event the device sends after.
    assert [code for code, _ in notices()] == ["merge_refused"]


def test_a_shared_browser_in_one_batch_keeps_the_two_people_apart(send):
    items = [
        {"type": "identify", "traits": {"email": "dora@example.com"}},
        {"type": "track", "event": "Product Viewed"},
        {
            "type": "identify",
            "userId": "u-ed",
            "traits": {"email": "ed@example.com", "firstName": "Ed"},
        },
        {"type": "track", "userId": "u-ed", "event": "Checkout Started"},
    ]
    batch = [
        {**item, "anonymousId": "shared", "messageId": f"m-{n}"}
        for n, item in enumerate(items)
    ]

    send("/v1/batch", {"batch": batch})

    ed = Profile.objects.get(email="ed@example.com")
    assert ed.first_name == "Ed"
    assert Profile.objects.get(email="dora@example.com").first_name == ""
    assert list(ed.events.values_list("message_id", flat=True).order_by("id")) == [
        "m-2",
        "m-3",
    ]


def test_a_merge_keeps_the_trait_value_sent_last(send):
    # Pia browses and gives her address, her account says "new" later, then the
    # two ids are joined: the value sent last wins, whichever profile is kept.
    sent = [
        {"anonymousId": "x-1", "traits": {"email": "pia@example.com", "plan": "old"}},
        {"userId": "u-pia", "traits": {"plan": "new", "colour": "blue"}},
        {"userId": "u-pia", "anonymousId": "x-1"},
    ]
    for minute, identify in enumerate(sent):
        at = f"2026-03-01T11:0{minute}:00Z"
        send("/v1/identify", {**identify, "timestamp": at, "sentAt": at})

    pia = Profile.objects.get()
    assert pia.email == "pia@example.com"
    assert (pia.traits["plan"], pia.traits["colour"]) == ("new", "blue")


def test_a_merge_in_one_batch_keeps_the_trait_value_sent_last(send):
    items = [
        {"anonymousId": "x-1", "traits": {"email": "pia@example.com", "plan": "old"}},
        {"userId": "u-pia", "traits": {"plan": "new"}},
        {"userId": "u-pia", "anonymousId": "x-1"},
    ]
    batch = [
        {
            **item,
            "type": "identify",
            "messageId": f"m-{n}",
            "timestamp": f"2026-03-01T11:0{n}:00Z",
        }
        for n, item in enumerate(items)
    ]

    send("/v1/batch", {"batch": batch})

    assert Profile.objects.get().traits["plan"] == "new"


def test_an_identify_with_a_new_address_and_no_state_clears_the_old_region(send):
    springfield = {"city": "Springfield", "state": "IL", "country": "US"}
    send("/v1/identify", {"userId": "u-r", "traits": {"address": springfield}})
    send(
        "/v1/identify",
        {"userId": "u-r", "traits": {"address": {"city": "Lyon", "country": "FR"}}},
    )
    send("/v1/identify", {"userId": "u-r", "traits": {"firstName": "Rae"}})

    rae = Profile.objects.get()
    assert (rae.city, rae.region, rae.country_code) == ("Lyon", "", "FR")
    assert notices() == []


def test_a_country_bespoke_cannot_read_is_said_and_a_move_clears_the_old_one(send):
    springfield = {"city": "Springfield", "state": "IL", "country": "US"}
    send("/v1/identify", {"userId": "u-p", "traits": {"address": springfield}})
    send(
        "/v1/identify",
        {
            "userId": "u-p",
            "traits": {"address": {"city": "Wien", "country": "Ruritania"}},
        },
    )

    paul = Profile.objects.get()
    assert (paul.city, paul.region, paul.country_code) == ("Wien", "", "")
    assert [code for code, _ in notices()] == ["trait_invalid:unknown_country"]

    # The same city with the country written in its own language: read, and kept.
    send(
        "/v1/identify",
        {
            "userId": "u-p",
            "traits": {"address": {"city": "Wien", "country": "Österreich"}},
        },
    )
    send(
        "/v1/identify",
        {"userId": "u-p", "traits": {"address": {"city": "Wien", "country": "Vulcan"}}},
    )
    paul.refresh_from_db()
    assert paul.country_code == "AT"
