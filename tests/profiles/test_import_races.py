"""An import batch never writes back a consent or a trait changed while it ran.

Each test holds a batch right after it has read its stored profiles, lets another
writer (an unsubscribe link, a shop's webhook) try to change one of them, then lets
the batch go on. The other writer must either wait for the batch or be seen by it.
"""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from profiles.importing import copying, writing
from profiles.importing.mapping import contacts_parse
from profiles.models import Profile, SubscriptionStatus
from profiles.services import consent_record

pytestmark = pytest.mark.django_db(transaction=True)

FILE = b"email,first_name,plan\nkim@example.com,Kim,gold\n"
PATHS = {
    "copy": (copying, "_batch_load", copying.contact_rows_copy),
    "orm": (writing, "_profiles_find", writing.contact_rows_write),
}


def batch_held_while(monkeypatch, path: str, other_writer) -> None:
    """Run one import batch of FILE, and `other_writer` while the batch is held."""
    module, reader_name, write = PATHS[path]
    read, go_on = threading.Event(), threading.Event()
    reader = getattr(module, reader_name)

    def read_then_wait(*args, **kwargs):
        found = reader(*args, **kwargs)
        read.set()
        assert go_on.wait(10)
        return found

    monkeypatch.setattr(module, reader_name, read_then_wait)
    rows = contacts_parse(FILE).rows
    failures: list[BaseException] = []

    def import_batch():
        try:
            with transaction.atomic():
                write(rows, source="import", filename="list.csv")
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)
        finally:
            connection.close()

    def other():
        try:
            other_writer()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)
        finally:
            connection.close()

    batch = threading.Thread(target=import_batch)
    batch.start()
    assert read.wait(10)
    writer = threading.Thread(target=other)
    writer.start()
    # Long enough for the other writer to finish, unless it waits for the batch.
    writer.join(0.5)
    go_on.set()
    batch.join(10)
    writer.join(10)
    assert not failures, failures


@pytest.mark.parametrize("path", ["copy", "orm"])
def test_an_unsubscribe_during_a_batch_is_not_undone_by_it(monkeypatch, path):
    kim = Profile.objects.create(
        email="kim@example.com",
        subscription_status=SubscriptionStatus.SUBSCRIBED,
        subscription_changed_at=timezone.now() - timedelta(days=30),
    )

    def unsubscribe():
        consent_record(
            profile=Profile.objects.get(pk=kim.pk),
            status=SubscriptionStatus.UNSUBSCRIBED,
            source="unsubscribe_link",
            occurred_at=timezone.now(),
        )

    batch_held_while(monkeypatch, path, unsubscribe)

    kim.refresh_from_db()
    assert kim.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert kim.subscription_changed_at is not None
    assert kim.traits == {"plan": "gold"}
    assert kim.first_name == "Kim"


@pytest.mark.parametrize("path", ["copy", "orm"])
def test_a_trait_written_during_a_batch_is_kept(monkeypatch, path):
    kim = Profile.objects.create(email="kim@example.com", traits={"plan": "free"})

    def shop_update():
        with transaction.atomic():
            profile = Profile.objects.select_for_update().get(pk=kim.pk)
            profile.traits = {**profile.traits, "shopify_customer_id": "42"}
            profile.save(update_fields=["traits"])

    batch_held_while(monkeypatch, path, shop_update)

    kim.refresh_from_db()
    assert kim.traits == {"plan": "gold", "shopify_customer_id": "42"}


@pytest.mark.parametrize("raised", ["driver", "django"])
def test_a_batch_stopped_by_a_deadlock_is_written_again(
    monkeypatch, settings, tmp_path, raised
):
    from django.db import OperationalError
    from psycopg.errors import DeadlockDetected

    from profiles.importing import runs
    from profiles.importing.runs import contact_import_file
    from profiles.models import ImportStatus

    settings.VAR_DIR = tmp_path
    write = writing.contact_rows_write
    stops = []

    def stopped_once(*args, **kwargs):
        outcome = write(*args, **kwargs)
        if not stops:
            stops.append(1)
            deadlock = DeadlockDetected("deadlock detected")
            if raised == "driver":
                raise deadlock
            raise OperationalError("deadlock detected") from deadlock
        return outcome

    monkeypatch.setattr(runs, "contact_rows_write", stopped_once)

    done = contact_import_file(filename="list.csv", data=FILE)

    assert stops == [1]
    assert done.status == ImportStatus.DONE
    assert done.rows_done == 1
    assert Profile.objects.get().traits == {"plan": "gold"}


@pytest.mark.parametrize("path", ["copy", "orm"])
def test_a_new_address_another_writer_creates_during_a_batch_is_updated(
    monkeypatch, settings, tmp_path, path
):
    from profiles.importing import runs
    from profiles.importing.runs import contact_import_file
    from profiles.models import ImportStatus

    settings.VAR_DIR = tmp_path
    if path == "copy":
        monkeypatch.setattr(runs, "COPY_MIN_ROWS", 1)
    module, reader_name, _ = PATHS[path]
    reader = getattr(module, reader_name)
    calls = []

    def read_then_someone_creates(*args, **kwargs):
        found = reader(*args, **kwargs)
        if not calls:
            calls.append(1)
            # An identify for the same address, committed on its own connection.
            creator = threading.Thread(target=kim_created)
            creator.start()
            creator.join(10)
        return found

    def kim_created():
        try:
            Profile.objects.create(email="kim@example.com", traits={"seen": True})
        finally:
            connection.close()

    monkeypatch.setattr(module, reader_name, read_then_someone_creates)

    done = contact_import_file(filename="list.csv", data=FILE)

    assert done.status == ImportStatus.DONE, done.error
    kim = Profile.objects.get()
    assert kim.traits == {"seen": True, "plan": "gold"}
    assert kim.first_name == "Kim"
