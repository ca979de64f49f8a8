"""A web process trusts a write key it found valid for a few seconds.

Each tracking request asked the database for its key; under load that round trip
was some tenth of the API's work. A key is trusted for
BESPOKE_WRITE_KEY_CACHE_SECONDS, revoked keys are refused at once by the process
that revokes them and within that time by the others, and a key not found is asked
for every time, so that a new key works at once.
"""

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from profiles.ingestion import write_key_source
from profiles.keys import write_key_create, write_key_revoke, write_keys_forget
from profiles.models import WriteKey

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def trusted_for_five_seconds(settings):
    settings.BESPOKE_WRITE_KEY_CACHE_SECONDS = 5
    write_keys_forget()
    yield
    write_keys_forget()


def _asked(key: str) -> tuple[str | None, int]:
    """The source a key stands for, and how many queries read the key table."""
    with CaptureQueriesContext(connection) as queries:
        source = write_key_source(key=key)
    read = [q for q in queries.captured_queries if "FROM profiles_writekey" in q["sql"]]
    return source, len(read)


def test_a_key_checked_once_is_trusted_without_asking_again():
    site = write_key_create(name="site")

    assert _asked(site.key) == ("segment:site", 1)
    assert _asked(site.key) == ("segment:site", 0)


def test_a_key_revoked_here_is_refused_at_once(django_capture_on_commit_callbacks):
    site = write_key_create(name="site")
    assert _asked(site.key) == ("segment:site", 1)

    with django_capture_on_commit_callbacks(execute=True):
        write_key_revoke(write_key_id=site.pk)

    assert _asked(site.key) == (None, 1)


def test_a_key_revoked_by_another_process_is_refused_within_the_trusted_time():
    site = write_key_create(name="site")
    assert _asked(site.key) == ("segment:site", 1)
    # Revoked by another web process: this one's memory is not told.
    WriteKey.objects.filter(pk=site.pk).update(revoked_at=timezone.now())

    assert _asked(site.key) == ("segment:site", 0)
    with time_machine.travel(timezone.now() + timedelta(seconds=6)):
        assert _asked(site.key) == (None, 1)


def test_a_key_not_found_is_asked_for_every_time_so_a_new_one_works_at_once():
    assert _asked("made-later") == (None, 1)
    WriteKey.objects.create(name="later", key="made-later")

    assert _asked("made-later") == ("segment:later", 1)


def test_a_trusted_key_still_records_its_use_once_a_minute(settings):
    settings.BESPOKE_WRITE_KEY_CACHE_SECONDS = 300
    site = write_key_create(name="site")
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        write_key_source(key=site.key)

    def used_after(seconds: int) -> tuple[object, int]:
        with time_machine.travel(start + timedelta(seconds=seconds), tick=False):
            source, read = _asked(site.key)
        return WriteKey.objects.get(pk=site.pk).last_used_at, read

    # Trusted throughout (no read of the key), its use written once a minute.
    assert used_after(30) == (start, 0)
    assert used_after(61) == (start + timedelta(seconds=61), 0)
    assert used_after(90) == (start + timedelta(seconds=61), 0)


def test_a_key_changed_in_the_admin_is_asked_for_again(
    admin_client, django_capture_on_commit_callbacks
):
    site = write_key_create(name="site")
    assert _asked(site.key) == ("segment:site", 1)
    change = reverse("admin:profiles_writekey_change", args=[site.pk])

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            change, {"name": "shop", "revoked_at_0": "", "revoked_at_1": ""}
        )

    assert _asked(site.key) == ("segment:shop", 1)
    with django_capture_on_commit_callbacks(execute=True):
        WriteKey.objects.get(pk=site.pk).delete()
    assert _asked(site.key) == (None, 1)
