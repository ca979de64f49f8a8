"""QA pass qa16: faults found in the web process's memory of checked write keys.

Each docstring tells what the first version did; each is fixed since.
"""

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from profiles import ingestion
from profiles.ingestion import write_key_source
from profiles.keys import write_key_create, write_key_revoke
from profiles.models import WriteKey
from tests.profiles.test_write_key_cache import (  # noqa: F401 - the fixture
    trusted_for_five_seconds,
)

pytestmark = pytest.mark.django_db


def test_a_clock_set_back_does_not_keep_a_revoked_key_working():
    """The server's clock is stepped back an hour (NTP, an operator) just after a
    request checked a key. The key is revoked in another web process; this one
    goes on accepting it for the whole hour, not for 5 seconds."""
    site = write_key_create(name="site")
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        assert write_key_source(key=site.key) == "segment:site"
    WriteKey.objects.filter(pk=site.pk).update(revoked_at=start)

    with time_machine.travel(start - timedelta(hours=1) + timedelta(seconds=6)):
        assert write_key_source(key=site.key) is None


def test_with_no_trusted_time_a_key_of_an_earlier_test_is_not_used(settings):
    """BESPOKE_WRITE_KEY_CACHE_SECONDS=0 (every test's setting) is documented to ask
    the database on every request, yet keys are still remembered and never
    forgotten between tests. A test that sends with a key secret an earlier test
    used, at a date before that test ran (time_machine), gets the earlier test's
    key: its events carry the earlier key's name and its last use is not written."""
    settings.BESPOKE_WRITE_KEY_CACHE_SECONDS = 0
    earlier = WriteKey.objects.create(name="Web", key="shared-key")
    assert write_key_source(key="shared-key") == "segment:Web"
    earlier.delete()  # as the earlier test's rollback does
    WriteKey.objects.create(name="Shop", key="shared-key")

    with time_machine.travel("2025-03-15T08:00:00Z", tick=False):
        assert write_key_source(key="shared-key") == "segment:Shop"


class _ForgottenMeanwhile(dict):
    """A process's memory that another thread clears (it revoked a key, or read
    the thousandth one) just after this request looked its key up."""

    def get(self, key, default=None):
        found = super().get(key, default)
        self.clear()
        return found


def test_a_key_forgotten_by_another_thread_meanwhile_is_read_again(monkeypatch):
    """Under a threaded server (runserver, gunicorn threads) a request whose key's
    trusted time is up deletes it from memory; if another thread removed it first
    (same expiry, a revoke's forgetting, the 1000-key clear), `del` raises
    KeyError and the sender gets a 500 instead of its events being stored. With
    BESPOKE_WRITE_KEY_CACHE_SECONDS=0 every request takes this path."""
    site = write_key_create(name="site")
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        write_key_source(key=site.key)
    monkeypatch.setattr(
        ingestion,
        "write_keys_checked",
        _ForgottenMeanwhile(ingestion.write_keys_checked),
    )

    with time_machine.travel(start + timedelta(seconds=6), tick=False):
        assert write_key_source(key=site.key) == "segment:site"


def _admin_revokes(admin_client, write_key):
    now = timezone.now()
    admin_client.post(
        reverse("admin:profiles_writekey_change", args=[write_key.pk]),
        {
            "name": write_key.name,
            "revoked_at_0": f"{now:%Y-%m-%d}",
            "revoked_at_1": f"{now:%H:%M:%S}",
        },
    )


def _admin_deletes(admin_client, write_key):
    admin_client.post(
        reverse("admin:profiles_writekey_delete", args=[write_key.pk]), {"post": "yes"}
    )


def _admin_deletes_selected(admin_client, write_key):
    admin_client.post(
        reverse("admin:profiles_writekey_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [write_key.pk],
            "post": "yes",
        },
    )


def _admin_renames(admin_client, write_key):
    admin_client.post(
        reverse("admin:profiles_writekey_change", args=[write_key.pk]),
        {"name": "shop", "revoked_at_0": "", "revoked_at_1": ""},
    )


@pytest.mark.parametrize(
    ("change", "source"),
    [
        (_admin_revokes, None),
        (_admin_deletes, None),
        (_admin_deletes_selected, None),
        (_admin_renames, "segment:shop"),
    ],
)
def test_the_process_that_changes_a_key_in_the_admin_stops_trusting_it(
    admin_client, django_capture_on_commit_callbacks, change, source
):
    """Revoking a key in the Django admin (setting "Revoked at"), deleting it (its
    page or "Delete selected") or renaming it there leaves this very process
    trusting the old key for up to 5 s: the docs promise the revoking process
    refuses it at once, and a renamed key's events keep the old source name."""
    site = write_key_create(name="site")
    assert write_key_source(key=site.key) == "segment:site"

    with django_capture_on_commit_callbacks(execute=True):
        change(admin_client, site)
    active = WriteKey.objects.filter(pk=site.pk, revoked_at=None)
    name = active.values_list("name", flat=True).first()
    assert (name and f"segment:{name}") == source  # the admin did change the row

    assert write_key_source(key=site.key) == source


def test_a_request_reading_its_key_while_it_is_revoked_here_does_not_keep_it(
    django_capture_on_commit_callbacks,
):
    """A request of this process reads its key just before the Sources page's
    Revoke, in another thread of the same process, commits and forgets every key;
    the request then remembers the key it read, and this process (which the docs
    say refuses it at once) accepts the revoked key for 5 more seconds."""
    site = write_key_create(name="site")
    revoked = []

    def revoke_after_the_read(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if "FROM profiles_writekey" in sql and not revoked:
            revoked.append(True)
            with django_capture_on_commit_callbacks(execute=True):
                write_key_revoke(write_key_id=site.pk)
        return result

    with connection.execute_wrapper(revoke_after_the_read):
        assert write_key_source(key=site.key) == "segment:site"
    assert WriteKey.objects.get(pk=site.pk).revoked_at is not None

    assert write_key_source(key=site.key) is None
