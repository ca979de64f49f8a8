"""Settings for production: everything secret must come from the environment."""

import os

os.environ.setdefault("BESPOKE_PRODUCTION", "true")

from config.settings.base import *  # noqa: E402, F403

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
STORAGES = {
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
