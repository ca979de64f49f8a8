"""Fixtures shared by the whole suite."""

import json
import logging
import os
import time
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


@pytest.fixture
def tasks_inline():
    """Run Celery tasks in the calling process while the test runs."""
    from config.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


@pytest.fixture
def celery_worker_own_queue():
    """A real Celery worker on the Redis broker, consuming a queue of this run's own.

    Another test run on the same Redis (a second checkout, a colleague) then neither
    takes these tasks nor hands this worker its own.
    """
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    queue = f"test-{os.getpid()}"
    default_queue = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    # Celery sets up logging for its worker (the root logger's level and handlers):
    # the tests after it would miss the records they look for.
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    try:
        with start_worker(
            app,
            pool="solo",
            perform_ping_check=False,
            shutdown_timeout=10,
            queues=[queue],
        ) as worker:
            yield worker
    finally:
        app.conf.task_default_queue = default_queue
        root.setLevel(level)
        root.handlers[:] = handlers


def wait_for(predicate, *, seconds: float = 30) -> bool:
    """Poll until the predicate holds or the time is up (for work done by a worker)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(autouse=True)
def fresh_trait_schema():
    """The trait schema is kept for a few seconds; tests start afresh."""
    from profiles.traits import trait_schema_forget

    trait_schema_forget()
