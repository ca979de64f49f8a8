"""Settings for `make run` on a developer's machine: debug on, embedded defaults."""

import os

os.environ.setdefault("DJANGO_DEBUG", "true")

from config.settings.base import *  # noqa: E402, F403
