"""Celery tasks of the profiles app: thin callers of services, taking ids."""

import logging

from celery import shared_task
from django.db import OperationalError

from profiles.importing import contact_import_run_stored, contact_imports_sweep
from profiles.processing import events_process, events_process_pending
from profiles.shopify import shopify_deliveries_process_pending

logger = logging.getLogger(__name__)


@shared_task
def contact_import_task(contact_import_id: int) -> None:
    """Run an uploaded contact import from the bytes kept for it."""
    # No retry: the run is claimed once, and a failure is kept on the import itself.
    contact_import_run_stored(contact_import_id=contact_import_id)


@shared_task
def contact_imports_sweep_task() -> int:
    """Mark failed the running imports whose worker stopped making progress."""
    return contact_imports_sweep()


# Events: the API enqueues events_process_task with the ids it stored; the beat
# sweep finds whatever a lost or failed task left unprocessed.
EVENTS_SWEEP_BATCH_SIZE = 1000


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def events_process_task(event_ids: list[int]) -> int:
    """Process the given stored events; those already processed are skipped."""
    return events_process(event_ids=event_ids)


def events_process_enqueue(event_ids: list[int]) -> None:
    """Queue processing of stored events; if the broker is down, the sweep does it."""
    try:
        # The ids' repr would be built for the worker's log, at a cost per request.
        events_process_task.apply_async(
            (event_ids,), argsrepr=f"({len(event_ids)} event ids)"
        )
    except Exception:
        # The events are stored unprocessed, so the beat sweep will find them.
        logger.warning(
            "Could not enqueue event processing; the sweep will pick it up",
            exc_info=True,
            extra={"events": len(event_ids)},
        )


@shared_task
def events_sweep_task() -> int:
    """Process one batch of unprocessed events and re-enqueue if more may remain."""
    processed = events_process_pending(limit=EVENTS_SWEEP_BATCH_SIZE)
    if processed == EVENTS_SWEEP_BATCH_SIZE:
        events_sweep_task.delay()
    return processed


# Shopify: a webhook request applies its delivery at once; this sweep finishes the
# deliveries whose processing failed or never ran (processed_at still empty).
SHOPIFY_SWEEP_BATCH_SIZE = 200


@shared_task
def shopify_deliveries_sweep_task() -> int:
    """Process one batch of unfinished Shopify deliveries; re-enqueue while it helps."""
    tried, finished = shopify_deliveries_process_pending(limit=SHOPIFY_SWEEP_BATCH_SIZE)
    # A full batch that made progress may have more behind it; one that only
    # failed again waits for the next beat rather than spinning.
    if tried == SHOPIFY_SWEEP_BATCH_SIZE and finished:
        shopify_deliveries_sweep_task.delay()
    return finished
