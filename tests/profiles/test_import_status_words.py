"""A status cell Bespoke cannot read is refused with the words it would accept.

The cell, not the row: the contact is imported with no consent from it.
"""

import pytest

from profiles.importing import contact_import_file
from profiles.importing.layouts import (
    STATUS_WORDS,
    blacklisted_read,
    opted_in_read,
    status_read,
)
from profiles.models import ConsentRecord, Profile, SubscriptionStatus

pytestmark = pytest.mark.django_db

STATUS_MESSAGE = (
    "Status: unknown status {!r}. Accepted (any case): subscribed, unsubscribed, "
    "cleaned, bounced, hard bounce, not subscribed, never subscribed, suppressed. "
    "The contact was imported without consent from this row."
)


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


def test_an_unknown_status_is_refused_naming_the_accepted_values():
    data = (
        b"Email,Status\n"
        b"pat@example.com,maybe later\n"
        b"kim@example.com,Yes\n"
        b"lee@example.com,1\n"
        b"ann@example.com,Never Subscribed\n"
    )

    contact_import = contact_import_file(filename="crm.csv", data=data)

    assert (contact_import.accepted, contact_import.rejected) == (4, 0)
    assert [r["reason"] for r in contact_import.rejections] == ["invalid_status"] * 3
    assert [r["column"] for r in contact_import.rejections] == ["Status"] * 3
    assert [r["message"] for r in contact_import.rejections] == [
        STATUS_MESSAGE.format("maybe later"),
        STATUS_MESSAGE.format("Yes"),
        STATUS_MESSAGE.format("1"),
    ]
    statuses = dict(Profile.objects.values_list("email", "subscription_status"))
    assert statuses == {
        "pat@example.com": SubscriptionStatus.NOT_SUBSCRIBED,
        "kim@example.com": SubscriptionStatus.NOT_SUBSCRIBED,
        "lee@example.com": SubscriptionStatus.NOT_SUBSCRIBED,
        "ann@example.com": SubscriptionStatus.NOT_SUBSCRIBED,
    }
    assert not ConsentRecord.objects.exclude(profile__email="ann@example.com").exists()


def test_an_unknown_yes_no_value_is_refused_naming_the_accepted_values():
    data = b"Email,Unsubscribed\npat@example.com,maybe\n"

    contact_import = contact_import_file(filename="crm.csv", data=data)

    assert contact_import.rejections[0]["message"] == (
        "Unsubscribed: unknown status 'maybe'. Accepted (any case): "
        "yes, no, true, false, 1, 0, y, n, or yes and no in another European "
        "language (ja, nein, oui, non, sí, tak, nie…). The contact was imported "
        "without consent from this row."
    )
    assert Profile.objects.get().subscription_status == (
        SubscriptionStatus.NOT_SUBSCRIBED
    )


@pytest.mark.parametrize("word", STATUS_WORDS)
def test_every_word_the_message_offers_is_read(word):
    status_read(word.upper())


@pytest.mark.parametrize(
    ("yes", "no"),
    [("tak", "nie"), ("ano", "ne"), ("igen", "nem"), ("kyllä", "ei"), ("da", "nu")],
)
def test_yes_and_no_are_read_in_the_rest_of_europes_languages_too(yes, no):
    assert opted_in_read(yes.upper()) == SubscriptionStatus.SUBSCRIBED
    assert opted_in_read(no) is None
    assert blacklisted_read(yes) == SubscriptionStatus.UNSUBSCRIBED
    assert blacklisted_read(f" {no.title()} ") == SubscriptionStatus.SUBSCRIBED


def test_blank_status_cells_are_named_once_in_the_report():
    rows = "".join(f"p{n}@example.com,\n" for n in range(12))
    data = f"Email,Status\nann@example.com,subscribed\n{rows}".encode()

    contact_import = contact_import_file(filename="crm.csv", data=data)

    (note,) = [n for n in contact_import.notes if n["kind"] == "status_blank"]
    assert note["count"] == 12
    assert note["records"] == list(range(2, 12))
    assert note["message"] == (
        "12 records left the Status cell blank (record 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 "
        "and more): their subscription was left as it was, and a new person among "
        "them has no consent on record, so no campaign mails them until they "
        "subscribe."
    )
    assert contact_import.accepted == 13
    assert Profile.objects.get(email="p3@example.com").subscription_status == (
        "not_subscribed"
    )


def test_an_unsubscribed_column_said_instead_is_no_blank_status():
    data = b"Email,Status,Unsubscribed\npat@example.com,,yes\nkim@example.com,,\n"

    contact_import = contact_import_file(filename="crm.csv", data=data)

    (note,) = [n for n in contact_import.notes if n["kind"] == "status_blank"]
    assert (note["count"], note["records"]) == (1, [2])
    assert note["message"].startswith("1 record left the Status cell blank (record 2)")


def test_a_file_without_a_status_column_has_no_blank_status_note():
    contact_import = contact_import_file(
        filename="crm.csv", data=b"Email,First name\npat@example.com,Pat\n"
    )

    assert [n for n in contact_import.notes if n["kind"] == "status_blank"] == []


@pytest.mark.django_db
def test_a_pending_status_imports_the_contact_without_consent_and_says_so():
    contact_import = contact_import_file(
        filename="pending.csv",
        data=b"Email,Status\npat@example.com,pending\nsam@example.com,subscribed\n",
    )

    assert contact_import.rejections == []
    pat = Profile.objects.get(email="pat@example.com")
    assert pat.subscription_status == SubscriptionStatus.NOT_SUBSCRIBED
    assert not pat.consent_records.exists()
    assert [note["message"] for note in contact_import.notes] == [
        "Record 1: Status 'pending' was not imported (not confirmed, so no consent "
        "yet: the contact has none)."
    ]


def test_yes_and_no_in_other_languages_are_read():
    data = b"Email,Abgemeldet\nja@example.com,ja\nnein@example.com,Nein\n"

    contact_import_file(filename="de.csv", data=data)

    statuses = dict(Profile.objects.values_list("email", "subscription_status"))
    assert statuses == {
        "ja@example.com": SubscriptionStatus.UNSUBSCRIBED,
        "nein@example.com": SubscriptionStatus.NOT_SUBSCRIBED,
    }


@pytest.mark.parametrize(
    ("header", "left", "stayed"),
    [
        ("Baja", "sí", "no"),
        ("Afgemeld", "WAAR", "ONWAAR"),
        ("Abgemeldet", "WAHR", "FALSCH"),
        ("Descadastrado", "sim", "na\u0303o"),  # não written as n, a, a tilde
    ],
)
def test_unsubscribed_columns_and_words_in_other_languages_are_read(
    header, left, stayed
):
    data = f"Email,{header}\nleft@example.com,{left}\nstayed@example.com,{stayed}\n"

    contact_import_file(filename="list.csv", data=data.encode())

    statuses = dict(Profile.objects.values_list("email", "subscription_status"))
    assert statuses == {
        "left@example.com": SubscriptionStatus.UNSUBSCRIBED,
        "stayed@example.com": SubscriptionStatus.NOT_SUBSCRIBED,
    }


def test_portuguese_dutch_and_decomposed_headers_fill_the_profile():
    data = (
        "Endereço de email,Nome,Sobrenome,Telefone,Cidade,Pais,Te\u0301le\u0301phone\n"
        "ana@example.com,Ana,Souza,+55 11 5555-0123,São Paulo,Brasil,\n"
    ).encode()

    contact_import_file(filename="pt.csv", data=data)

    ana = Profile.objects.get()
    assert (ana.first_name, ana.last_name, ana.phone, ana.city, ana.country_code) == (
        "Ana",
        "Souza",
        "+55 11 5555-0123",
        "São Paulo",
        "BR",
    )
    assert ana.traits == {}
