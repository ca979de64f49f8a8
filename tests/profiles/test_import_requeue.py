"""An import handed to the workers whose task was lost is queued again by the sweep.

A broker that restarted, or a worker that failed before it began, loses the task;
the import would wait, "queued", for ever.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from profiles.importing import (
    contact_import_create,
    contact_import_map,
    contact_imports_requeue,
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
