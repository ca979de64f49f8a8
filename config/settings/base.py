"""Settings shared by every environment, read from the environment with safe defaults.

With no variable set, Bespoke runs on its embedded defaults: a SQLite file, Celery
over kombu's filesystem transport (a folder as the queue, no server) and email
delivered to the local outbox. Every variable is listed in docs/configuration.md.
"""

from pathlib import Path

import dj_database_url
from corsheaders.defaults import default_headers as corsheaders_default_headers
from django.core.exceptions import ImproperlyConfigured

from config.env import (
    env_bool,
    env_currency,
    env_int,
    env_list,
    env_prefixed,
    env_str,
    env_time_zone,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("BESPOKE_VAR_DIR", str(BASE_DIR / "var")))

# The embedded defaults keep their files (SQLite, queue folders, beat state) here.
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DJANGO_DEBUG", default=False)
PRODUCTION = env_bool("BESPOKE_PRODUCTION", default=False)

# A development key is only acceptable while nothing real is at stake.
_DEV_SECRET_KEY = "bespoke-development-only-not-secret"  # noqa: S105
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET_KEY)
if PRODUCTION and SECRET_KEY == _DEV_SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when BESPOKE_PRODUCTION is on")
# It signs sessions and unsubscribe links and keys the suppression hashes.
SECRET_KEY_MIN_CHARS = 32
if PRODUCTION and len(SECRET_KEY) < SECRET_KEY_MIN_CHARS:
    raise ImproperlyConfigured(
        f"SECRET_KEY must be at least {SECRET_KEY_MIN_CHARS} characters when "
        "BESPOKE_PRODUCTION is on"
    )
# Without these a production deployment would fall back, silently, to the embedded
# defaults: a SQLite file, a folder as queue, links to 127.0.0.1.
PRODUCTION_REQUIRED = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "ALLOWED_HOSTS",
    "BESPOKE_PUBLIC_URL",
)
_missing = [name for name in PRODUCTION_REQUIRED if not env_str(name)]
if PRODUCTION and _missing:
    raise ImproperlyConfigured(
        f"{', '.join(_missing)} must be set when BESPOKE_PRODUCTION is on"
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "corsheaders",
    "anymail",
    "profiles",
    "segments",
    "campaigns",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before CommonMiddleware, so that its redirects and errors carry the headers too.
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# A connection kept between requests and tasks is checked before its next use: one
# the server closed meanwhile (a restart, a failover, an idle timeout) is replaced,
# not handed to a task that would fail on it.
conn_max_age = env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0)
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'bespoke.sqlite3'}"),
        conn_max_age=conn_max_age,
        conn_health_checks=conn_max_age > 0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default serves web, worker and beat from one file. WAL lets pages
    # and the API read while a worker writes; IMMEDIATE transactions and a generous
    # timeout make writers queue for the lock instead of failing with "locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # JIT compilation costs 0.2-1 s on a large segment query and never paid that back
    # in bench/segments.py; Bespoke's queries are short and planned often.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("options", "-c jit=off")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
# In development and tests WhiteNoise serves straight from the source folders.
WHITENOISE_USE_FINDERS = DEBUG

# Uploads above this size are streamed to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 50 * 1024 * 1024
# The import's mapping page posts one field per column of the file: Django's
# default of 1,000 fields refused a wide export with a bare 400.
DATA_UPLOAD_MAX_NUMBER_FIELDS = 20_000

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "UNAUTHENTICATED_USER": None,
}

# The tracking API is called from shoppers' browsers on the marketer's own sites
# (Segment's analytics.js), whatever their origin: a write key is public there, and
# no cookie is read. The app's other pages send no such headers.
CORS_URLS_REGEX = r"^/v1/"
CORS_ALLOW_ALL_ORIGINS = True
CORS_ALLOW_HEADERS = (*corsheaders_default_headers, "content-encoding")

# Celery: Redis in production; with no broker set, kombu's filesystem transport.
# The filesystem transport ignores the host; naming one keeps kombu from warning.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://localhost/")
BROKER_SOCKET_TIMEOUT_SECONDS = 2
if CELERY_BROKER_URL.startswith("filesystem://"):
    # Kombu's own filesystem channel lets a worker read a message file before it is
    # written, and the worker dies on the empty JSON; config/broker.py closes that gap.
    CELERY_BROKER_TRANSPORT = "config.broker:Transport"
    _queue_dir = VAR_DIR / "queue"
    _queue_dir.mkdir(exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(VAR_DIR / "queue-processed"),
        "control_folder": str(VAR_DIR / "queue-control"),
        "store_processed": False,
        # Kombu's default, one second between polls, makes a worker with a prefetch
        # of one take a task a second or so: 200 queued tasks took 75 s to drain,
        # and 10 s at a tenth of a second (an idle poll lists one small folder).
        "polling_interval": 0.1,
    }
else:
    # A broker that accepts connections and never answers (a failover, a NAT or
    # firewall timeout) would hold a publish, and the request that made it,
    # forever: a tracking request hung past two minutes. With these, a publish
    # gives up in seconds and the beat sweep does the work instead.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "socket_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
    }
    CELERY_TASK_PUBLISH_RETRY_POLICY = {
        "max_retries": 1,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.2,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_TIMEZONE = "UTC"
# Without it Celery closes a worker's database connections after every task;
# DATABASE_CONN_MAX_AGE decides instead (config/celery.py), and Celery renews them
# after this many tasks in any case.
CELERY_DB_REUSE_MAX = 1000

# Email: the local outbox unless an Anymail backend is configured.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "campaigns.outbox.OutboxEmailBackend")
DEFAULT_FROM_EMAIL = env_str(
    "DEFAULT_FROM_EMAIL", "Example Outfitters <news@example.com>"
)
# Every ANYMAIL_<NAME> variable becomes ANYMAIL["<NAME>"], e.g. ANYMAIL_MAILGUN_API_KEY.
ANYMAIL = env_prefixed("ANYMAIL_")

# Bespoke's own settings.
# The port `make run` serves on (PORT=...), for the default public URL.
BESPOKE_PORT = env_int("BESPOKE_PORT", 8000, minimum=1)
BESPOKE_PUBLIC_URL = env_str(
    "BESPOKE_PUBLIC_URL", f"http://127.0.0.1:{BESPOKE_PORT}"
).rstrip("/")
BESPOKE_WRITE_KEYS = env_list("BESPOKE_WRITE_KEYS")
# How long a web process trusts a write key made in Bespoke that it has checked,
# before it asks the database again: a key revoked in another process is refused
# by this one at most this many seconds later (the process that revokes it, at
# once). 0 asks on every request.
BESPOKE_WRITE_KEY_CACHE_SECONDS = env_int(
    "BESPOKE_WRITE_KEY_CACHE_SECONDS", 5, minimum=0
)
# Shopify signs each webhook with the app's client secret (or the key shown in the
# shop's notification settings); several may be listed while one is rotated.
BESPOKE_SHOPIFY_WEBHOOK_SECRETS = env_list("BESPOKE_SHOPIFY_WEBHOOK_SECRETS")
BESPOKE_ACCOUNT_TIME_ZONE = env_time_zone("BESPOKE_ACCOUNT_TIME_ZONE", "UTC")
BESPOKE_CURRENCY = env_currency("BESPOKE_CURRENCY", "USD")
# Mailchimp exports carry naive times; the zone they are read in is an assumption.
BESPOKE_IMPORT_TIME_ZONE = env_time_zone("BESPOKE_IMPORT_TIME_ZONE", "UTC")
# The key of the hashes kept on the suppression list. Changing it orphans them.
BESPOKE_SUPPRESSION_KEY = env_str("BESPOKE_SUPPRESSION_KEY", SECRET_KEY)
BESPOKE_SEND_BATCH_SIZE = env_int("BESPOKE_SEND_BATCH_SIZE", 200, minimum=1)
# Whether the ESP accepts addresses whose local part is not ASCII (SMTPUTF8, RFC 6531).
# Few do; without it those recipients are skipped rather than failed at the ESP.
BESPOKE_SMTPUTF8 = env_bool("BESPOKE_SMTPUTF8", default=False)
# Profile ids a segment rebuild handles in one transaction before re-queueing.
BESPOKE_SEGMENT_REBUILD_BATCH_SIZE = env_int(
    "BESPOKE_SEGMENT_REBUILD_BATCH_SIZE", 50_000, minimum=1
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# The shared test fixtures in real formats, which `manage.py demo` plays through.
BESPOKE_FIXTURES_DIR = Path(
    env_str("BESPOKE_FIXTURES_DIR", str(BASE_DIR.parent / "shared" / "fixtures"))
)
