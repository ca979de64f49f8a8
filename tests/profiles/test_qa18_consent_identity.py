"""QA pass qa18: faults found in an import's consent rules (identity merges held).

Each test says what happens now in its docstring; each fails until it is fixed.
"""

from datetime import UTC, datetime

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from profiles.importing import contact_import_file, runs
from profiles.models import ConsentRecord, ContactImport, Profile, SubscriptionStatus
from profiles.services import consent_record
from tests.factories import ProfileFactory
from tests.profiles.test_import_consent import export_with_column
from tests.profiles.test_import_reading_files import run_mapped

pytestmark = pytest.mark.django_db

CHANGED_AT_MAP = {"Email": "email", "Status": "status", "Updated": "changed_at"}


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


@pytest.fixture(params=["orm", "copy"])
def write_path(request, monkeypatch):
    """Both ways of writing a batch decide consent alike."""
    monkeypatch.setattr(runs, "COPY_MIN_ROWS", 0 if request.param == "copy" else 10**9)
    return request.param


# A status column's "pending" and a yes/no column side by side ---------------------

PENDING_BESIDE_A_YES = {
    # A CRM's export: its double opt-in not confirmed, its opt-in box ticked.
    "opt_in_column": (
        b"Email,Status,Accepts Email Marketing\npia@example.com,pending,yes\n"
    ),
    # A Brevo export with a status column added: not blacklisted, not confirmed.
    "brevo_blacklist": (
        b"EMAIL;STATUS;EMAIL_BLACKLISTED;MODIFIED_TIME\n"
        b"pia@example.com;pending;No;2025-01-10 09:00:00\n"
    ),
}


@pytest.mark.parametrize(
    "data", PENDING_BESIDE_A_YES.values(), ids=PENDING_BESIDE_A_YES
)
def test_a_pending_status_gives_no_consent_whatever_another_column_says(
    write_path, data
):
    """A row whose status is "pending" (asked, not confirmed) is imported without
    consent, and the report says "the contact has none". With an opt-in column
    saying yes, or Brevo's EMAIL_BLACKLISTED saying no, beside it, the profile is
    subscribed and a subscription is recorded all the same: mapping.py's
    _consents_read sets the status to None for "pending" and then takes the other
    column's word. Only a withdrawal (unsubscribed: yes) should outrank "pending"."""
    contact_import = contact_import_file(filename="pending.csv", data=data)

    note = next(n for n in contact_import.notes if n["kind"] == "ignored_value")
    assert "the contact has none" in note["message"]
    pia = Profile.objects.get(email="pia@example.com")
    assert pia.subscription_status == SubscriptionStatus.NOT_SUBSCRIBED
    assert not ConsentRecord.objects.exists()


# A consent column mapped on a Mailchimp export -------------------------------------


def test_an_opt_out_column_on_a_mailchimp_export_is_dated_by_the_import(
    write_path, load_fixture
):
    """Kenji subscribed in the shop in January 2025. The marketer adds an "opted
    out" column to a Mailchimp subscribed export and maps it, as the mapping page
    offers; Kenji's row says yes. layout_with_status_column says the mapped
    column's word is undated ("the export's times belong to its status") and
    blanks the layout's change time, but column_plan_build has already taken
    LAST_CHANGED as the row's change time, which now dates consent: the opt-out
    is recorded as of 2024-11-11 (when Mailchimp last changed the subscription),
    under the shop's later subscription, and Kenji stays subscribed. Before
    commit 03a09c0 it was dated by the import and applied. The record's wording
    also says LAST_CHANGED was "mapped as each row's change time": it was mapped
    as a trait."""
    kenji = ProfileFactory(email="kenji.sato@example.net")
    consent_record(
        profile=kenji,
        status=SubscriptionStatus.SUBSCRIBED,
        source="shopify",
        occurred_at=datetime(2025, 1, 15, tzinfo=UTC),
    )
    data = load_fixture("mailchimp/subscribed_members_export.csv")

    export_with_column(data, target="unsubscribed", words=lambda n: "yes")

    kenji.refresh_from_db()
    assert kenji.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    opt_out = kenji.consent_records.get(status=SubscriptionStatus.UNSUBSCRIBED)
    assert opt_out.evidence.get("occurred_at_is_import_time") is True
    assert "mapped as each row's change time" not in opt_out.wording


# A change time that the date format does not read ----------------------------------


def test_a_change_time_the_date_format_cannot_read_is_said_before_starting(
    signed_in,
):
    """A "Last changed" column now dates each row's consent. Mapped with the
    default date format (ISO 8601), "31/03/2025" reads as no time: the import
    starts at once, records every fact as of the import, and only its report says
    "choose the date format the file writes, and import it again" (which speaks
    of duplicate rows only). Imported again so, each fact is recorded a second
    time, dated, while an unsubscribe's status stays dated by the first import:
    what an append-only history cannot take back must be said before it starts,
    as the page does for a consent column of no consent words."""
    upload = SimpleUploadedFile(
        "crm.csv",
        b"Email,Status,Updated\nwes@example.com,unsubscribed,31/03/2025\n",
        content_type="text/csv",
    )
    url = signed_in.post(reverse("import_list"), {"file": upload}).url
    form = signed_in.get(url).context["form"]
    data = {name: form[name].initial or "" for name in form.fields}
    updated = next(n for n in form.fields if form[n].label == "Updated")

    started = signed_in.post(url, {**data, updated: "changed_at", "date_format": ""})

    assert started.status_code == 200
    assert "31/03/2025" in started.content.decode()
    assert ContactImport.objects.get().queued_at is None


# The consent history as the profile page shows it ----------------------------------


def test_the_profile_page_shows_the_change_time_evidence_as_written(signed_in):
    """The record keeps the column and its time as written under
    dated_by_row_changed, as {column: time}; the consent history prints the
    dict's Python repr, {'Updated': '31/03/2025'}, to the privacy admin reading
    the proof, where every other piece of evidence reads as written."""
    data = b"Email,Status,Updated\nvi@example.com,subscribed,31/03/2025\n"
    run_mapped(data, CHANGED_AT_MAP, "%d/%m/%Y")
    profile = Profile.objects.get()

    page = signed_in.get(reverse("profile_detail", kwargs={"pk": profile.pk}))

    html = page.content.decode()
    assert "31/03/2025" in html
    assert "{&#x27;Updated&#x27;" not in html
