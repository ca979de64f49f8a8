"""A file is taken for an ESP's export only when it has that export's own columns,
and a status column the marketer maps is read row by row whatever the layout."""

import pytest

from profiles.importing import (
    contact_import_create,
    contact_import_map,
    contact_import_run_stored,
)
from profiles.importing.layouts import layout_detect
from profiles.models import Profile, SubscriptionStatus

CRM = (
    b"Email,First Name,Status,Last Changed\n"
    b"ana@example.com,Ana,subscribed,2025-01-02 10:00:00\n"
    b"ben@example.com,Ben,unsubscribed,2025-01-03 10:00:00\n"
    b"cid@example.com,Cid,cleaned,2025-01-04 10:00:00\n"
)
MAILCHIMP_WITH_STATUS = (
    b'"Email Address","First Name",Status,MEMBER_RATING,OPTIN_TIME,CONFIRM_TIME,'
    b"LAST_CHANGED,LEID,EUID\n"
    b"ana@example.com,Ana,subscribed,3,2024-01-01 10:00:00,2024-01-01 10:01:00,"
    b"2025-01-02 10:00:00,1,a1\n"
    b"ben@example.com,Ben,unsubscribed,3,2024-01-01 10:00:00,2024-01-01 10:01:00,"
    b"2025-01-03 10:00:00,2,b2\n"
)


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


@pytest.mark.parametrize(
    "header",
    [
        "Email,First Name,Status,Last Changed",
        "Email,Name,Unsub Time",
        "Email,Clean Time,Notes",
        "Email,Name,Modified Time",
        "Email,Added Time,Company",
    ],
)
def test_one_column_named_like_an_exports_does_not_make_the_file_that_export(header):
    assert layout_detect(header.split(",")).name == "generic"


@pytest.mark.parametrize(
    ("header", "layout"),
    [
        (
            "Email Address,MEMBER_RATING,OPTIN_TIME,CONFIRM_TIME,LAST_CHANGED,LEID,EUID",
            "mailchimp_subscribed",
        ),
        (
            "Email Address,MEMBER_RATING,OPTIN_TIME,UNSUB_TIME,LEID,EUID",
            "mailchimp_unsubscribed",
        ),
        (
            "Email Address,MEMBER_RATING,CONFIRM_TIME,CLEAN_TIME,LEID,EUID",
            "mailchimp_cleaned",
        ),
        ("EMAIL,PRENOM,EMAIL_BLACKLISTED", "brevo"),
        ("EMAIL,DOUBLE_OPT-IN,OPT_IN,ADDED_TIME", "brevo"),
        ("Email,Klaviyo ID", "klaviyo"),
    ],
)
def test_an_exports_own_columns_are_recognised(header, layout):
    assert layout_detect(header.split(",")).name == layout


def run(data: bytes, column_map: dict[str, str]):
    contact_import = contact_import_create(filename="list.csv", data=data)
    contact_import_map(
        contact_import_id=contact_import.pk, column_map=column_map, date_format=""
    )
    return contact_import_run_stored(contact_import_id=contact_import.pk)


def status_of(email: str) -> str:
    return Profile.objects.get(email=email).subscription_status


@pytest.mark.django_db
def test_a_crm_file_with_a_last_changed_column_is_read_by_its_status_column():
    done = run(
        CRM,
        {
            "Email": "email",
            "First Name": "first_name",
            "Status": "status",
            "Last Changed": "traits.last_changed",
        },
    )

    assert done.layout == "generic"
    assert status_of("ana@example.com") == SubscriptionStatus.SUBSCRIBED
    assert status_of("ben@example.com") == SubscriptionStatus.UNSUBSCRIBED
    assert status_of("cid@example.com") == SubscriptionStatus.CLEANED


@pytest.mark.django_db
def test_a_status_column_mapped_in_a_mailchimp_export_decides_each_rows_status():
    done = run(
        MAILCHIMP_WITH_STATUS,
        {
            "Email Address": "email",
            "First Name": "first_name",
            "Status": "status",
            "MEMBER_RATING": "traits.member_rating",
            "OPTIN_TIME": "",
            "CONFIRM_TIME": "",
            "LAST_CHANGED": "",
            "LEID": "",
            "EUID": "",
        },
    )

    assert done.error == ""
    assert status_of("ana@example.com") == SubscriptionStatus.SUBSCRIBED
    assert status_of("ben@example.com") == SubscriptionStatus.UNSUBSCRIBED
    record = Profile.objects.get(email="ben@example.com").consent_records.get()
    assert record.status == SubscriptionStatus.UNSUBSCRIBED
    assert "Mailchimp audience export (subscribed)" not in record.wording
    assert "unsubscribed" in record.wording
    assert any(
        note.get("kind") == "status_column" and note.get("column") == "Status"
        for note in done.notes
    )


EXCEL_RESAVED = (
    b"Email Address,First Name,MEMBER_RATING,OPTIN_TIME,CONFIRM_TIME,UNSUB_TIME,"
    b"UNSUB_CAMPAIGN_TITLE,LEID,EUID\n"
    b"grace@example.com,Grace,2,,20/08/2024 14:01,15/01/2025 10:22,January,1,a\n"
    b"dmitri@example.com,Dmitri,2,,23/03/2024 10:50,03/12/2024 08:15:30,Preview,2,b\n"
)


@pytest.mark.django_db
def test_an_export_saved_again_by_excel_keeps_its_times_in_the_declared_format(
    settings,
):
    from datetime import UTC, datetime

    settings.BESPOKE_IMPORT_TIME_ZONE = "UTC"
    contact_import = contact_import_create(filename="unsub.csv", data=EXCEL_RESAVED)
    from profiles.models import ContactImport

    ContactImport.objects.filter(pk=contact_import.pk).update(date_format="%d/%m/%Y")

    done = contact_import_run_stored(contact_import_id=contact_import.pk)

    assert done.layout == "mailchimp_unsubscribed"
    assert not [n for n in done.notes if n.get("kind") == "ignored_value"]
    grace = Profile.objects.get(email="grace@example.com")
    assert grace.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert grace.subscription_changed_at == datetime(2025, 1, 15, 10, 22, tzinfo=UTC)
    dmitri = Profile.objects.get(email="dmitri@example.com")
    assert dmitri.subscription_changed_at == datetime(
        2024, 12, 3, 8, 15, 30, tzinfo=UTC
    )
    assert dmitri.traits["confirm_at"] == "2024-03-23T10:50:00+00:00"


@pytest.mark.django_db
def test_naive_times_of_one_file_are_all_in_the_import_time_zone(settings):
    from datetime import UTC, datetime

    from profiles.models import ContactImport, TraitDefinition, TraitType

    settings.BESPOKE_IMPORT_TIME_ZONE = "America/Sao_Paulo"
    TraitDefinition.objects.create(name="visit_at", type=TraitType.DATETIME)
    data = (
        b"Email Address,MEMBER_RATING,OPTIN_TIME,CONFIRM_TIME,LAST_CHANGED,LEID,"
        b"EUID,Visit At\n"
        b"ana@example.com,2,31/03/2025 14:05,31/03/2025 14:05,31/03/2025 14:05,1,a,"
        b"31/03/2025 14:05\n"
    )
    contact_import = contact_import_create(filename="tz.csv", data=data)
    ContactImport.objects.filter(pk=contact_import.pk).update(
        date_format="%d/%m/%Y",
        column_map={
            "Email Address": "email",
            "MEMBER_RATING": "",
            "OPTIN_TIME": "",
            "CONFIRM_TIME": "",
            "LAST_CHANGED": "",
            "LEID": "",
            "EUID": "",
            "Visit At": "traits.visit_at",
        },
    )

    contact_import_run_stored(contact_import_id=contact_import.pk)

    ana = Profile.objects.get()
    assert ana.traits["visit_at"] == "2025-03-31T17:05:00+00:00"
    assert ana.consent_records.get().occurred_at == datetime(
        2025, 3, 31, 17, 5, tzinfo=UTC
    )
