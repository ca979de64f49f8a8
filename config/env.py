"""Strict readers for settings that come from the environment."""

import os
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


def env_str(name: str, default: str = "") -> str:
    """Return the variable as text, or the default when it is unset or empty."""
    return os.environ.get(name, "").strip() or default


def env_bool(name: str, default: bool) -> bool:
    """Return the variable as a boolean; anything but a known word is an error."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default

    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean: use one of {sorted(TRUE_WORDS | FALSE_WORDS)}"
    )


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    """Return the variable as an integer; one that is not, or is below `minimum`, is
    an error."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default

    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be at least {minimum}")
    return value


def env_time_zone(name: str, default: str) -> str:
    """Return the variable as an IANA time zone name; an unknown name is an error."""
    raw = env_str(name, default)
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a time zone: use an IANA name such as "
            "'Europe/Lisbon' or 'UTC'"
        ) from exc
    return raw


def env_currency(name: str, default: str) -> str:
    """Return the variable as an ISO 4217 code in capitals ('usd' is 'USD')."""
    raw = env_str(name, default).upper()
    if not (len(raw) == 3 and raw.isascii() and raw.isalpha()):
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a currency code: use three letters such as 'EUR'"
        )
    return raw


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    """Return a comma-separated variable as a list of non-empty, stripped items."""
    raw = os.environ.get(name, "")
    items = [item.strip() for item in raw.split(",") if item.strip()]
    return items or list(default or [])


def env_prefixed(prefix: str) -> dict[str, str]:
    """Return every variable whose name starts with the prefix, with the prefix cut off."""
    return {
        name[len(prefix) :]: value
        for name, value in os.environ.items()
        if name.startswith(prefix) and value
    }
