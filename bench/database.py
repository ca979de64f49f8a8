"""Each benchmark's own database: made fresh, migrated by Django, dropped after."""

import logging
import os
import tempfile

import psycopg

SERVER_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432"
).rstrip("/")


def admin_execute(sql: str) -> None:
    """Run one statement on the server's maintenance database, outside a transaction."""
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def database_create(name: str) -> None:
    """Make the database `name` anew, dropping one left by an earlier run."""
    admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin_execute(f"CREATE DATABASE {name}")


def database_drop(name: str) -> None:
    """Close Django's connections, if it was set up, and drop the database."""
    try:
        from django.db import connections

        connections.close_all()
    except ImportError:
        pass
    admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def django_setup(name: str, **environ: str) -> None:
    """Point Django at the database `name` (and `environ`), set it up and migrate."""
    os.environ["DATABASE_URL"] = f"{SERVER_URL}/{name}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.base"
    os.environ["DJANGO_DEBUG"] = "false"
    os.environ["BESPOKE_VAR_DIR"] = tempfile.mkdtemp(prefix="bespoke-bench-")
    os.environ.update(environ)

    import django
    from django.core.management import call_command

    django.setup()
    # One log line per request or event would measure the terminal, not Bespoke.
    logging.disable(logging.INFO)
    call_command("migrate", verbosity=0)
