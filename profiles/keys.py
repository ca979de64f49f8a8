"""Write keys: the secrets with which a site or server sends events to /v1/."""

import logging
import re
import secrets
import unicodedata
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from profiles.models import WriteKey

logger = logging.getLogger(__name__)

# The write keys a web process found valid, and when it asked: key -> (key, at).
# profiles/ingestion.py trusts one for BESPOKE_WRITE_KEY_CACHE_SECONDS.
write_keys_checked: dict[str, tuple[WriteKey, datetime]] = {}
WRITE_KEYS_CHECKED_MAX = 1000
# How many times the process forgot them: a key read before a forgetting is not
# remembered after it (a request racing a revoke would keep the revoked key).
_forgotten = [0]


def write_keys_forget() -> None:
    """Forget the keys this process trusts: the next request of each asks again."""
    _forgotten[0] += 1
    write_keys_checked.clear()


def write_keys_forgotten() -> int:
    """How many times this process has forgotten its trusted keys."""
    return _forgotten[0]


def write_keys_changed(**_: object) -> None:
    """On a WriteKey saved or deleted here (the admin, a rename): forget on commit."""
    transaction.on_commit(write_keys_forget)


WRITE_KEY_BYTES = 24
WRITE_KEY_SHOWN_CHARS = 4
# Zero-width and other format characters: they change a name without showing.
INVISIBLE_CHARACTERS = re.compile(r"[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")


def write_key_secret() -> str:
    return secrets.token_urlsafe(WRITE_KEY_BYTES)


def write_key_name_clean(name: str) -> str:
    """Return a key's name as it is kept and compared: one form for what looks alike.

    Full-width letters become plain ones (NFKC) and invisible characters go, so two
    keys that read the same on the sources page are one name.
    """
    name = unicodedata.normalize("NFKC", name)
    return " ".join(INVISIBLE_CHARACTERS.sub("", name).split())


# A key's events carry "segment:<its name>" in 100 characters: a longer name would
# be cut, and two names alike in their first 92 characters would be one source.
WRITE_KEY_NAME_MAX_CHARS = 92
# The source of the keys set in BESPOKE_WRITE_KEYS is "segment:settings".
WRITE_KEY_NAME_RESERVED = "settings"


def write_key_name_taken(name: str) -> bool:
    """Tell whether an active key has this name already (case aside).

    The sources page counts events by key name, so two keys would read as one.
    """
    name = write_key_name_clean(name)
    return WriteKey.objects.filter(name__iexact=name, revoked_at=None).exists()


def write_key_name_refusal(name: str) -> str | None:
    """Say why a new key may not have this name, if it may not; else None."""
    name = write_key_name_clean(name)
    if len(name) > WRITE_KEY_NAME_MAX_CHARS:
        return (
            f"A key's name has at most {WRITE_KEY_NAME_MAX_CHARS} characters, so "
            "that the sources page tells its events apart from another key's."
        )
    if name.casefold() == WRITE_KEY_NAME_RESERVED:
        return (
            f"“{name}” names the keys set in BESPOKE_WRITE_KEYS on the sources "
            "page: give this key another name."
        )
    if write_key_name_taken(name):
        return (
            f"A key named “{name}” is in use already: give each key its own name, "
            "so that the sources page can tell their events apart."
        )
    return None


def write_key_create(*, name: str) -> WriteKey:
    """Create a write key with a fresh random secret under the given name."""
    write_key = WriteKey.objects.create(
        name=write_key_name_clean(name), key=write_key_secret()
    )

    logger.info("Write key created", extra={"write_key_id": write_key.pk})
    return write_key


def write_key_revoke(*, write_key_id: int) -> bool:
    """Revoke a write key; return False if it was revoked already or does not exist."""
    # Claimed with a conditional update, so a double click revokes (and logs) once.
    revoked = WriteKey.objects.filter(pk=write_key_id, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if not revoked:
        return False

    # This process refuses it at once; others within BESPOKE_WRITE_KEY_CACHE_SECONDS.
    transaction.on_commit(write_keys_forget)
    logger.info("Write key revoked", extra={"write_key_id": write_key_id})
    return True


def write_key_masked(key: str) -> str:
    """Return the key with all but its first few characters hidden."""
    return f"{key[:WRITE_KEY_SHOWN_CHARS]}{'•' * 8}"
