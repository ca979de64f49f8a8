"""A worker keeps its database connection between tasks, as DATABASE_CONN_MAX_AGE says.

Celery's Django fixup closed it after every task, so every events task opened a new
PostgreSQL backend. config/celery.py and CELERY_DB_REUSE_MAX hand the decision to
Django's own rule: connections past their age, or broken, are closed.
"""

from types import SimpleNamespace

import psycopg
import pytest
from celery.fixups.django import DjangoWorkerFixup
from django.db import OperationalError, connection

from config.celery import _database_connections_tidy, app

pytestmark = pytest.mark.django_db(transaction=True)

A_WORKERS_TASK = SimpleNamespace(request=SimpleNamespace(is_eager=False))
AN_EAGER_TASK = SimpleNamespace(request=SimpleNamespace(is_eager=True))


def _backend() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _server_url() -> str:
    params = connection.get_connection_params()
    return psycopg.conninfo.make_conninfo(
        **{k: v for k, v in params.items() if k in ("dbname", "host", "port", "user")}
    )


def _terminate(backend: int) -> None:
    """End the backend from another connection, as a restart or a timeout would."""
    with psycopg.connect(_server_url(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [backend])


@pytest.fixture
def conn_max_age():
    """Set DATABASE_CONN_MAX_AGE's effect: the age, and the health checks it turns on."""

    def set_age(seconds: int) -> None:
        connection.close()
        connection.settings_dict["CONN_MAX_AGE"] = seconds
        connection.settings_dict["CONN_HEALTH_CHECKS"] = seconds > 0

    before = dict(connection.settings_dict)
    yield set_age
    connection.close()
    connection.settings_dict.update(before)


def test_celerys_fixup_leaves_the_connection_open_after_a_task():
    fixup = DjangoWorkerFixup(app)
    backend = _backend()

    fixup.on_task_prerun(sender=A_WORKERS_TASK)
    fixup.on_task_postrun(sender=A_WORKERS_TASK)

    assert connection.connection is not None
    assert _backend() == backend


def test_a_connection_within_its_age_is_kept_across_tasks(conn_max_age):
    conn_max_age(600)
    backend = _backend()

    _database_connections_tidy(task=A_WORKERS_TASK)
    _database_connections_tidy(task=A_WORKERS_TASK)

    assert _backend() == backend


def test_with_no_age_set_each_task_gets_a_new_connection(conn_max_age):
    conn_max_age(0)
    _backend()

    _database_connections_tidy(task=A_WORKERS_TASK)

    assert connection.connection is None


def test_a_broken_connection_is_not_handed_to_the_next_task(conn_max_age):
    conn_max_age(600)
    backend = _backend()
    _terminate(backend)
    with pytest.raises(OperationalError):
        _backend()  # the task's query fails, as it would have in the task

    _database_connections_tidy(task=A_WORKERS_TASK)

    assert _backend() != backend


def test_a_connection_the_server_closed_while_idle_is_replaced(conn_max_age):
    # A restart, a failover or an idle timeout: no error was seen on it.
    conn_max_age(600)
    backend = _backend()
    _database_connections_tidy(task=A_WORKERS_TASK)
    _terminate(backend)

    _database_connections_tidy(task=A_WORKERS_TASK)

    assert _backend() != backend


def test_an_eager_task_leaves_its_callers_connection_alone(conn_max_age):
    conn_max_age(0)
    backend = _backend()

    _database_connections_tidy(task=AN_EAGER_TASK)

    assert _backend() == backend
