"""Klaviyo and Brevo exports, XLSX files, the column map and declared trait types."""

import io
import os
from datetime import UTC, date, datetime, timedelta

import pytest
from django.urls import reverse
from hypothesis import given
from hypothesis import strategies as st
from openpyxl import Workbook

from profiles.emails import InvalidEmail, _validated_address, email_normalize
from profiles.importing import (
    contact_import_create,
    contact_import_file,
    contact_import_map,
    contact_import_run_stored,
    contact_import_upload_path,
    contact_import_uploads_purge,
    contact_imports_sweep,
    contacts_preview,
)
from profiles.models import (
    ConsentRecord,
    ContactImport,
    ImportStatus,
    Profile,
    SubscriptionStatus,
    TraitDefinition,
    TraitType,
)

KLAVIYO = (
    "Email,First Name,Last Name,Phone Number,Address,City,State / Region,Country,"
    "Zip Code,Source,Email Marketing Consent,Email Marketing Consent Timestamp,"
    "Created,List\n"
    "ana@example.com,Ana,Souza,+55 11 5555-0123,Rua A 1,São Paulo,SP,Brazil,01000,"
    "Signup form,SUBSCRIBED,2024-09-02T18:21:40+00:00,2024-09-02,Newsletter\n"
    "ben@example.net,Ben,Okafor,,,Chicago,IL,US,60601,API,UNSUBSCRIBED,"
    "2025-01-15T10:22:31+00:00,2023-11-19,\n"
    "cleo@example.org,Cleo,,,,,,,,Import,NEVER_SUBSCRIBED,,2024-01-01,\n"
)
BREVO = (
    "EMAIL;PRENOM;NOM;SMS;EMAIL_BLACKLISTED;DOUBLE_OPT-IN;OPT_IN;ADDED_TIME\n"
    "zoe@example.fr;Zoë;Martin;+33612345678;No;Yes;Yes;2024-03-01 10:22:03\n"
    "luc@example.fr;Luc;Bernard;;Yes;No;No;2023-05-12 08:00:00\n"
    "eve@example.fr;Eve;;;true;;;\n"
)


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def profile(email: str) -> Profile:
    return Profile.objects.get(email=email)


def xlsx_bytes(rows: list[list[object]]) -> bytes:
    workbook = Workbook()
    for row in rows:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


# Klaviyo and Brevo ----------------------------------------------------------------


@pytest.mark.django_db
def test_a_klaviyo_export_is_recognised_and_carries_its_consent_over():
    contact_import = contact_import_file(filename="klaviyo.csv", data=KLAVIYO.encode())

    assert contact_import.layout == "klaviyo"
    assert (contact_import.records, contact_import.accepted) == (3, 3)
    ana = profile("ana@example.com")
    assert (ana.first_name, ana.phone, ana.city, ana.region, ana.country_code) == (
        "Ana",
        "+55 11 5555-0123",
        "São Paulo",
        "SP",
        "BR",  # Klaviyo writes the country's name
    )
    assert ana.traits == {
        "address": "Rua A 1",
        "zip_code": "01000",
        "klaviyo_source": "Signup form",
        "klaviyo_created_at": "2024-09-02",
    }
    assert list(ana.tags.values_list("name", flat=True)) == ["Newsletter"]
    record = ana.consent_records.get()
    assert (record.status, record.source, record.occurred_at) == (
        "subscribed",
        "import:klaviyo",
        datetime(2024, 9, 2, 18, 21, 40, tzinfo=UTC),
    )
    assert record.wording == "Listed as subscribed in a Klaviyo profile export."
    ben = profile("ben@example.net")
    assert (ben.subscription_status, ben.country_code) == ("unsubscribed", "US")
    assert profile("cleo@example.org").subscription_status == "not_subscribed"


KLAVIYO_CONSENTS = (
    "Email,Email Marketing Consent,Email Marketing Consent Timestamp\n"
    "sam@example.com,SUPPRESSED,2025-02-03T08:00:00+00:00\n"
    "tia@example.com,SUBSCRIBED,2024-05-01T09:00:00+00:00\n"
    "uma@example.com,UNSUBSCRIBED,2024-06-01T09:00:00+00:00\n"
    "vic@example.com,NEVER_SUBSCRIBED,\n"
)


@pytest.mark.django_db
def test_a_klaviyo_suppressed_profile_is_imported_as_cleaned_and_noted():
    contact_import = contact_import_file(
        filename="klaviyo.csv", data=KLAVIYO_CONSENTS.encode()
    )

    assert contact_import.layout == "klaviyo"
    assert (contact_import.accepted, contact_import.rejected) == (4, 0)
    statuses = dict(Profile.objects.values_list("email", "subscription_status"))
    assert statuses == {
        "sam@example.com": "cleaned",
        "tia@example.com": "subscribed",
        "uma@example.com": "unsubscribed",
        "vic@example.com": "not_subscribed",
    }
    sam = profile("sam@example.com")
    assert sam.suppressed_at is not None
    record = sam.consent_records.get()
    assert (record.status, record.source, record.occurred_at) == (
        "cleaned",
        "import:klaviyo",
        datetime(2025, 2, 3, 8, 0, tzinfo=UTC),
    )
    assert record.wording == "Listed as suppressed in a Klaviyo profile export."
    assert record.evidence["Email Marketing Consent"] == "SUPPRESSED"
    assert contact_import.notes == [
        {
            "kind": "suppressed_as_cleaned",
            "record": 1,
            "column": "Email Marketing Consent",
            "email": "sam@example.com",
            "message": (
                "Record 1: Email Marketing Consent is 'SUPPRESSED', read as cleaned: "
                "Bespoke sends this address no email, and a later list import does "
                "not subscribe it again."
            ),
        }
    ]


@pytest.mark.django_db
def test_a_list_import_never_lifts_a_klaviyo_suppression():
    contact_import_file(filename="klaviyo.csv", data=KLAVIYO_CONSENTS.encode())
    again = (
        "Email,Email Marketing Consent,Email Marketing Consent Timestamp\n"
        "sam@example.com,SUBSCRIBED,2025-06-01T08:00:00+00:00\n"
    )

    contact_import = contact_import_file(filename="again.csv", data=again.encode())

    sam = profile("sam@example.com")
    assert sam.subscription_status == SubscriptionStatus.CLEANED
    assert [n["kind"] for n in contact_import.notes] == ["kept_status"]
    assert list(sam.consent_records.values_list("status", flat=True)) == ["cleaned"]


@pytest.mark.django_db
def test_a_brevo_export_is_recognised_and_its_blacklist_unsubscribes():
    contact_import = contact_import_file(filename="brevo.csv", data=BREVO.encode())

    assert contact_import.layout == "brevo"
    zoe = profile("zoe@example.fr")
    assert (zoe.first_name, zoe.last_name, zoe.phone) == (
        "Zoë",
        "Martin",
        "+33612345678",
    )
    assert zoe.subscription_status == SubscriptionStatus.SUBSCRIBED
    assert zoe.traits == {
        "brevo_double_opt_in": "Yes",
        "brevo_opt_in": "Yes",
        "brevo_added_time": "2024-03-01 10:22:03",
    }
    record = zoe.consent_records.get()
    assert record.source == "import:brevo"
    assert record.evidence["EMAIL_BLACKLISTED"] == "No"
    assert record.evidence["DOUBLE_OPT-IN"] == "Yes"
    assert profile("luc@example.fr").subscription_status == "unsubscribed"
    assert profile("eve@example.fr").subscription_status == "unsubscribed"


@pytest.mark.django_db
def test_a_brevo_contact_listed_twice_takes_the_most_recently_modified_row():
    data = (
        "EMAIL;PRENOM;EMAIL_BLACKLISTED;MODIFIED_TIME\n"
        "anna@example.de;Anna;No;2025-02-01 09:00:00\n"
        "ANNA@example.de;Anna-Lena;No;2023-06-30 18:00:00\n"
    )

    contact_import_file(filename="brevo.csv", data=data.encode())

    # The lower row is older by its MODIFIED_TIME: the newer one's name stands.
    anna = profile("anna@example.de")
    assert anna.first_name == "Anna"
    # Its time dates the consent too, as Mailchimp's LAST_CHANGED does.
    records = anna.consent_records.order_by("occurred_at")
    assert [r.occurred_at.isoformat() for r in records] == [
        "2023-06-30T18:00:00+00:00",
        "2025-02-01T09:00:00+00:00",
    ]
    assert anna.subscription_changed_at.isoformat() == "2025-02-01T09:00:00+00:00"
    assert records[0].wording.endswith("Dated by the row's “MODIFIED_TIME” column.")


@pytest.mark.django_db
def test_a_reimport_listing_an_unsubscriber_as_subscribed_never_resubscribes():
    contact_import_file(filename="brevo.csv", data=BREVO.encode())
    again = b"EMAIL;EMAIL_BLACKLISTED\nluc@example.fr;No\n"

    contact_import = contact_import_file(filename="brevo-again.csv", data=again)

    luc = profile("luc@example.fr")
    assert luc.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert [n["kind"] for n in contact_import.notes] == ["kept_status"]
    # The list's "subscribed" is no consent from Luc: it is noted, not recorded, so
    # his consent history does not show a subscription above his unsubscribe.
    assert list(
        luc.consent_records.order_by("id").values_list("status", flat=True)
    ) == ["unsubscribed"]


# Addresses ------------------------------------------------------------------------


@pytest.mark.django_db
def test_case_variants_are_one_profile_and_plus_addresses_stay_apart():
    data = (
        b"email,first_name\nAna@Example.com,Ana\nana@example.com,\n"
        b"ana+news@example.com,News\nANA@EXAMPLE.COM,Ana Paula\n"
    )

    contact_import = contact_import_file(filename="case.csv", data=data)

    assert contact_import.duplicates_merged == 2
    assert sorted(Profile.objects.values_list("email", flat=True)) == [
        "ana+news@example.com",
        "ana@example.com",
    ]
    assert profile("ana@example.com").first_name == "Ana Paula"


@pytest.mark.django_db
def test_idn_domains_are_stored_in_one_form_and_non_ascii_local_parts_are_flagged():
    data = (
        "email\nkai@xn--bcher-kva.example.com\nKai@Bücher.example.com\n"
        "jörg@example.com\n"
    ).encode()

    contact_import = contact_import_file(filename="idn.csv", data=data)

    assert contact_import.duplicates_merged == 1
    assert sorted(Profile.objects.values_list("email", flat=True)) == [
        "jörg@example.com",
        "kai@bücher.example.com",
    ]
    assert profile("jörg@example.com").traits == {"email_needs_smtputf8": True}
    assert profile("kai@bücher.example.com").traits == {}


ADDRESS_PART = st.text(alphabet='abcXYZ019._%+-ü"@ ', min_size=0, max_size=12)
DOMAINS = [
    "example.com",
    "Bücher.example.com",
    "xn--bcher-kva.example.com",
    "x",
    "a..b",
]


@given(local=ADDRESS_PART, domain=st.sampled_from(DOMAINS))
def test_the_fast_address_check_agrees_with_email_validator(local, domain):
    address = f"{local}@{domain}"

    def outcome(normalize):
        try:
            return normalize(address)
        except InvalidEmail as exc:
            return (exc.reason, exc.detail)

    # An import reads every address through the plain-address shortcut first.
    assert outcome(email_normalize) == outcome(
        lambda raw: _validated_address(raw.strip())
    )


# Declared traits and dates ----------------------------------------------------------


@pytest.mark.django_db
def test_declared_traits_are_stored_by_type_and_a_bad_value_loses_only_its_field():
    TraitDefinition.objects.create(name="orders", type=TraitType.NUMBER, minimum=0)
    TraitDefinition.objects.create(name="vip", type=TraitType.BOOLEAN)
    TraitDefinition.objects.create(name="joined", type=TraitType.DATE)
    contact_import = contact_import_create(
        filename="crm.csv",
        data=(
            b"email,first_name,orders,vip,joined\n"
            b"ann@example.com,Ann,12,yes,03/04/2024\n"
            b"bob@example.com,Bob,lots,no,31/12/2024\n"
            b"cy@example.com,Cy,-1,maybe,2024-12-31\n"
        ),
    )
    contact_import_map(
        contact_import_id=contact_import.pk,
        column_map={
            "email": "email",
            "first_name": "first_name",
            "orders": "traits.orders",
            "vip": "traits.vip",
            "joined": "traits.joined",
        },
        date_format="%d/%m/%Y",
    )

    contact_import = contact_import_run_stored(contact_import_id=contact_import.pk)

    assert (contact_import.accepted, contact_import.rejected) == (3, 0)
    assert profile("ann@example.com").traits == {
        "orders": 12,
        "vip": True,
        "joined": "2024-04-03",
    }
    bob = profile("bob@example.com")
    assert (bob.first_name, bob.traits) == (
        "Bob",
        {"vip": False, "joined": "2024-12-31"},
    )
    assert profile("cy@example.com").traits == {}
    refused = [
        (r["record"], r["line"], r["column"], r["reason"])
        for r in contact_import.rejections
    ]
    assert refused == [
        (2, 3, "orders", "not_a_number"),
        (3, 4, "orders", "below_minimum"),
        (3, 4, "vip", "not_a_boolean"),
        (3, 4, "joined", "not_a_date"),
    ]
    assert contact_import.rejections[0]["email"] == "bob@example.com"


@pytest.mark.django_db
def test_a_repeated_cell_is_read_once_but_judged_for_every_record():
    # Each distinct cell is coerced and split once per file; every record must
    # still get its own value, tag list and rejection.
    TraitDefinition.objects.create(name="orders", type=TraitType.NUMBER, minimum=0)
    TraitDefinition.objects.create(name="vip", type=TraitType.BOOLEAN)
    contact_import = contact_import_create(
        filename="repeats.csv",
        data=(
            b"email,orders,vip,tags\n"
            b'a@example.com,lots,1,"VIP,Club"\n'
            b'b@example.com,lots,1,"VIP,Club"\n'
            b"c@example.com,1,true,VIP\n"
            b"d@example.com,1.0,1,VIP\n"
        ),
    )
    contact_import_map(
        contact_import_id=contact_import.pk,
        column_map={
            "email": "email",
            "orders": "traits.orders",
            "vip": "traits.vip",
            "tags": "tags",
        },
        date_format="",
    )

    contact_import = contact_import_run_stored(contact_import_id=contact_import.pk)

    refused = [
        (r["record"], r["email"], r["reason"]) for r in contact_import.rejections
    ]
    assert refused == [
        (1, "a@example.com", "not_a_number"),
        (2, "b@example.com", "not_a_number"),
    ]
    assert profile("a@example.com").traits == {"vip": True}
    assert profile("c@example.com").traits == {"orders": 1, "vip": True}
    assert profile("d@example.com").traits == {"orders": 1, "vip": True}
    for email, tags in [("a@example.com", {"VIP", "Club"}), ("c@example.com", {"VIP"})]:
        names = profile(email).tags.values_list("name", flat=True)
        assert set(names) == tags


@pytest.mark.django_db
def test_the_column_map_renames_and_ignores_columns():
    contact_import = contact_import_create(
        filename="odd.csv",
        data=b"Mail,Given,Secret,Groups\npat@example.com,Pat,xyz,VIP\n",
    )
    contact_import_map(
        contact_import_id=contact_import.pk,
        column_map={
            "Mail": "email",
            "Given": "first_name",
            "Secret": "",
            "Groups": "tags",
        },
        date_format="",
    )

    contact_import_run_stored(contact_import_id=contact_import.pk)

    pat = profile("pat@example.com")
    assert (pat.first_name, pat.traits) == ("Pat", {})
    assert list(pat.tags.values_list("name", flat=True)) == ["VIP"]


# XLSX -------------------------------------------------------------------------------


NAIVE_CELL = datetime(2024, 5, 6, 7, 8, 9)  # noqa: DTZ001 - sheets hold naive times


@pytest.mark.django_db
def test_an_xlsx_sheet_imports_like_the_same_csv():
    TraitDefinition.objects.create(name="orders", type=TraitType.NUMBER)
    TraitDefinition.objects.create(name="joined", type=TraitType.DATE)
    data = xlsx_bytes(
        [
            ["Email", "First Name", "orders", "joined", "score", "Tags"],
            ["Ana@Example.com", "Ana", 12, date(2024, 4, 3), 2.5, "VIP, Club"],
            ["ben@example.net", "Ben", 3.0, NAIVE_CELL, None, None],
            ["not-an-email", "X", None, None, None, None],
        ]
    )

    contact_import = contact_import_file(filename="contacts.xlsx", data=data)

    assert contact_import.status == ImportStatus.DONE
    assert (contact_import.records, contact_import.rejected) == (3, 1)
    assert contact_import.rejections[0]["line"] == 4
    assert profile("ana@example.com").traits == {
        "orders": 12,
        "joined": "2024-04-03",
        "score": "2.5",
    }
    assert profile("ben@example.net").traits == {"orders": 3, "joined": "2024-05-06"}
    assert list(profile("ana@example.com").tags.values_list("name", flat=True)) == [
        "VIP",
        "Club",
    ]


@pytest.mark.django_db  # the default map asks which traits are declared
def test_the_preview_gives_each_column_a_sample_and_the_layout_default():
    preview = contacts_preview(KLAVIYO.encode())

    assert preview.layout.name == "klaviyo"
    assert preview.samples[:3] == ["ana@example.com", "Ana", "Souza"]
    assert preview.column_map["Email Marketing Consent"] == "status"
    assert preview.column_map["State / Region"] == "region"
    assert preview.column_map["List"] == "tags"


# Progress, the sweep and the pages ----------------------------------------------------


@pytest.mark.django_db
def test_a_stuck_import_is_marked_failed_with_an_error_naming_it(var_dir):
    contact_import = contact_import_create(filename="big.csv", data=b"email\n")
    long_ago = datetime.now(tz=UTC) - timedelta(hours=1)
    ContactImport.objects.filter(pk=contact_import.pk).update(
        status=ImportStatus.RUNNING,
        started_at=long_ago,
        rows_done=4000,
        rows_total=9000,
    )
    for path in (var_dir / "imports").iterdir():
        stamp = long_ago.timestamp()
        os.utime(path, (stamp, stamp))
    fresh = contact_import_create(filename="fresh.csv", data=b"email\n")
    ContactImport.objects.filter(pk=fresh.pk).update(
        status=ImportStatus.RUNNING, started_at=long_ago
    )

    assert contact_imports_sweep() == 1

    contact_import.refresh_from_db()
    assert contact_import.status == ImportStatus.FAILED
    assert contact_import.error == (
        f"Import {contact_import.pk} (big.csv) stopped: its worker made no progress "
        "for 15 minutes. 4000 of 9000 rows were written; run it again to continue "
        "from there."
    )
    fresh.refresh_from_db()
    assert fresh.status == ImportStatus.RUNNING


@pytest.mark.django_db
def test_the_progress_endpoint_reports_rows_written(client, marketer):
    client.force_login(marketer)
    contact_import = contact_import_create(filename="big.csv", data=b"email\n")
    ContactImport.objects.filter(pk=contact_import.pk).update(
        status=ImportStatus.RUNNING, rows_done=2000, rows_total=8000
    )

    response = client.get(reverse("import_progress", kwargs={"pk": contact_import.pk}))

    assert response.json() == {
        "status": "running",
        "status_label": "Running",
        "rows_done": 2000,
        "rows_total": 8000,
        "percent": 25,
        "records": 0,
        "rejected": 0,
        "error": "",
        # Not started yet by a worker: no progress to measure the idle time from.
        "idle_seconds": None,
    }
    page = client.get(reverse("import_detail", kwargs={"pk": contact_import.pk}))
    assert '<progress max="100" value="25">' in page.content.decode()


@pytest.mark.django_db
def test_the_import_page_says_when_a_running_import_made_no_progress(
    client, marketer, var_dir
):
    client.force_login(marketer)
    contact_import = contact_import_create(filename="big.csv", data=b"email\n")
    long_ago = datetime.now(tz=UTC) - timedelta(minutes=5)
    ContactImport.objects.filter(pk=contact_import.pk).update(
        status=ImportStatus.RUNNING, started_at=long_ago, rows_done=10, rows_total=90
    )
    for path in (var_dir / "imports").iterdir():
        os.utime(path, (long_ago.timestamp(), long_ago.timestamp()))

    progress = client.get(reverse("import_progress", kwargs={"pk": contact_import.pk}))
    page = client.get(reverse("import_detail", kwargs={"pk": contact_import.pk}))

    assert 299 <= progress.json()["idle_seconds"] <= 310
    assert "No progress for 30" in page.content.decode()
    assert "marked failed after 15 minutes without progress" in page.content.decode()


@pytest.mark.django_db
def test_the_mapping_page_refuses_a_map_without_an_email_column(client, marketer):
    client.force_login(marketer)
    contact_import = contact_import_create(filename="k.csv", data=KLAVIYO.encode())
    url = reverse("import_mapping", kwargs={"pk": contact_import.pk})

    page = client.get(url).content.decode()
    response = client.post(url, {"column_0": "", "column_1": "first_name"})

    assert "Klaviyo profile export" in page
    assert "ana@example.com" in page
    assert (
        "Choose exactly one column as the email address." in response.content.decode()
    )
    contact_import.refresh_from_db()
    assert contact_import.column_map == {}
    assert Profile.objects.count() == 0
    assert ConsentRecord.objects.count() == 0


@pytest.mark.django_db
def test_a_huge_workbook_number_is_refused_with_a_short_message():
    TraitDefinition.objects.create(name="spend", type=TraitType.NUMBER)
    data = xlsx_bytes([["Email", "Spend"], ["huge@example.com", 1e300]])

    contact_import = contact_import_file(filename="huge.xlsx", data=data)

    assert contact_import.status == ImportStatus.DONE
    [rejection] = contact_import.rejections
    assert rejection["reason"] == "number_too_large"
    # Read as Excel shows it, with no digit a float invents past the 15th.
    assert rejection["message"] == (
        "Spend: '1e+300' is out of range (a number may have at most 15 digits before "
        "the decimal point, whether positive or negative); the rest of the row was "
        "imported."
    )
    assert profile("huge@example.com").traits == {}


@pytest.mark.django_db
def test_uploads_left_unused_for_a_week_are_deleted_and_their_imports_say_so(var_dir):
    unmapped = contact_import_create(filename="old.csv", data=b"email\na@x.example\n")
    recent = contact_import_create(filename="new.csv", data=b"email\nb@x.example\n")
    failed = contact_import_create(filename="bad.csv", data=b"email\nc@x.example\n")
    week_ago = datetime.now(tz=UTC) - timedelta(days=8)
    ContactImport.objects.filter(pk=unmapped.pk).update(created_at=week_ago)
    ContactImport.objects.filter(pk=failed.pk).update(
        status=ImportStatus.FAILED, finished_at=week_ago, error="It broke."
    )

    assert contact_import_uploads_purge() == 2

    assert not contact_import_upload_path(unmapped).exists()
    assert not contact_import_upload_path(failed).exists()
    assert contact_import_upload_path(recent).exists()
    unmapped.refresh_from_db()
    failed.refresh_from_db()
    assert unmapped.status == ImportStatus.FAILED
    assert unmapped.error.startswith("The uploaded file was deleted 7 days after")
    assert failed.error.startswith("It broke. The uploaded file was deleted")
    assert contact_import_uploads_purge() == 0
