"""Which columns an import reads as email consent, in any language, by name and values."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from profiles.importing import contact_import_file, contacts_preview
from profiles.models import (
    ConsentRecord,
    ContactImport,
    Profile,
    SubscriptionStatus,
    TraitDefinition,
    TraitType,
)
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def status_of(email: str) -> str:
    return Profile.objects.get(email=email).subscription_status


# By name ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "yes", "no"),
    [
        ("Zgoda", "tak", "nie"),
        ("Einwilligung", "ja", "nein"),
        ("Consentement", "oui", "non"),
        ("Consenso marketing", "sì", "no"),
        ("Abonné", "Oui", "Non"),
        ("Toestemming", "ja", "nee"),
        ("Samtycke", "ja", "nej"),
    ],
)
def test_a_consent_column_named_in_another_language_is_read_as_consent(header, yes, no):
    data = f"Email,Name,{header}\nada@example.com,Ada,{yes}\nbo@example.com,Bo,{no}\n"

    assert contacts_preview(data.encode()).column_map[header] == "subscribed"
    contact_import = contact_import_file(filename="list.csv", data=data.encode())

    assert status_of("ada@example.com") == SubscriptionStatus.SUBSCRIBED
    # "No" on a list that asked says nothing of a consent given elsewhere.
    assert status_of("bo@example.com") == SubscriptionStatus.NOT_SUBSCRIBED
    (record,) = ConsentRecord.objects.all()
    assert record.source == "import:file"
    assert record.evidence["status"] == "subscribed"
    assert not [n for n in contact_import.notes if n["kind"] == "no_consent_column"]


# A newsletter's yes/no, by its values ----------------------------------------------


NEWSLETTER = (
    "Email;Prénom;Newsletter\n"
    "chloe@example.fr;Chloé;oui\n"
    "luc@example.fr;Luc;non\n"
    "eve@example.fr;Ève;\n"
    "remi@example.fr;Rémi;OUI\n"
)


def test_a_newsletter_column_of_yes_and_no_is_read_as_consent_on_every_path():
    data = NEWSLETTER.encode()

    preview = contacts_preview(data)
    contact_import = contact_import_file(filename="clients.csv", data=data)

    assert preview.column_map["Newsletter"] == "subscribed"
    assert preview.values[2] == ("oui", "non", "OUI")
    assert contact_import.status == "done"
    assert status_of("chloe@example.fr") == SubscriptionStatus.SUBSCRIBED
    assert status_of("remi@example.fr") == SubscriptionStatus.SUBSCRIBED
    assert status_of("luc@example.fr") == SubscriptionStatus.NOT_SUBSCRIBED
    assert status_of("eve@example.fr") == SubscriptionStatus.NOT_SUBSCRIBED
    assert "newsletter" not in Profile.objects.get(email="chloe@example.fr").traits


def test_a_newsletter_column_naming_lists_stays_a_trait():
    data = b"Email,Newsletter\nada@example.com,Weekly\nbo@example.com,yes\n"

    contact_import_file(filename="lists.csv", data=data)

    ada = Profile.objects.get(email="ada@example.com")
    assert ada.traits["newsletter"] == "Weekly"
    assert ada.subscription_status == SubscriptionStatus.NOT_SUBSCRIBED
    assert not ConsentRecord.objects.exists()


def test_a_newsletter_column_beside_a_status_column_stays_a_trait():
    data = b"Email,Status,Newsletter\nada@example.com,unsubscribed,yes\n"

    preview = contacts_preview(data)

    assert preview.column_map == {
        "Email": "email",
        "Status": "status",
        "Newsletter": "traits.newsletter",
    }


def test_a_declared_newsletter_trait_keeps_its_column():
    TraitDefinition.objects.create(name="newsletter", type=TraitType.BOOLEAN)
    data = b"Email,Newsletter\nada@example.com,yes\n"

    contact_import_file(filename="declared.csv", data=data)

    ada = Profile.objects.get(email="ada@example.com")
    assert ada.traits["newsletter"] is True
    assert not ConsentRecord.objects.exists()


def test_a_newsletter_column_read_past_the_sampled_records_keeps_its_reading():
    # The default map reads the first records; a later "maybe" is a row's problem,
    # named in the report, and the other rows keep their consent.
    rows = "".join(f"p{n}@example.com,yes\n" for n in range(25))
    data = f"Email,Newsletter\n{rows}late@example.com,maybe\n".encode()

    contact_import = contact_import_file(filename="long.csv", data=data)

    assert status_of("p24@example.com") == SubscriptionStatus.SUBSCRIBED
    assert status_of("late@example.com") == SubscriptionStatus.NOT_SUBSCRIBED
    (note,) = contact_import.notes
    assert note["message"] == (
        "Record 26: Newsletter 'maybe' was not imported (not yes, no or a status: "
        "no consent)."
    )


# The mapping page ------------------------------------------------------------------


def upload(client, name: str, data: bytes) -> str:
    file = SimpleUploadedFile(name, data, content_type="text/csv")
    return client.post(reverse("import_list"), {"file": file}).url


def test_the_mapping_page_says_why_a_newsletter_column_is_read_as_consent(signed_in):
    url = upload(signed_in, "clients.csv", NEWSLETTER.encode())

    page = signed_in.get(url).content.decode()

    assert (
        "data-newsletter-consent>“Newsletter” holds yes and no alone (oui, non, OUI)"
        in page
    )
    # The values the page shows beside the column.
    assert "oui · non · OUI" in page


def test_a_consent_value_past_the_first_sample_asks_to_start_anyway(signed_in):
    data = (
        b"Email,Subscribed\nada@example.com,yes\nbo@example.com,no\n"
        b"cy@example.com,Lead\n"
    )
    url = upload(signed_in, "crm.csv", data)
    form = signed_in.get(url).context["form"]
    defaults = {name: form[name].initial or "" for name in form.fields}

    refused = signed_in.post(url, defaults)

    page = refused.content.decode()
    assert "data-unread-status>“Subscribed” is read as email consent" in page
    assert "values such as “Lead”" in page
    assert ContactImport.objects.get().queued_at is None


# A change-time column, by its name and values ---------------------------------------

CRM_TWICE = (
    b"Email,City,Status,Last Modified\n"
    b"ines@example.com,Porto,unsubscribed,2025-03-31 09:00:00\n"
    b"INES@example.com,Lisboa,subscribed,2024-02-01 09:00:00\n"
)


def test_a_column_named_as_a_change_time_orders_an_addresss_rows_by_default():
    preview = contacts_preview(CRM_TWICE)
    contact_import = contact_import_file(filename="crm.csv", data=CRM_TWICE)

    assert preview.column_map["Last Modified"] == "changed_at"
    ines = Profile.objects.get()
    # The row changed last (March 2025), though higher in the file, wins.
    assert (ines.city, ines.subscription_status) == (
        "Porto",
        SubscriptionStatus.UNSUBSCRIBED,
    )
    assert "last_modified" not in ines.traits
    assert not [n for n in contact_import.notes if n["kind"] == "changed_at_unread"]


@pytest.mark.parametrize(
    "values",
    [("soon", "2025-01-01"), ("v2", "v3"), ("",)],
)
def test_a_change_time_column_holding_no_times_stays_a_trait(values):
    rows = "".join(f"p{n}@example.com,{value}\n" for n, value in enumerate(values))
    data = f"Email,Updated\n{rows}".encode()

    assert contacts_preview(data).column_map["Updated"] == "traits.updated"


def test_a_change_time_column_of_a_layout_with_its_own_stays_as_the_layout_reads_it():
    # Brevo's MODIFIED_TIME is its change time; a "Last Updated" beside it is a trait.
    data = (
        b"EMAIL;EMAIL_BLACKLISTED;MODIFIED_TIME;Last Updated\n"
        b"anna@example.de;No;2025-02-01 09:00:00;2025-02-02 09:00:00\n"
    )

    column_map = contacts_preview(data).column_map

    assert column_map["Last Updated"] == "traits.last_updated"


def test_the_mapping_page_says_a_column_is_read_as_the_change_time(signed_in):
    url = upload(signed_in, "crm.csv", CRM_TWICE)

    page = signed_in.get(url).content.decode()

    assert (
        "data-change-time>“Last Modified” is read as the time each row last changed"
        in page
    )


# What a consent record keeps of the cell it was read from -------------------------


@pytest.mark.parametrize(
    ("header", "cell", "status"),
    [
        ("Newsletter", "oui", SubscriptionStatus.SUBSCRIBED),
        ("Einwilligung", "JA", SubscriptionStatus.SUBSCRIBED),
        ("Abgemeldet", "ja", SubscriptionStatus.UNSUBSCRIBED),
        ("Status", "Unsubscribed", SubscriptionStatus.UNSUBSCRIBED),
    ],
)
def test_a_consent_record_names_the_column_and_the_word_it_was_read_from(
    header, cell, status
):
    data = f"Email,{header}\nclaire@example.fr,{cell}\n".encode()

    contact_import_file(filename="list.csv", data=data)

    (record,) = ConsentRecord.objects.all()
    assert record.status == status
    assert (record.evidence["consent_column"], record.evidence["consent_cell"]) == (
        header,
        cell,
    )


def test_a_withdrawal_beside_a_status_names_the_column_that_withdrew():
    data = b"Email,Status,Unsubscribed\nclaire@example.fr,subscribed,yes\n"

    contact_import_file(filename="list.csv", data=data)

    (record,) = ConsentRecord.objects.all()
    assert record.status == SubscriptionStatus.UNSUBSCRIBED
    assert record.evidence["consent_column"] == "Unsubscribed"
    assert record.evidence["consent_cell"] == "yes"


def test_a_mailchimp_export_states_its_status_and_names_no_column(load_fixture):
    data = load_fixture("mailchimp/subscribed_members_export.csv")

    contact_import_file(filename="subscribed_members_export.csv", data=data)

    evidence = ConsentRecord.objects.first().evidence
    assert "consent_column" not in evidence
    assert evidence["layout"] == "mailchimp_subscribed"


def test_an_older_withdrawal_in_the_same_file_is_not_lifted_by_its_newer_subscription():
    # A list never subscribes again someone who left, even where its own older row
    # says they left: its newer "subscribed" is no consent Bespoke can prove.
    data = (
        b"Email,Status,Last changed\n"
        b"zed@example.com,unsubscribed,2024-06-01\n"
        b"ZED@example.com,subscribed,2025-01-10\n"
    )

    contact_import = contact_import_file(filename="crm.csv", data=data)

    assert status_of("zed@example.com") == SubscriptionStatus.UNSUBSCRIBED
    (kept,) = [n for n in contact_import.notes if n["kind"] == "kept_status"]
    assert "never subscribes again someone who left" in kept["message"]


def test_the_mapping_page_marks_brevos_change_time_as_read_for_consent(signed_in):
    data = (
        b"EMAIL;EMAIL_BLACKLISTED;MODIFIED_TIME\n"
        b"anna@example.de;No;2025-02-01 09:00:00\n"
    )
    url = upload(signed_in, "brevo.csv", data)

    page = signed_in.get(url).content.decode()

    assert page.count("data-consent-time") == 1


# The newest row of an address says no ---------------------------------------------


def test_an_addresss_newest_no_leaves_its_older_subscriptions_out():
    data = (
        b"Email,Newsletter,Last Modified\n"
        b"marie@example.fr,yes,2025-01-12 09:00\n"
        b"MARIE@example.fr,no,2025-03-31 09:00\n"
        b"remi@example.fr,no,2024-01-01 09:00\n"
        b"REMI@example.fr,yes,2025-01-01 09:00\n"
    )

    contact_import = contact_import_file(filename="crm.csv", data=data)

    assert status_of("marie@example.fr") == SubscriptionStatus.NOT_SUBSCRIBED
    assert status_of("remi@example.fr") == SubscriptionStatus.SUBSCRIBED
    marie_note = next(
        n for n in contact_import.notes if n["email"] == "marie@example.fr"
    )
    assert marie_note["message"].endswith(
        "The newest says no to email: the subscription of record 1 is older, and is "
        "not recorded."
    )


def test_an_addresss_newest_no_keeps_an_older_withdrawal():
    data = (
        b"Email,Status,Subscribed\nann@example.com,unsubscribed,\nANN@example.com,,no\n"
    )

    contact_import_file(filename="crm.csv", data=data)

    assert status_of("ann@example.com") == SubscriptionStatus.UNSUBSCRIBED


# What the import leaves its profiles with ------------------------------------------


def test_an_import_counts_the_status_its_profiles_hold_after_it(signed_in):
    ProfileFactory(email="left@example.com", subscription_status="unsubscribed")
    data = (
        b"Email,Status\nann@example.com,subscribed\nbo@example.com,subscribed\n"
        b"left@example.com,subscribed\ncy@example.com,cleaned\ndi@example.com,\n"
    )

    contact_import = contact_import_file(filename="crm.csv", data=data)

    # A list never subscribes again someone who left: left@ stays unsubscribed.
    assert contact_import.status_counts == {
        "subscribed": 2,
        "unsubscribed": 1,
        "cleaned": 1,
        "not_subscribed": 1,
    }
    page = signed_in.get(
        reverse("import_detail", kwargs={"pk": contact_import.pk})
    ).content.decode()
    assert (
        "after it: 2 subscribed, 1 unsubscribed, 1 cleaned (address bounced), "
        "1 never subscribed." in page
    )


def test_a_large_import_counts_the_statuses_as_a_small_one():
    # Past COPY_MIN_ROWS the rows are written by COPY, in batches.
    from profiles.importing.runs import COPY_MIN_ROWS

    rows = "".join(
        f"p{n}@example.com,{'subscribed' if n % 3 else 'unsubscribed'}\n"
        for n in range(COPY_MIN_ROWS + 10)
    )

    contact_import = contact_import_file(
        filename="big.csv", data=f"Email,Status\n{rows}".encode()
    )

    total = COPY_MIN_ROWS + 10
    left = len(range(0, total, 3))
    assert contact_import.status_counts == {
        "subscribed": total - left,
        "unsubscribed": left,
    }


def test_a_status_and_an_opt_in_column_that_disagree_are_noted():
    data = (
        b"Email,Status,Accepts Email Marketing\n"
        b"noah@example.com,subscribed,no\n"
        b"emma@example.com,subscribed,yes\n"
    )

    contact_import = contact_import_file(filename="crm.csv", data=data)

    assert status_of("noah@example.com") == SubscriptionStatus.SUBSCRIBED
    (note,) = [
        n for n in contact_import.notes if n["kind"] == "consent_columns_disagree"
    ]
    assert note["message"] == (
        "Record 1: Status says subscribed but Accepts Email Marketing says 'no'; the "
        "subscription is recorded, as the status column says. If the file's status "
        "is not to be trusted, map it to a trait."
    )


def test_the_mapping_page_explains_a_newsletter_column_named_with_yes_no(signed_in):
    data = b"Email,Newsletter (yes/no)\nada@example.com,yes\nbo@example.com,no\n"
    url = upload(signed_in, "list.csv", data)

    page = signed_in.get(url).content.decode()

    assert "data-newsletter-consent>“Newsletter (yes/no)” holds yes and no" in page
