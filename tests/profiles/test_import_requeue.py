"""An import handed to the workers whose task was lost is queued again by the sweep.

A broker that restarted, or a worker that failed before it began, loses the task;
the import would wait, "queued", for ever.
"""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from profiles.importing import (
    contact_import_create,
    contact_import_map,
    contact_import_run_stored,
    contact_import_upload_path,
    contact_imports_requeue,
    runs,
)
from profiles.models import ContactImport, ImportStatus, Profile
from profiles.tasks import contact_imports_sweep_task
from tests.conftest import wait_for

CSV = b"Email,First name\nann@example.com,Ann\nbob@example.com,Bob\n"
LONG_AGO = timedelta(minutes=11)


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


def handed_over(*, ago: timedelta = LONG_AGO) -> ContactImport:
    """An import mapped and queued `ago`, whose task never reached a worker."""
    contact_import = contact_import_create(filename="crm.csv", data=CSV)
    contact_import_map(
        contact_import_id=contact_import.pk,
        column_map={"Email": "email", "First name": "first_name"},
        date_format="",
    )
    ContactImport.objects.filter(pk=contact_import.pk).update(
        queued_at=timezone.now() - ago
    )
    return contact_import


@pytest.mark.django_db
def test_only_imports_waiting_past_the_period_are_queued_again():
    lost = handed_over()
    handed_over(ago=timedelta(minutes=2))  # its worker may still be busy
    unmapped = contact_import_create(filename="later.csv", data=CSV)
    ContactImport.objects.filter(pk=unmapped.pk).update(
        created_at=timezone.now() - LONG_AGO
    )
    running = handed_over()
    ContactImport.objects.filter(pk=running.pk).update(status=ImportStatus.RUNNING)

    assert contact_imports_requeue() == [lost.pk]


@pytest.mark.django_db
def test_an_import_is_queued_again_at_most_once_a_period():
    lost = handed_over()

    assert contact_imports_requeue() == [lost.pk]
    assert contact_imports_requeue() == []

    ContactImport.objects.filter(pk=lost.pk).update(
        requeued_at=timezone.now() - LONG_AGO
    )
    assert contact_imports_requeue() == [lost.pk]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_beat_sweep_has_a_real_worker_run_a_lost_import(celery_worker_own_queue):
    lost = handed_over()

    contact_imports_sweep_task.delay()

    def done() -> bool:
        lost.refresh_from_db()
        return lost.status == ImportStatus.DONE

    assert wait_for(done), f"the import is {lost.status}"
    assert sorted(Profile.objects.values_list("first_name", flat=True)) == [
        "Ann",
        "Bob",
    ]


@pytest.mark.django_db
def test_a_second_task_for_an_import_leaves_its_file_to_the_run_that_has_it():
    contact_import = handed_over()
    ContactImport.objects.filter(pk=contact_import.pk).update(
        status=ImportStatus.RUNNING, started_at=timezone.now()
    )
    path = contact_import_upload_path(contact_import)

    contact_import_run_stored(contact_import_id=contact_import.pk)

    assert path.exists()
    contact_import.refresh_from_db()
    assert contact_import.status == ImportStatus.RUNNING


@pytest.mark.django_db
def test_a_task_racing_another_workers_claim_never_deletes_a_running_imports_file(
    monkeypatch,
):
    # The other worker claims the import just as this task looks for its file.
    contact_import = handed_over()
    path_of = runs.contact_import_upload_path

    def claimed_meanwhile(of: ContactImport):
        ContactImport.objects.filter(pk=of.pk, status=ImportStatus.PENDING).update(
            status=ImportStatus.RUNNING, started_at=timezone.now()
        )
        return path_of(of)

    monkeypatch.setattr(runs, "contact_import_upload_path", claimed_meanwhile)
    path = path_of(contact_import)

    contact_import_run_stored(contact_import_id=contact_import.pk)

    contact_import.refresh_from_db()
    # This task claimed it first and ran it, or it left the file to the other.
    assert contact_import.status == ImportStatus.DONE or path.exists()


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_queue_a_lost_import_once():
    lost = handed_over()
    found: list[list[int]] = []
    first_has_it, second_done = threading.Event(), threading.Event()

    def sweep(*, first: bool) -> None:
        try:
            if first:
                with transaction.atomic():
                    found.append(contact_imports_requeue())
                    first_has_it.set()
                    second_done.wait(timeout=10)
            else:
                first_has_it.wait(timeout=10)
                found.append(contact_imports_requeue())
                second_done.set()
        finally:
            connection.close()

    threads = [
        threading.Thread(target=sweep, kwargs={"first": first})
        for first in (True, False)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert sorted(found) == [[], [lost.pk]]
