"""Fixtures shared by the whole suite."""

import json
from pathlib import Path

import pytest
from django.conf import settings

from tests.factories import UserFactory


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    path = Path(settings.BESPOKE_FIXTURES_DIR)
    if not path.is_dir():
        pytest.fail(
            f"the shared fixtures are missing: {path} (set BESPOKE_FIXTURES_DIR)"
        )
    return path


@pytest.fixture
def load_fixture(fixtures_dir: Path):
    """Return a fixture file's bytes, or its parsed JSON when asked."""

    def load(relative: str, *, as_json: bool = False):
        raw = (fixtures_dir / relative).read_bytes()
        return json.loads(raw) if as_json else raw

    return load


@pytest.fixture
def marketer(db):
    return UserFactory(username="marketer")


@pytest.fixture(autouse=True)
def outbox_email_backend(settings):
    """Send through the Anymail outbox backend, as the app does, not Django's locmem.

    Django's test runner swaps EMAIL_BACKEND for locmem; the outbox keeps the real
    Anymail path (payload, recipient status, message id) under test.
    """
    settings.EMAIL_BACKEND = "campaigns.outbox.OutboxEmailBackend"
