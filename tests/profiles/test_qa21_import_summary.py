"""QA pass qa21: an address's newest "no", the statuses an import leaves its
profiles with, the consent history's evidence and an import's page before it is
read."""

import re

import pytest
from django.db import IntegrityError
from django.urls import reverse

from profiles.importing import (
    contact_import_create,
    contact_import_file,
    contact_import_retry,
    contact_import_run_stored,
    runs,
)
from profiles.models import (
    ConsentRecord,
    ContactImport,
    ImportStatus,
    Profile,
    Suppression,
    SuppressionReason,
    TraitDefinition,
    TraitType,
)
from profiles.services import suppression_hash

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def status_of(email: str) -> str:
    return Profile.objects.get(email__iexact=email).subscription_status


def page_of(client, contact_import: ContactImport) -> str:
    url = reverse("import_detail", kwargs={"pk": contact_import.pk})
    return client.get(url).content.decode()


def batches_failing(monkeypatch, *failing: int):
    """Write batches of 10 rows; the `failing` calls raise after writing."""
    monkeypatch.setattr(runs, "IMPORT_BATCH_SIZE", 10)
    real_write = runs.contact_rows_write
    calls: list[int] = []

    def failing_write(rows, **kwargs):
        calls.append(len(rows))
        written = real_write(rows, **kwargs)
        if len(calls) in failing:
            raise IntegrityError("simulated failure")
        return written

    monkeypatch.setattr(runs, "contact_rows_write", failing_write)
    return real_write


def thirty_subscribed() -> bytes:
    rows = "".join(f"p{n}@example.com,subscribed,{n}\n" for n in range(30))
    return f"Email,Status,Points\n{rows}".encode()


# Status counts ----------------------------------------------------------------------


def test_a_restarted_retry_that_stops_again_counts_each_profile_once(monkeypatch):
    TraitDefinition.objects.create(name="points", type=TraitType.NUMBER, maximum=10)
    real_write = batches_failing(monkeypatch, 3)
    contact_import = contact_import_create(filename="s.csv", data=thirty_subscribed())
    with pytest.raises(IntegrityError):
        contact_import_run_stored(contact_import_id=contact_import.pk)
    contact_import.refresh_from_db()
    assert contact_import.rows_done == 20

    # The rules change: the retry runs the whole file again, and stops in its
    # second batch, which the first run had counted already.
    TraitDefinition.objects.filter(name="points").update(maximum=100)
    batches_failing(monkeypatch, 2)
    contact_import_retry(contact_import_id=contact_import.pk)
    with pytest.raises(IntegrityError):
        contact_import_run_stored(contact_import_id=contact_import.pk)
    monkeypatch.setattr(runs, "contact_rows_write", real_write)
    contact_import_retry(contact_import_id=contact_import.pk)
    contact_import_run_stored(contact_import_id=contact_import.pk)

    contact_import.refresh_from_db()
    assert contact_import.status == ImportStatus.DONE
    assert Profile.objects.count() == 30
    assert contact_import.status_counts == {"subscribed": 30}


def test_a_suppressed_profile_is_not_counted_as_one_campaigns_are_sent(signed_in):
    Suppression.objects.create(
        email_hash=suppression_hash("bounced@example.com"),
        reason=SuppressionReason.HARD_BOUNCE,
        source="esp",
    )
    data = b"Email,Status\nbounced@example.com,subscribed\nann@example.com,subscribed\n"

    contact_import = contact_import_file(filename="crm.csv", data=data)

    assert Profile.objects.get(email="bounced@example.com").suppressed_at
    page = page_of(signed_in, contact_import)
    assert "2 subscribed. Only those subscribed are sent campaigns." not in page


# The page before the file is read ---------------------------------------------------


def test_a_retry_waiting_in_the_queue_still_shows_what_its_first_run_wrote(
    monkeypatch, signed_in
):
    batches_failing(monkeypatch, 2)
    contact_import = contact_import_create(filename="s.csv", data=thirty_subscribed())
    with pytest.raises(IntegrityError):
        contact_import_run_stored(contact_import_id=contact_import.pk)
    assert contact_import_retry(contact_import_id=contact_import.pk)

    contact_import.refresh_from_db()
    assert contact_import.rows_done == 10
    page = page_of(signed_in, contact_import)
    assert "No row has been read yet" not in page


def test_a_file_refused_unread_shows_no_counts(signed_in):
    contact_import = contact_import_file(filename="nul.csv", data=b"Email\n\x00\x00\n")

    assert contact_import.status == ImportStatus.FAILED
    page = page_of(signed_in, contact_import)
    assert "No row was rejected." not in page


# Consent history ---------------------------------------------------------------------


def consents_table(client, email: str) -> str:
    profile = Profile.objects.get(email=email)
    response = client.get(reverse("profile_detail", kwargs={"pk": profile.pk}))
    html = response.content.decode()
    return re.search(r'<table class="consents">.*?</table>', html, re.S).group(0)


def test_each_which_said_follows_the_column_it_quotes():
    data = b"Email,Newsletter,Last Modified\nann@example.com,yes,2025-01-01 09:00\n"

    contact_import_file(filename="crm.csv", data=data)

    labels = [label for label, _ in ConsentRecord.objects.get().evidence_shown]
    # "Which said" quotes the cell of the column named just before it.
    assert labels.index("Read from column") + 1 == labels.index("Which said")
    said = [n for n, label in enumerate(labels) if label == "Which said"]
    assert labels[said[1] - 1] == "Dated by column"


def test_a_future_change_time_is_shown_once(signed_in):
    data = b"Email,Newsletter,Last Modified\nann@example.com,yes,2099-01-01 09:00\n"

    contact_import_file(filename="crm.csv", data=data)

    table = consents_table(signed_in, "ann@example.com")
    assert table.count("2099") == 1
