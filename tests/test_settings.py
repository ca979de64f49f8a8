"""Settings read from the environment refuse what they cannot use, naming it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRINT = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.BESPOKE_CURRENCY, settings.BESPOKE_ACCOUNT_TIME_ZONE)"
)
PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "SECRET_KEY": "k" * 40,
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/bespoke",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "ALLOWED_HOSTS": "bespoke.example.com",
    "BESPOKE_PUBLIC_URL": "https://bespoke.example.com",
}


def settings_run(
    tmp_path, *, code: str = PRINT, **env: str
) -> subprocess.CompletedProcess:
    # A fresh process: settings are read once, at start-up.
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BESPOKE_", "DJANGO_", "DATABASE_", "CELERY_"))
        and key not in {"SECRET_KEY", "ALLOWED_HOSTS"}
    }
    clean.update(DJANGO_SETTINGS_MODULE="config.settings.local")
    clean.update(BESPOKE_VAR_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "-c", code],
        env=clean,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "BESPOKE_ACCOUNT_TIME_ZONE",
            "Mars/Base",
            "BESPOKE_ACCOUNT_TIME_ZONE='Mars/Base' is not a time zone",
        ),
        (
            "BESPOKE_IMPORT_TIME_ZONE",
            "UTC+2",
            "BESPOKE_IMPORT_TIME_ZONE='UTC+2' is not a time zone",
        ),
        ("BESPOKE_SEND_BATCH_SIZE", "-5", "BESPOKE_SEND_BATCH_SIZE='-5' must be at"),
        ("BESPOKE_CURRENCY", "dollars", "BESPOKE_CURRENCY='DOLLARS' is not a currency"),
    ],
)
def test_a_value_that_cannot_be_used_stops_start_up_naming_it(
    tmp_path, variable, value, message
):
    result = settings_run(tmp_path, **{variable: value})

    assert result.returncode != 0
    assert message in result.stderr


def test_a_currency_in_small_letters_is_read_in_capitals(tmp_path):
    result = settings_run(tmp_path, BESPOKE_CURRENCY="eur")

    assert result.stdout.split() == ["EUR", "UTC"]


def test_production_starts_with_everything_it_needs(tmp_path):
    result = settings_run(tmp_path, **PRODUCTION)

    assert result.returncode == 0, result.stderr


def test_production_names_every_setting_it_is_missing(tmp_path):
    given = {
        k: v
        for k, v in PRODUCTION.items()
        if k not in {"DATABASE_URL", "BESPOKE_PUBLIC_URL"}
    }

    result = settings_run(tmp_path, **given)

    assert result.returncode != 0
    assert (
        "DATABASE_URL, BESPOKE_PUBLIC_URL must be set when BESPOKE_PRODUCTION is on"
        in result.stderr
    )


def test_production_refuses_a_short_secret_key(tmp_path):
    result = settings_run(tmp_path, **{**PRODUCTION, "SECRET_KEY": "x"})

    assert result.returncode != 0
    assert "SECRET_KEY must be at least 32 characters" in result.stderr


@pytest.mark.parametrize(("age", "checked"), [("60", "True"), ("0", "False")])
def test_connections_kept_between_requests_are_checked_before_reuse(
    tmp_path, age, checked
):
    # A kept connection the server closed meanwhile would fail the next task.
    database = (
        "import django; django.setup(); from django.conf import settings; "
        "d = settings.DATABASES['default']; "
        "print(d['CONN_MAX_AGE'], d['CONN_HEALTH_CHECKS'])"
    )

    shown = settings_run(tmp_path, code=database, DATABASE_CONN_MAX_AGE=age)

    assert shown.stdout.split() == [age, checked]
