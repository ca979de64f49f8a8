"""Settings for the test suite: real PostgreSQL and Redis unless told otherwise."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bespoke")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")

from config.settings.base import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "campaigns.outbox.OutboxEmailBackend"
BESPOKE_WRITE_KEYS = ["test-env-write-key"]
# Asked on every request, as tests revoke keys in the database directly; the cache
# has tests of its own (tests/profiles/test_write_key_cache.py).
BESPOKE_WRITE_KEY_CACHE_SECONDS = 0
BESPOKE_PUBLIC_URL = "https://bespoke.example.com"
# The secret the shared Shopify fixtures are signed with.
BESPOKE_SHOPIFY_WEBHOOK_SECRETS = ["test_shopify_webhook_secret_DO_NOT_USE"]
STORAGES = {
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# A second database, so that the segment compiler's meaning can be checked on SQLite
# (the embedded default) as well as on PostgreSQL, with the same rules and data.
DATABASES["sqlite"] = {  # noqa: F405
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": ":memory:",
    "TEST": {"NAME": ":memory:"},
}
