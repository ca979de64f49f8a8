"""The contact importer against the shared Mailchimp exports and hand-made files."""

import csv
import io
import json
import zipfile
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError

from profiles.importing import (
    contact_import_create,
    contact_import_file,
    contact_import_retry,
    contact_import_run,
    contact_import_run_stored,
    contact_import_summary,
    contact_import_upload_path,
    contacts_parse,
    contacts_tags_split,
    runs,
)
from profiles.importing.mapping import NO_CONSENT_COLUMN_NOTE, NO_RECORDS_NOTE
from profiles.models import (
    ConsentRecord,
    ContactImport,
    ImportStatus,
    Profile,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
    TraitDefinition,
    TraitType,
)
from profiles.services import suppression_hash
from profiles.tasks import contact_import_task
from tests.factories import ProfileFactory

SUBSCRIBED = "mailchimp/subscribed_members_export.csv"
UNSUBSCRIBED = "mailchimp/unsubscribed_members_export.csv"
CLEANED = "mailchimp/cleaned_members_export.csv"


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


@pytest.fixture
def import_fixture(load_fixture):
    def run(relative: str) -> ContactImport:
        return contact_import_file(
            filename=relative.rsplit("/", 1)[-1], data=load_fixture(relative)
        )

    return run


@pytest.fixture
def all_three(import_fixture):
    return [import_fixture(name) for name in (SUBSCRIBED, UNSUBSCRIBED, CLEANED)]


def profile(email: str) -> Profile:
    return Profile.objects.get(email=email)


def tag_names(email: str) -> list[str]:
    return list(profile(email).tags.order_by("id").values_list("name", flat=True))


def status_counts() -> dict[str, int]:
    return {
        status: Profile.objects.filter(subscription_status=status).count()
        for status in SubscriptionStatus.values
    }


# The subscribed export -----------------------------------------------------------


@pytest.mark.django_db
def test_the_subscribed_export_gives_34_profiles_from_40_records(import_fixture):
    contact_import = import_fixture(SUBSCRIBED)

    assert contact_import.status == ImportStatus.DONE
    assert contact_import.layout == "mailchimp_subscribed"
    assert contact_import.records == 40
    assert contact_import.accepted == 37
    assert contact_import.rejected == 3
    assert contact_import.duplicates_merged == 3
    assert contact_import.profiles_created == 34
    assert contact_import.profiles_updated == 0
    assert contact_import.finished_at is not None
    assert Profile.objects.count() == 34
    assert status_counts()["subscribed"] == 34


@pytest.mark.django_db
def test_it_reports_rejected_rows_by_record_and_starting_line(import_fixture):
    contact_import = import_fixture(SUBSCRIBED)

    rows = [
        (r["record"], r["line"], r["email"], r["reason"])
        for r in contact_import.rejections
    ]
    assert rows == [
        (34, 36, "not-an-email", "invalid_email"),
        (37, 39, "maria.garcia@@example.net", "invalid_email"),
        (40, 42, "", "missing_email"),
    ]
    assert contact_import.rejections[2]["message"] == "The Email Address cell is empty."
    assert "@-sign" in contact_import.rejections[0]["message"]


@pytest.mark.django_db
def test_it_matches_the_expected_rejections_and_merges(import_fixture, load_fixture):
    expected = load_fixture("mailchimp/expected_import_result.json", as_json=True)

    contact_import = import_fixture(SUBSCRIBED)

    rejected = [
        {key: r[key] for key in ("record", "email", "reason")}
        for r in contact_import.rejections
    ]
    assert rejected == expected["rejected_rows"]
    merges = {
        note["email"]: note["records"]
        for note in contact_import.notes
        if note["kind"] == "merged"
    }
    assert merges == {
        key: value["records"] for key, value in expected["merged"].items()
    }
    for email, values in expected["merged"].items():
        merged = profile(email)
        assert (merged.first_name, merged.last_name) == (
            values["first_name"],
            values["last_name"],
        )
        assert tag_names(email) == values["tags"]


@pytest.mark.django_db
def test_duplicates_take_the_newest_row_and_keep_older_non_blank_values(
    import_fixture,
):
    import_fixture(SUBSCRIBED)

    ana = profile("ana.souza@example.com")
    # Record 9 is older ("Ana Paula", no phone): the newer record 1 wins.
    assert ana.first_name == "Ana"
    assert ana.phone == "+55 11 5555-0123"
    assert ana.email_display == "ana.souza@example.com"
    assert ana.traits["mailchimp_last_changed_at"] == "2025-02-20T11:04:09+00:00"
    liam = profile("liam.oconnor@example.org")
    assert liam.email_display == "liam.oconnor@example.org"
    assert liam.last_name == "O'Connor"
    # Both of Chloé's rows stated a subscription at a different time: both are kept.
    assert list(
        profile("chloe.dubois@example.org")
        .consent_records.order_by("occurred_at")
        .values_list("occurred_at", flat=True)
    ) == [
        datetime(2024, 1, 5, 10, 1, tzinfo=UTC),
        datetime(2025, 3, 14, 17, 43, 55, tzinfo=UTC),
    ]
    assert profile("ana.souza@example.com").consent_records.count() == 1


@pytest.mark.django_db
def test_quoted_cells_tags_and_notes_survive_the_round_trip(import_fixture):
    import_fixture(SUBSCRIBED)

    assert tag_names("emma.davis@example.org") == [
        "VIP",
        "Expo 2024, Boston",
        "Newsletter",
    ]
    assert profile("olivia.brown@example.net").traits["notes"] == (
        "Met at Spring Expo 2024\nInterested in daypacks, asked about sizing"
    )
    assert profile("william.smith.jr@example.org").last_name == "Smith, Jr."
    assert profile("robert.jones@example.com").first_name == 'Robert "Bob"'
    kenji = profile("kenji.sato@example.net")
    assert (kenji.first_name, kenji.last_name) == ("健二", "佐藤")
    assert profile("lukasz.nowak@example.com").first_name == "Łukasz"


@pytest.mark.django_db
def test_mailchimp_columns_land_on_fields_and_typed_traits(import_fixture):
    import_fixture(SUBSCRIBED)

    priya = profile("priya.raman@example.com")
    assert priya.timezone == "Asia/Kolkata"
    assert priya.country_code == "IN"
    assert priya.region == "TN"
    assert priya.phone == "+91 44 5555 0100"
    assert priya.traits == {
        "birthday": "03/09",
        "member_rating": 5,
        "optin_at": "2024-02-14T04:30:00+00:00",
        "optin_ip": "198.51.100.201",
        "confirm_at": "2024-02-14T04:31:12+00:00",
        "confirm_ip": "198.51.100.201",
        "latitude": 13.0878,
        "longitude": 80.2785,
        "gmtoff": 5.5,
        "dstoff": 5.5,
        "mailchimp_last_changed_at": "2025-02-14T04:31:12+00:00",
        "mailchimp_leid": "104857612",
        "mailchimp_euid": "f2a3b4c5d6",
    }
    assert profile("arjun.shah@example.net").traits["gmtoff"] == 5.75
    assert profile("ethan.miller@example.org").traits["dstoff"] == -2.5


@pytest.mark.django_db
def test_a_row_without_names_or_geo_is_accepted_with_empty_fields(import_fixture):
    import_fixture(SUBSCRIBED)

    sam = profile("sam.taylor@example.com")
    assert (sam.first_name, sam.last_name, sam.timezone, sam.country_code) == (
        "",
        "",
        "",
        "",
    )
    assert sam.subscription_status == SubscriptionStatus.SUBSCRIBED
    assert "gmtoff" not in sam.traits


@pytest.mark.django_db
def test_idn_and_plus_addresses_are_their_own_profiles(import_fixture):
    import_fixture(SUBSCRIBED)

    kai = profile("kai.weber@bücher.example.com")
    assert kai.subscription_status == SubscriptionStatus.SUBSCRIBED
    news = profile("ben.okafor+news@example.net")
    assert news.subscription_status == SubscriptionStatus.SUBSCRIBED
    assert news.pk != profile("ben.okafor@example.net").pk
    assert tag_names("ben.okafor+news@example.net") == ["Newsletter"]


@pytest.mark.django_db
def test_subscribed_rows_record_consent_with_its_time_ip_and_evidence(
    import_fixture,
):
    import_fixture(SUBSCRIBED)

    record = profile("ana.souza@example.com").consent_records.get()
    assert record.status == SubscriptionStatus.SUBSCRIBED
    assert record.source == "import:mailchimp"
    assert record.occurred_at == datetime(2024, 9, 2, 18, 21, 40, tzinfo=UTC)
    assert record.ip_address == "203.0.113.24"
    assert "Mailchimp audience export" in record.wording
    assert record.evidence == {
        "file": "subscribed_members_export.csv",
        "import": ContactImport.objects.get().pk,
        "layout": "mailchimp_subscribed",
        "record": 1,
        "OPTIN_TIME": "2024-09-02 18:20:11",
        "OPTIN_IP": "203.0.113.24",
        "CONFIRM_TIME": "2024-09-02 18:21:40",
        "CONFIRM_IP": "203.0.113.24",
        "LAST_CHANGED": "2025-02-20 11:04:09",
        "LEID": "104857601",
        "EUID": "a1b2c3d4e5",
    }
    noah = profile("noah.wilson@example.com").consent_records.get()
    assert noah.ip_address == "2001:db8:85a3::8a2e:370:7334"
    bjork = profile("bjork.gudmundsdottir@example.net")
    assert bjork.subscription_changed_at == datetime(2024, 1, 15, 13, 30, tzinfo=UTC)


@pytest.mark.django_db
def test_naive_times_are_read_in_the_import_time_zone(settings, import_fixture):
    settings.BESPOKE_IMPORT_TIME_ZONE = "America/Sao_Paulo"

    import_fixture(SUBSCRIBED)

    record = profile("ana.souza@example.com").consent_records.get()
    assert record.occurred_at == datetime(2024, 9, 2, 21, 21, 40, tzinfo=UTC)


# All three exports ---------------------------------------------------------------


@pytest.mark.django_db
def test_all_three_exports_leave_44_profiles_by_status(all_three, load_fixture):
    expected = load_fixture("mailchimp/expected_import_result.json", as_json=True)

    assert [i.status for i in all_three] == [ImportStatus.DONE] * 3
    assert [i.layout for i in all_three] == [
        "mailchimp_subscribed",
        "mailchimp_unsubscribed",
        "mailchimp_cleaned",
    ]
    assert [i.records for i in all_three] == [40, 7, 4]
    assert [i.profiles_created for i in all_three] == [34, 6, 4]
    assert [i.profiles_updated for i in all_three] == [0, 1, 0]
    assert Profile.objects.count() == 44
    after = expected["after_all_three_files"]
    assert status_counts() == {
        "subscribed": after["subscribed"],
        "unsubscribed": after["unsubscribed"],
        "cleaned": after["cleaned"],
        "not_subscribed": 0,
    }
    assert sum(i.rejected for i in all_three) == after["rejected_rows"]
    for email, check in expected["spot_checks"].items():
        if "status" in check:
            assert profile(email).subscription_status == check["status"], email


@pytest.mark.django_db
def test_unsubscribed_rows_record_when_and_why(all_three):
    grace = profile("grace.lee@example.com")
    assert grace.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert grace.subscription_changed_at == datetime(
        2025, 1, 15, 10, 22, 31, tzinfo=UTC
    )
    paolo = profile("paolo.bianchi@example.net").consent_records.get()
    assert paolo.status == SubscriptionStatus.UNSUBSCRIBED
    assert paolo.evidence["UNSUB_REASON"] == "Other (fill in reason below)"
    assert paolo.evidence["UNSUB_REASON_OTHER"] == (
        "Too many emails, please, only once a month"
    )
    assert paolo.evidence["UNSUB_CAMPAIGN_TITLE"] == "February Newsletter"
    assert paolo.ip_address is None
    assert profile("yuki.tanaka@example.net").email_display == "Yuki.Tanaka@Example.net"


@pytest.mark.django_db
def test_cleaned_rows_put_the_address_on_the_suppression_list(all_three):
    mailbox = profile("mailbox.full@example.com")
    assert mailbox.subscription_status == SubscriptionStatus.CLEANED
    assert mailbox.subscription_changed_at == datetime(
        2025, 3, 2, 7, 29, 58, tzinfo=UTC
    )
    suppression = Suppression.objects.get(
        email_hash=suppression_hash("mailbox.full@example.com")
    )
    assert suppression.reason == SuppressionReason.HARD_BOUNCE
    assert suppression.source == "import:mailchimp"
    assert Suppression.objects.count() == 4
    # Flagged on the profile too, as suppression_add does, for rules and counts.
    assert mailbox.suppressed_at is not None
    assert Profile.objects.exclude(suppressed_at=None).count() == 4


@pytest.mark.django_db
def test_reimporting_the_subscribed_export_never_resubscribes_grace(
    all_three, import_fixture
):
    consents_before = ConsentRecord.objects.count()

    again = import_fixture(SUBSCRIBED)

    assert again.status == ImportStatus.DONE
    assert (again.profiles_created, again.profiles_updated) == (0, 34)
    assert profile("grace.lee@example.com").subscription_status == "unsubscribed"
    assert status_counts()["subscribed"] == 33
    kept = [note for note in again.notes if note["kind"] == "kept_status"]
    assert [(n["email"], n["record"], n["status"]) for n in kept] == [
        ("grace.lee@example.com", 22, "unsubscribed")
    ]
    assert ConsentRecord.objects.count() == consents_before


@pytest.mark.django_db
def test_a_reimport_never_blanks_existing_values(import_fixture):
    import_fixture(SUBSCRIBED)
    data = b"email,first_name,phone,tags\r\nana.souza@example.com,,,Returning\r\n"

    contact_import_file(filename="ana.csv", data=data)

    ana = profile("ana.souza@example.com")
    assert (ana.first_name, ana.phone) == ("Ana", "+55 11 5555-0123")
    assert ana.traits["member_rating"] == 4
    assert tag_names("ana.souza@example.com") == [
        "VIP",
        "Spring Sale 2025",
        "Newsletter",
        "Returning",
    ]


# Other layouts and encodings -----------------------------------------------------


@pytest.mark.django_db
def test_a_windows_1252_semicolon_file_imports_its_accents():
    data = (
        "E-mail;Surnom préféré;First name;Last name;City\r\n"
        "zoe@example.com;x;Zoë;Müller;Köln\r\n"
        'rene@example.org;x;René;"Dupont; fils";Besançon'
    ).encode("cp1252")

    contact_import = contact_import_file(filename="excel.csv", data=data)

    assert contact_import.status == ImportStatus.DONE
    assert contact_import.layout == "generic"
    assert contact_import.records == 2
    zoe = profile("zoe@example.com")
    assert (zoe.first_name, zoe.last_name, zoe.city) == ("Zoë", "Müller", "Köln")
    assert zoe.traits == {"surnom_préféré": "x"}
    assert profile("rene@example.org").last_name == "Dupont; fils"


@pytest.mark.django_db
def test_a_generic_file_maps_its_columns_and_states_consent():
    data = (
        "\ufeffEmail Address\tFirst Name\tSurname\tCountry\tTimezone\tTags\t"
        "Status\tZip Code\n"
        "pat@example.com\tPat\tLee\tde\tEurope/Berlin\tVIP, Spring\t"
        "Unsubscribed\t02134\n"
        "kim@example.com\tKim\t\tGermany\tMars/Olympus\t\tsubscribed\t\n"
        "lee@example.com\tLee\t\t\t\t\tmaybe\t\n"
    ).encode()

    contact_import = contact_import_file(filename="crm.tsv", data=data)

    assert contact_import.layout == "generic"
    assert (contact_import.accepted, contact_import.rejected) == (3, 0)
    assert contact_import.rejections[0]["reason"] == "invalid_status"
    assert profile("lee@example.com").subscription_status == "not_subscribed"
    pat = profile("pat@example.com")
    assert (pat.first_name, pat.last_name, pat.country_code, pat.timezone) == (
        "Pat",
        "Lee",
        "DE",
        "Europe/Berlin",
    )
    assert pat.traits == {"zip_code": "02134"}
    assert tag_names("pat@example.com") == ["VIP", "Spring"]
    assert pat.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert pat.consent_records.get().source == "import:file"
    kim = profile("kim@example.com")
    assert (kim.country_code, kim.traits) == ("DE", {})
    assert kim.timezone == ""
    assert [n["column"] for n in contact_import.notes] == ["Timezone"]


@pytest.mark.django_db
def test_a_country_written_by_name_is_its_code_and_an_unknown_one_a_trait():
    data = (
        b"Email,Country\n"
        b"ann@example.com,France\n"
        b"bob@example.com,united states\n"
        b"cy@example.com,DEU\n"
        b"di@example.com,Atlantis\n"
        b"ed@example.com,250\n"
        b"fay@example.com,Russia\n"
        b"gus@example.com,UK\n"
    )

    done = contact_import_file(filename="crm.csv", data=data)

    names = ("ann", "bob", "cy", "di", "ed", "fay", "gus")
    emails = [f"{name}@example.com" for name in names]
    found = {
        email: (profile(email).country_code, profile(email).traits) for email in emails
    }
    assert found == {
        "ann@example.com": ("FR", {}),
        "bob@example.com": ("US", {}),
        "cy@example.com": ("DE", {}),
        "di@example.com": ("", {"country": "Atlantis"}),
        "ed@example.com": ("", {"country": "250"}),
        "fay@example.com": ("RU", {}),
        "gus@example.com": ("GB", {}),
    }
    kept = [n["message"] for n in done.notes if n["kind"] == "country_as_trait"]
    assert kept == [
        "Record 4: Country 'Atlantis' is no country Bespoke knows by that name: it "
        "is kept as the trait country, and the profile's country is unchanged.",
        "Record 5: Country '250' is no country Bespoke knows by that name: it is "
        "kept as the trait country, and the profile's country is unchanged.",
    ]


@pytest.mark.django_db
def test_a_country_kept_as_a_declared_trait_is_held_to_its_rules():
    TraitDefinition.objects.create(
        name="Country", type=TraitType.TEXT, allowed_values=["Atlantis"]
    )
    data = b"email,Country\nkept@example.com,atlantis\nrefused@example.com,Narnia\n"

    done = contact_import_file(filename="crm.csv", data=data)

    assert profile("kept@example.com").traits == {"Country": "Atlantis"}
    assert profile("refused@example.com").traits == {}
    assert [(r["record"], r["column"]) for r in done.rejections] == [(2, "Country")]
    kept = [n["message"] for n in done.notes if n["kind"] == "country_as_trait"]
    assert kept == [
        "Record 1: Country 'atlantis' is no country Bespoke knows by that name: it "
        "is kept as the trait Country, and the profile's country is unchanged."
    ]


@pytest.mark.django_db
def test_an_excel_unicode_text_file_in_utf16_is_read():
    data = "Email\tFirst Name\r\nsoren@example.net\tSøren\r\n".encode("utf-16")

    contact_import = contact_import_file(filename="unicode.txt", data=data)

    assert contact_import.status == ImportStatus.DONE
    assert profile("soren@example.net").first_name == "Søren"


@pytest.mark.django_db
def test_an_empty_file_fails_and_a_header_alone_imports_nothing():
    empty = contact_import_file(filename="empty.csv", data=b"\xef\xbb\xbf\r\n")
    header = contact_import_file(filename="header.csv", data=b"email,first_name\r\n")

    assert (empty.status, empty.error) == (ImportStatus.FAILED, "The file is empty.")
    assert (header.status, header.records) == (ImportStatus.DONE, 0)
    assert Profile.objects.count() == 0
    # and the report says why nobody came in, not that nobody has consent
    assert header.notes == [NO_RECORDS_NOTE]


@pytest.mark.django_db
def test_a_generic_file_without_status_subscribes_no_one():
    data = b"email\nnew@example.com\n"

    contact_import_file(filename="plain.csv", data=data)

    new = profile("new@example.com")
    assert new.subscription_status == SubscriptionStatus.NOT_SUBSCRIBED
    assert new.consent_records.count() == 0


@pytest.mark.django_db
def test_a_header_without_an_email_column_fails_and_writes_nothing():
    data = b"name,phone\nPat,123\n"

    contact_import = contact_import_file(filename="no-email.csv", data=data)

    assert contact_import.status == ImportStatus.FAILED
    assert contact_import.error == (
        "The header has no email column. Name one column 'Email Address' or "
        "'email'; the header found was: name, phone."
    )
    assert contact_import.records == 0
    assert contact_import.finished_at is not None
    assert Profile.objects.count() == 0


@pytest.mark.django_db
def test_a_cell_of_any_length_costs_only_its_own_row():
    oversized = b'"' + b"x" * 200_000 + b'"'
    data = b"email\nfirst@example.com\nsecond@example.com\n" + oversized + b"\n"

    contact_import = contact_import_file(filename="long-cell.csv", data=data)

    assert contact_import.status == ImportStatus.DONE
    assert (contact_import.accepted, contact_import.rejected) == (2, 1)
    rejection = contact_import.rejections[0]
    assert rejection["line"] == 4
    assert rejection["email"] == "x" * 320 + "… (200,000 characters)"
    assert Profile.objects.count() == 2


@pytest.mark.django_db
def test_a_file_with_nul_characters_is_refused():
    data = b"email\nfirst@example.com\nbad\x00line@example.com\n"

    contact_import = contact_import_file(filename="binary.csv", data=data)

    assert contact_import.status == ImportStatus.FAILED
    assert contact_import.error == (
        "The file contains NUL characters, so it is not a CSV text file."
    )
    assert Profile.objects.count() == 0


def second_batch_failing(monkeypatch) -> tuple[list[int], object]:
    """Write batches of 10 rows, the second failing after the first committed.

    Return the sizes of the batches tried, and the real writer to put back.
    """
    monkeypatch.setattr(runs, "IMPORT_BATCH_SIZE", 10)
    real_write = runs.contact_rows_write
    calls: list[int] = []

    def failing_write(rows, **kwargs):
        calls.append(len(rows))
        written = real_write(rows, **kwargs)
        if len(calls) == 2:
            raise IntegrityError("simulated failure in the second batch")
        return written

    monkeypatch.setattr(runs, "contact_rows_write", failing_write)
    return calls, real_write


@pytest.mark.django_db
def test_a_database_error_midway_names_what_was_written_and_a_retry_continues(
    load_fixture, monkeypatch
):
    # Batches of 10 rows; the second batch's write fails after the first committed.
    calls, real_write = second_batch_failing(monkeypatch)
    contact_import = contact_import_create(
        filename="subscribed.csv", data=load_fixture(SUBSCRIBED)
    )

    with pytest.raises(IntegrityError):
        contact_import_run_stored(contact_import_id=contact_import.pk)

    contact_import.refresh_from_db()
    assert calls == [10, 10]
    assert contact_import.status == ImportStatus.FAILED
    assert contact_import.error == (
        "The import stopped on an error: simulated failure in the second batch. "
        "10 of 34 rows were written; run it again to continue from there."
    )
    assert (contact_import.rows_done, contact_import.profiles_created) == (10, 10)
    assert Profile.objects.count() == 10
    # Chloé's two rows state two subscriptions at different times.
    assert ConsentRecord.objects.count() == 11
    assert contact_import_upload_path(contact_import).exists()

    monkeypatch.setattr(runs, "contact_rows_write", real_write)
    assert contact_import_retry(contact_import_id=contact_import.pk) is True
    contact_import_run_stored(contact_import_id=contact_import.pk)

    contact_import.refresh_from_db()
    assert contact_import.status == ImportStatus.DONE
    assert (contact_import.rows_done, contact_import.rows_total) == (34, 34)
    assert (contact_import.profiles_created, contact_import.profiles_updated) == (
        34,
        0,
    )
    assert Profile.objects.count() == 34
    assert ConsentRecord.objects.count() == 35
    assert not contact_import_upload_path(contact_import).exists()


@pytest.mark.django_db
def test_a_zip_archive_is_refused_with_advice():
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as export:
        export.writestr("subscribed_members_export.csv", "Email Address\n")
    data = archive.getvalue()

    contact_import = contact_import_file(filename="export.zip", data=data)

    assert contact_import.status == ImportStatus.FAILED
    assert contact_import.error.startswith("This is a zip archive.")


@pytest.mark.django_db
def test_an_old_excel_workbook_is_refused_with_advice():
    # The first sector of an .xls file: its signature, then binary.
    data = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)

    contact_import = contact_import_file(filename="list.xls", data=data)

    assert contact_import.status == ImportStatus.FAILED
    assert contact_import.error.startswith("This is an Excel 97-2003 workbook (.xls)")
    assert "(.xlsx) or as CSV" in contact_import.error


@pytest.mark.django_db
def test_a_record_with_more_cells_than_the_header_is_rejected():
    data = b"email,first_name\none@example.com,One\ntwo@example.com,Smith, Jr.\n"

    contact_import = contact_import_file(filename="shifted.csv", data=data)

    assert [(r["record"], r["reason"]) for r in contact_import.rejections] == [
        (2, "extra_cells")
    ]
    assert list(Profile.objects.values_list("email", flat=True)) == ["one@example.com"]


@pytest.mark.django_db
def test_records_with_fewer_cells_than_the_header_are_kept_and_noted_once_a_count():
    data = (
        b"email,first_name,city,plan\n"
        b"one@example.com,One,Oslo,gold\n"
        b"two@example.com,Two\n"
        b"three@example.com,Three,Rome\n"
        b"four@example.com,Four\n"
        b"bad@@example.com,Bad\n"
    )

    contact_import = contact_import_file(filename="short.csv", data=data)

    assert [r["reason"] for r in contact_import.rejections] == ["invalid_email"]
    assert profile("two@example.com").first_name == "Two"
    assert profile("three@example.com").city == "Rome"
    notes = [n for n in contact_import.notes if n["kind"] == "short_record"]
    # One note for each count of cells; the refused record is not among them.
    assert [(n["lines"], n["count"], n["missing"]) for n in notes] == [
        ([3, 5], 2, 2),
        ([4], 1, 1),
    ]
    assert notes[0]["message"] == (
        "2 records have 2 cells where the header has 4 (lines 3, 5): the last 2, "
        "from city on, were read as empty; the rest of each record was imported."
    )
    assert notes[1]["message"] == (
        "1 record has 3 cells where the header has 4 (line 4): the last one, "
        "plan, was read as empty; the rest of each record was imported."
    )


@pytest.mark.django_db
def test_a_file_short_on_every_record_gets_one_note():
    rows = b"".join(b"p%d@example.com,P\n" % n for n in range(300))
    data = b"email,first_name,last_name,\n" + rows

    contact_import = contact_import_file(filename="trailing-header.csv", data=data)

    (note,) = [n for n in contact_import.notes if n["kind"] == "short_record"]
    assert (note["count"], len(note["lines"])) == (300, 10)
    assert "(lines 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and more)" in note["message"]


@pytest.mark.django_db
def test_records_whose_extra_cells_are_empty_are_kept_and_noted_once():
    data = (
        b"email,first_name\n"
        b"one@example.com,One,\n"
        b"two@example.com,Two\n"
        b"three@example.com,Three,,\n"
    )

    contact_import = contact_import_file(filename="trailing.csv", data=data)

    assert contact_import.rejections == []
    assert Profile.objects.count() == 3
    (note,) = [n for n in contact_import.notes if n["kind"] == "extra_cells_empty"]
    assert (note["lines"], note["count"]) == ([2, 4], 2)
    assert note["message"] == (
        "2 records have more cells than the header's 2, all of the extra ones "
        "empty (lines 2, 4): those cells were left out."
    )


@pytest.mark.django_db
def test_imported_tags_are_one_line_and_a_cut_or_left_out_tag_is_noted():
    long_tag = ("Spring fair " * 10).strip()
    data = (
        'Email,Tags\nann@example.com,"""Met at\nthe expo"",""'
        + long_tag
        + '"",""Bad\x1btag"",""VIP"""\n'
    ).encode()

    contact_import = contact_import_file(filename="tags.csv", data=data)

    assert tag_names("ann@example.com") == [
        "Met at the expo",
        long_tag[:100],
        "VIP",
    ]
    notes = [n for n in contact_import.notes if n["kind"].startswith("tag_")]
    assert [(n["kind"], n["record"], n["line"], n["column"]) for n in notes] == [
        ("tag_cut", 1, 2, "Tags"),
        ("tag_left_out", 1, 2, "Tags"),
    ]
    assert notes[0]["message"] == (
        "Record 1 (line 2): Tags tag 'Spring fair Spring fair Spring fair Spri'… "
        "(119 characters) was cut to its first 100 characters, all a tag holds."
    )
    assert notes[1]["message"] == (
        "Record 1 (line 2): Tags tag 'Bad\\x1btag' was not imported (it holds the "
        "control character U+001B)."
    )


@pytest.mark.django_db
def test_a_tag_many_records_hold_is_noted_once_with_their_count_and_first_lines():
    long_tag = "Spring fair " * 10
    rows = "".join(
        f'p{n}@example.com,"{long_tag},Bad\x1btag,VIP"\n' for n in range(1, 13)
    )
    data = f"Email,Tags\n{rows}".encode()

    contact_import = contact_import_file(filename="tags.csv", data=data)

    assert tag_names("p12@example.com") == [long_tag[:100].rstrip(), "VIP"]
    notes = [n for n in contact_import.notes if n["kind"].startswith("tag_")]
    assert [(n["kind"], n["count"], n["column"]) for n in notes] == [
        ("tag_cut", 12, "Tags"),
        ("tag_left_out", 12, "Tags"),
    ]
    assert notes[0]["records"] == list(range(1, 11))
    assert notes[0]["lines"] == list(range(2, 12))
    assert "email" not in notes[0]
    assert notes[0]["message"] == (
        "12 records (lines 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and more): Tags tag "
        "'Spring fair Spring fair Spring fair Spri'… (119 characters) was cut to "
        "its first 100 characters, all a tag holds."
    )
    assert notes[1]["message"] == (
        "12 records (lines 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and more): Tags tag "
        "'Bad\\x1btag' was not imported (it holds the control character U+001B)."
    )


@pytest.mark.django_db
def test_a_tag_note_of_one_record_names_its_address():
    data = b'Email,Tags\nAnn@Example.com,"Bad\x1btag,VIP"\nbob@example.com,VIP\n'

    contact_import = contact_import_file(filename="tags.csv", data=data)

    (note,) = [n for n in contact_import.notes if n["kind"].startswith("tag_")]
    assert note == {
        "kind": "tag_left_out",
        "record": 1,
        "line": 2,
        "column": "Tags",
        "email": "Ann@Example.com",
        "message": (
            "Record 1 (line 2): Tags tag 'Bad\\x1btag' was not imported (it holds "
            "the control character U+001B)."
        ),
    }


@pytest.mark.django_db
def test_a_line_break_inside_a_tag_is_a_space_not_a_separator():
    # Tags are split on commas only, whether or not the cell also holds one.
    data = (
        b"Email,Tags\n"
        b'ann@example.com,"Line\nBreak,Other"\n'
        b'bob@example.com,"Line\r\nBreak"\n'
    )

    contact_import = contact_import_file(filename="tags.csv", data=data)

    assert tag_names("ann@example.com") == ["Line Break", "Other"]
    assert tag_names("bob@example.com") == ["Line Break"]
    assert [n for n in contact_import.notes if n["kind"].startswith("tag_")] == []


def erasure_record(address: str) -> None:
    """Put an address on the suppression list as erased on request."""
    Suppression.objects.create(
        email_hash=suppression_hash(address),
        reason=SuppressionReason.ERASURE,
        source="privacy-request",
    )


@pytest.mark.django_db
def test_an_erased_person_is_not_brought_back_by_an_old_export(import_fixture):
    erasure_record("grace.lee@example.com")

    contact_import = import_fixture(SUBSCRIBED)

    assert not Profile.objects.filter(email="grace.lee@example.com").exists()
    assert contact_import.rejected == 4
    assert contact_import.rejections[0] == {
        "record": 22,
        "line": 23,
        "email": "",
        "reason": "erased",
        "message": "This person was erased on request; their data is not imported again.",
    }


@pytest.mark.django_db
def test_a_tag_note_of_an_erased_persons_records_alone_is_left_out():
    erasure_record("erased.person@example.com")
    data = (
        b"Email,Tags\n"
        b'erased.person@example.com,"Secret\x1btag"\n'
        b'Erased.Person@example.com,"Secret\x1btag"\n'
        b'keep@example.com,"Shared\x1btag"\n'
        b'erased.person@example.com,"Shared\x1btag"\n'
    )

    contact_import = contact_import_file(filename="erased.csv", data=data)

    assert "secret" not in json.dumps(contact_import.notes).lower()
    # The shared tag's note speaks of the one record imported, not of record 4,
    # which is the erased person's (a note of two records before).
    notes = [n for n in contact_import.notes if n["kind"] == "tag_left_out"]
    assert notes == [
        {
            "kind": "tag_left_out",
            "record": 3,
            "line": 4,
            "column": "Tags",
            "email": "keep@example.com",
            "message": (
                "Record 3 (line 4): Tags tag 'Shared\\x1btag' was not imported (it "
                "holds the control character U+001B)."
            ),
        }
    ]


@pytest.mark.django_db
def test_a_tag_note_counts_and_names_only_the_records_of_people_kept():
    # given a tag 14 records hold, three of them an erased person's, the first
    # of them the file's first record
    erasure_record("erased.person@example.com")
    erased = 'Erased.Person@example.com,"VIP,Bad\x1btag"\n'
    kept = [f'p{n}@example.com,"Bad\x1btag"\n' for n in range(1, 12)]
    rows = [erased, *kept[:5], erased, *kept[5:], erased]
    data = ("Email,Tags\n" + "".join(rows)).encode()

    contact_import = contact_import_file(filename="tags.csv", data=data)

    # then its note counts the 11 records imported and names their first lines
    (note,) = [n for n in contact_import.notes if n["kind"] == "tag_left_out"]
    assert (note["count"], note["records"]) == (11, [2, 3, 4, 5, 6, 8, 9, 10, 11, 12])
    assert note["lines"] == [3, 4, 5, 6, 7, 9, 10, 11, 12, 13]
    assert note["message"] == (
        "11 records (lines 3, 4, 5, 6, 7, 9, 10, 11, 12, 13 and more): Tags tag "
        "'Bad\\x1btag' was not imported (it holds the control character U+001B)."
    )
    assert [(r["record"], r["reason"]) for r in contact_import.rejections] == [
        (1, "erased"),
        (7, "erased"),
        (14, "erased"),
    ]


@pytest.mark.django_db
def test_a_tag_note_without_erased_people_counts_a_merged_persons_records_in_order():
    data = (
        b'Email,Tags\nann@example.com,"Bad\x1btag"\nbob@example.com,"Bad\x1btag"\n'
        b'ANN@example.com,"Bad\x1btag"\n'
    )

    contact_import = contact_import_file(filename="tags.csv", data=data)

    (note,) = [n for n in contact_import.notes if n["kind"] == "tag_left_out"]
    assert (note["count"], note["records"], note["lines"]) == (3, [1, 2, 3], [2, 3, 4])


@pytest.mark.django_db
def test_the_report_keeps_nothing_of_an_erased_person():
    erasure_record("erased.person@example.com")
    TraitDefinition.objects.create(name="age", type=TraitType.NUMBER, maximum=120)
    data = (
        b"Email,First Name,Status,Age\n"
        b"Erased.Person@Example.com,Gone,subscribed,200\n"
        b"erased.person@example.com,Gone2,subscribed,\n"
        b"erased.person@example.com,Gone3,pending,\n"
        b"keep@example.com,Keep,subscribed,30\n"
    )

    contact_import = contact_import_file(filename="erased.csv", data=data)

    report = json.dumps([contact_import.rejections, contact_import.notes]).lower()
    assert "erased.person" not in report
    assert "gone" not in report
    assert [(r["record"], r["reason"]) for r in contact_import.rejections] == [
        (1, "erased"),
        (2, "erased"),
        (3, "erased"),
    ]
    assert list(Profile.objects.values_list("email", flat=True)) == ["keep@example.com"]


# Parsing details -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "names"),
    [
        ('"VIP","Newsletter"', ["VIP", "Newsletter"]),
        (
            '"VIP","Expo 2024, Boston","Newsletter"',
            ["VIP", "Expo 2024, Boston", "Newsletter"],
        ),
        ("vip, newsletter", ["vip", "newsletter"]),
        ('"VIP","VIP"', ["VIP"]),
        ("", []),
    ],
)
def test_a_tags_cell_splits_like_csv(cell, names):
    assert contacts_tags_split(cell) == names


@pytest.mark.parametrize(
    "cell",
    [
        '"VIP","Newsletter"',
        '" VIP ","","Club, Lyon","VIP"',
        '"Met at\nthe expo","x"',
        '"Robert ""Bob""","VIP"',
        '"VIP", "Club"',
        '"VIP"x,"Club"',
        '"VIP",Club',
    ],
)
def test_quoted_tag_cells_read_without_a_csv_reader_split_as_it_would(cell):
    rows = csv.reader(io.StringIO(cell, newline=""), skipinitialspace=True)
    by_reader = [name.strip() for cells in rows for name in cells if name.strip()]

    assert contacts_tags_split(cell) == list(dict.fromkeys(by_reader))


def test_a_last_row_without_newline_and_crlf_lines_are_read():
    parsed = contacts_parse(b"email,first_name\r\na@example.com,A\r\nb@example.com,B")

    assert [row.email.key for row in parsed.rows] == ["a@example.com", "b@example.com"]
    assert [row.fields["first_name"] for row in parsed.rows] == ["A", "B"]


def test_blank_rows_are_not_records():
    parsed = contacts_parse(b"email\n\na@example.com\n,\nb@example.com\n")

    assert parsed.records == 2
    assert [row.lines for row in parsed.rows] == [[3], [5]]


# The upload file, the task and the command ---------------------------------------


@pytest.mark.django_db
def test_an_upload_waits_on_disk_until_the_task_runs_it(var_dir):
    contact_import = contact_import_create(
        filename="../../etc/Contacts 2025.csv", data=b"email\na@example.com\n"
    )
    path = contact_import_upload_path(contact_import)
    assert path == var_dir / "imports" / f"{contact_import.pk}-Contacts_2025.csv"
    assert path.read_bytes() == b"email\na@example.com\n"
    assert contact_import.status == ImportStatus.PENDING

    contact_import_task(contact_import.pk)

    contact_import.refresh_from_db()
    assert contact_import.status == ImportStatus.DONE
    assert Profile.objects.get().email == "a@example.com"
    assert not path.exists()


@pytest.mark.django_db
def test_an_import_runs_only_once():
    contact_import = contact_import_file(filename="a.csv", data=b"email\na@x.com\n")

    again = contact_import_run(
        contact_import_id=contact_import.pk, data=b"email\nb@example.com\n"
    )

    assert again.status == ImportStatus.DONE
    assert list(Profile.objects.values_list("email", flat=True)) == ["a@x.com"]


@pytest.mark.django_db
def test_the_command_prints_counts_and_every_rejected_row(fixtures_dir):
    out = StringIO()

    call_command(
        "import_contacts",
        str(fixtures_dir / SUBSCRIBED),
        str(fixtures_dir / UNSUBSCRIBED),
        str(fixtures_dir / CLEANED),
        stdout=out,
    )

    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "subscribed_members_export.csv (mailchimp_subscribed): 40 records, "
        "37 accepted, 3 rejected, 3 duplicates merged, 34 profiles created, "
        "0 already known"
    )
    assert lines[1] == "  email consent after it: 34 subscribed"
    assert lines[2].startswith("  record 34 (line 36): invalid_email: 'not-an-email'")
    assert lines[3].startswith("  record 37 (line 39): invalid_email:")
    assert lines[4] == (
        "  record 40 (line 42): missing_email: '': The Email Address cell is empty."
    )
    assert Profile.objects.count() == 44


@pytest.mark.django_db
def test_the_command_refuses_a_missing_file_before_importing_any(fixtures_dir):
    with pytest.raises(CommandError, match="No such file: nowhere.csv"):
        call_command("import_contacts", str(fixtures_dir / SUBSCRIBED), "nowhere.csv")

    assert ContactImport.objects.count() == 0


@pytest.mark.django_db
def test_the_command_names_a_folder_given_as_a_file(fixtures_dir, tmp_path):
    with pytest.raises(CommandError, match=f"A folder, not a file: {tmp_path}"):
        call_command("import_contacts", str(tmp_path))

    assert ContactImport.objects.count() == 0


@pytest.mark.django_db
def test_a_profile_stored_with_capitals_is_found_not_duplicated(load_fixture):
    ProfileFactory(email="Zoe.Martin@Example.org", first_name="")

    contact_import_file(filename="subscribed.csv", data=load_fixture(SUBSCRIBED))

    zoe = Profile.objects.get(email__iexact="zoe.martin@example.org")
    assert zoe.first_name == "Zoë"
    assert Profile.objects.count() == 34


@pytest.mark.django_db
@pytest.mark.parametrize("between", ["never subscribed", "not subscribed"])
def test_a_list_saying_never_subscribed_does_not_open_the_way_to_resubscribing(
    all_three, between
):
    # given Dmitri unsubscribed (a dated fact of the Mailchimp export), then a list
    # that says he never subscribed, then one that says he is subscribed
    first = contact_import_file(
        filename="between.csv",
        data=f"Email,Status\nd.volkov@example.com,{between}\n".encode(),
    )
    contact_import_file(
        filename="later.csv", data=b"Email,Status\nd.volkov@example.com,subscribed\n"
    )

    # then he stays unsubscribed, and the first report says why
    assert profile("d.volkov@example.com").subscription_status == "unsubscribed"
    kept = [note for note in first.notes if note["kind"] == "kept_status"]
    assert [n["message"] for n in kept] == [
        "Record 1: d.volkov@example.com stays unsubscribed; someone who left is not "
        "one that never subscribed."
    ]


@pytest.mark.django_db
def test_a_yes_no_opt_in_column_is_consent_and_its_no_changes_nothing(all_three):
    # given a shop's export: an opt-in column of yes and no, Grace (unsubscribed in
    # the Mailchimp export) among those who said yes
    data = (
        b"Email,Accepts Email Marketing\n"
        b"new.yes@example.com,yes\n"
        b"new.no@example.com,no\n"
        b"grace.lee@example.com,yes\n"
        b"ana.souza@example.com,no\n"
    )

    contact_import_file(filename="shop.csv", data=data)

    # then the column is read as consent by default, yes subscribes a new address,
    # no changes nothing, and nobody who left is subscribed again
    assert profile("new.yes@example.com").subscription_status == "subscribed"
    assert profile("new.no@example.com").subscription_status == "not_subscribed"
    assert profile("grace.lee@example.com").subscription_status == "unsubscribed"
    assert profile("ana.souza@example.com").subscription_status == "subscribed"
    assert "subscribed" not in profile("new.no@example.com").traits


@pytest.mark.django_db
def test_the_summary_of_one_record_is_in_the_singular():
    done = contact_import_file(filename="one.csv", data=b"email\nann@example.com\n")

    assert contact_import_summary(done) == (
        "1 record, 1 accepted, 0 rejected, 0 duplicates merged, 1 profile created, "
        "0 already known"
    )


@pytest.mark.django_db
def test_two_letters_that_are_no_country_are_no_country_code():
    data = b"Email,Country\na@example.com,EU\nb@example.com,xk\nc@example.com,UK\n"

    contact_import_file(filename="codes.csv", data=data)

    codes = dict(Profile.objects.values_list("email", "country_code"))
    assert codes == {"a@example.com": "", "b@example.com": "XK", "c@example.com": "GB"}


@pytest.mark.django_db
def test_a_long_refused_value_is_quoted_in_part():
    long_name = "L" * 5000
    data = f"Email,Last Name\nann@example.com,{long_name}\n".encode()

    contact_import = contact_import_file(filename="long.csv", data=data)

    note, consent = contact_import.notes
    assert consent == NO_CONSENT_COLUMN_NOTE
    assert len(note["message"]) < 400
    assert "… (5,000 characters) was not imported" in note["message"]


@pytest.mark.django_db
def test_a_retry_after_the_traits_changed_runs_the_whole_file_under_the_new_rules(
    monkeypatch,
):
    # given an import of 30 rows whose points break the declared maximum from row
    # 11 on, stopped by an error after its first batch of 10
    TraitDefinition.objects.create(name="points", type=TraitType.NUMBER, maximum=10)
    lines = [f"p{n}@example.com,{n}" for n in range(1, 31)]
    data = ("Email,Points\n" + "\n".join(lines) + "\n").encode()
    _, real_write = second_batch_failing(monkeypatch)
    contact_import = contact_import_create(filename="points.csv", data=data)
    with pytest.raises(IntegrityError):
        contact_import_run_stored(contact_import_id=contact_import.pk)
    contact_import.refresh_from_db()
    assert len(contact_import.rejections) == 20

    # when the marketer raises the maximum and runs it again
    TraitDefinition.objects.filter(name="points").update(maximum=100)
    monkeypatch.setattr(runs, "contact_rows_write", real_write)
    contact_import_retry(contact_import_id=contact_import.pk)
    contact_import_run_stored(contact_import_id=contact_import.pk)

    # then every row was read under the new rule, and the report says so
    contact_import.refresh_from_db()
    assert contact_import.status == ImportStatus.DONE
    assert contact_import.rejections == []
    # after the note of the run that failed
    assert [note["kind"] for note in contact_import.notes[:2]] == [
        "run_again",
        "restarted",
    ]
    assert sorted(p.traits["points"] for p in Profile.objects.all()) == list(
        range(1, 31)
    )
    assert contact_import.rows_done == 30
    # The ten its first run made count as made, not as already known.
    assert (contact_import.profiles_created, contact_import.profiles_updated) == (
        30,
        0,
    )


@pytest.mark.django_db
def test_a_cell_too_long_for_a_trait_is_left_out_with_a_note():
    pasted = "x" * 40_000
    data = f"Email,Notes,Plan\nann@example.com,{pasted},pro\n".encode()

    contact_import = contact_import_file(filename="long.csv", data=data)

    assert Profile.objects.get().traits == {"plan": "pro"}
    note = contact_import.notes[0]
    assert note["kind"] == "ignored_value"
    assert note["message"].endswith(
        "(40,000 characters) was not imported (longer than 32,768 characters)."
    )
