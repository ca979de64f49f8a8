"""QA pass qa23: what a privacy admin and the engineer running Bespoke are told.

Each test says what happens now in its docstring; each fails until it is fixed.
"""

import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import IntegrityError
from django.urls import reverse
from django.utils import timezone

from campaigns.tasks import esp_events_sweep_task
from profiles.importing import (
    contact_import_create,
    contact_import_file,
    contact_import_retry,
    contact_import_run_stored,
    runs,
)
from profiles.importing.runs import contact_import_upload_path, contact_imports_sweep
from profiles.models import ContactImport, ImportStatus, Profile, SubscriptionStatus
from profiles.processing import events_process_pending
from profiles.services import consent_record
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


@pytest.fixture
def mailgun(settings, load_fixture, client):
    """Post a Mailgun fixture with its recorded headers, as Mailgun would."""
    headers_file = load_fixture("anymail/mailgun/webhook_headers.json", as_json=True)
    settings.ANYMAIL = {
        "WEBHOOK_SECRET": "fixtureuser:fixture-webhook-password",
        "MAILGUN_WEBHOOK_SIGNING_KEY": headers_file["webhook_signing_key"],
    }
    headers = dict(headers_file["common_headers"])
    headers.pop("Content-Type")

    def send(name: str):
        response = client.post(
            "/anymail/mailgun/tracking/",
            data=load_fixture(f"anymail/mailgun/{name}"),
            content_type="application/json",
            headers=headers,
        )
        assert response.status_code == 200, response.content
        esp_events_sweep_task()
        events_process_pending()

    return send


def suppression_cell(page: str) -> str:
    return re.search(r"<td data-suppression>(.*?)</td>", page, re.S).group(1)


# Why a person is not emailed, on their profile page ---------------------------------


def test_a_spam_complaint_is_named_where_the_profile_page_says_suppressed(
    signed_in, mailgun, load_fixture
):
    """Emma subscribed in 2023 and marked a message as spam at Mailgun in March
    2025. Her page's status still reads "Subscribed, as of Oct. 10, 2023 (the
    latest consent fact)", her consent history holds only the subscription, and
    the Suppressed row says only "Yes" with a banner "This address is on the
    suppression list". Why (a spam complaint), from where (esp:mailgun) and when
    are on the admin's suppression list alone, which keeps no address, only a
    hash: a privacy admin cannot tell from anything Bespoke shows which of its
    rows is Emma's. The page should name the reason next to "Yes"."""
    contact_import_file(
        filename="subscribed_members_export.csv",
        data=load_fixture("mailchimp/subscribed_members_export.csv"),
    )
    mailgun("complained.json")
    emma = Profile.objects.get(email="emma.davis@example.org")
    assert emma.suppressed_at is not None

    page = signed_in.get(reverse("profile_detail", kwargs={"pk": emma.pk})).text

    assert "complaint" in suppression_cell(page).lower()


# What a merge does to consent, said before it is done ------------------------------


def test_the_merge_preview_says_the_kept_profile_will_be_unsubscribed(signed_in):
    """Mia is subscribed (2024). Her second profile, whose address the admin
    cleared so that the two can be merged, unsubscribed in 2025. The merge page
    says which profile is kept and lists the values it takes ("Phone"), "before
    anything changes"; it does not say that Mia's kept profile will be
    unsubscribed, which is what the merge then does (merge_withdrawal_carried): the
    one change a privacy admin most needs to see is shown only afterwards."""
    mia = ProfileFactory(email="mia@example.com", first_name="Mia")
    consent_record(
        profile=mia,
        status=SubscriptionStatus.SUBSCRIBED,
        source="import:mailchimp",
        occurred_at=datetime(2024, 2, 29, tzinfo=UTC),
    )
    other = ProfileFactory(email="mia.work@example.com", first_name="Mia")
    consent_record(
        profile=other,
        status=SubscriptionStatus.UNSUBSCRIBED,
        source="esp:mailgun",
        occurred_at=datetime(2025, 3, 15, tzinfo=UTC),
    )
    Profile.objects.filter(pk=other.pk).update(email=None)
    url = reverse("profile_merge", kwargs={"pk": mia.pk})

    preview = signed_in.get(url, {"other": str(other.pk)}).text
    signed_in.post(url, {"other": str(other.pk)})

    mia.refresh_from_db()
    assert mia.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    summary = preview[preview.index("data-merge-summary") :]
    summary = summary[: summary.index("data-merge-confirm")]
    assert "unsubscribed" in summary.lower()


# An import whose worker died, run again --------------------------------------------


def first_run_stops(monkeypatch, stop: Exception) -> tuple[ContactImport, Any]:
    """Run an import of 30 rows in batches of 10 that stops on its second batch.

    Return the import and the real batch writer, to put back for the next run.
    """
    monkeypatch.setattr(runs, "IMPORT_BATCH_SIZE", 10)
    real_write = runs.contact_rows_write
    calls: list[int] = []

    def stops_in_second_batch(rows, **kwargs):
        calls.append(len(rows))
        if len(calls) == 2:
            raise stop
        return real_write(rows, **kwargs)

    monkeypatch.setattr(runs, "contact_rows_write", stops_in_second_batch)
    rows = "".join(f"p{n}@example.com,yes\n" for n in range(30))
    contact_import = contact_import_create(
        filename="big.csv", data=f"Email,Subscribed\n{rows}".encode()
    )
    with pytest.raises(type(stop)):
        contact_import_run_stored(contact_import_id=contact_import.pk)
    return contact_import, real_write


def test_an_import_run_again_after_its_worker_died_still_says_so_when_done(
    monkeypatch, signed_in
):
    """A worker killed half-way through an import (kill -9, 100,000 of 199,996
    rows written) leaves it running; the beat sweep marks it failed 15 minutes
    later ("stopped: its worker made no progress for 15 minutes. 100000 of
    199996 rows were written"), and "Run it again from row 100001" finishes it
    with the right counts. The finished import's page and its CSV report then
    say nothing of it: contact_import_retry clears the error and no note is
    kept, so the report reads as one clean run, and nobody reading it later can
    tell that its rows were written by two runs a quarter of an hour apart (a
    row's consent recorded at two different times)."""
    contact_import, real_write = first_run_stops(
        monkeypatch, IntegrityError("worker killed")
    )
    # A killed worker leaves the import running, and its upload untouched since.
    long_ago = timezone.now() - timedelta(hours=1)
    ContactImport.objects.filter(pk=contact_import.pk).update(
        status=ImportStatus.RUNNING, error="", finished_at=None, started_at=long_ago
    )
    stamp = long_ago.timestamp()
    os.utime(contact_import_upload_path(contact_import), (stamp, stamp))
    assert contact_imports_sweep() == 1
    monkeypatch.setattr(runs, "contact_rows_write", real_write)
    assert contact_import_retry(contact_import_id=contact_import.pk)
    contact_import_run_stored(contact_import_id=contact_import.pk)

    contact_import.refresh_from_db()
    assert contact_import.status == ImportStatus.DONE
    assert Profile.objects.count() == 30
    url = reverse("import_detail", kwargs={"pk": contact_import.pk})
    page = signed_in.get(url).text
    assert "stopped" in page


def test_the_run_again_note_says_when_how_far_the_first_run_went_and_why(
    monkeypatch, signed_in
):
    contact_import, real_write = first_run_stops(monkeypatch, ValueError("disk full"))
    contact_import.refresh_from_db()
    assert contact_import.status == ImportStatus.FAILED
    error = contact_import.error
    monkeypatch.setattr(runs, "contact_rows_write", real_write)

    assert contact_import_retry(contact_import_id=contact_import.pk)
    contact_import_run_stored(contact_import_id=contact_import.pk)

    contact_import.refresh_from_db()
    (note,) = [n for n in contact_import.notes if n["kind"] == "run_again"]
    assert note["message"].startswith("Run again on ")
    # The error as it was, less its advice to run it again, which was followed.
    assert error.endswith(
        "10 of 30 rows were written; run it again to continue from there."
    )
    assert note["message"].endswith(
        ", after it stopped with 10 of 30 rows written: The import stopped on an "
        "error: disk full. 10 of 30 rows were written."
    )
    report = signed_in.get(
        reverse("import_rejections_csv", kwargs={"pk": contact_import.pk})
    ).content.decode()
    assert "after it stopped with 10 of 30 rows written" in report
