"""Who applies a stored webhook delivery, by the feed it came from.

The shop's deliveries are applied by profiles/shopify.py and an ESP's by
campaigns/tracking.py; each app registers its own when Django starts, so that the
admin's retry reaches the right one without this app importing the other.
"""

from collections.abc import Callable

DeliveryApply = Callable[..., object]

_APPLIERS: dict[str, DeliveryApply] = {}


def delivery_applier_register(*, source_prefix: str, apply: DeliveryApply) -> None:
    """Name the service that applies deliveries whose source begins `source_prefix`."""
    _APPLIERS[source_prefix] = apply


def delivery_applier(source: str) -> DeliveryApply | None:
    """Return the service that applies a delivery from `source`, if any does."""
    return next(
        (apply for prefix, apply in _APPLIERS.items() if source.startswith(prefix)),
        None,
    )
