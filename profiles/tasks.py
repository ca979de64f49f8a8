"""Celery tasks of the profiles app: thin callers of services, taking ids."""

import contextlib
import logging

from celery import shared_task
from django.db import DatabaseError, OperationalError

from profiles.importing import (
    contact_import_run_stored,
    contact_import_uploads_purge,
    contact_imports_requeue,
    contact_imports_sweep,
)
from profiles.processing import (
    events_orphans_repair,
    events_process,
    events_process_pending,
    events_processing_request,
    events_processing_request_drop,
)
from profiles.shopify import shopify_deliveries_process_pending
from profiles.trait_values import trait_values_conform_batch, trait_values_sweep

logger = logging.getLogger(__name__)


@shared_task
def contact_import_task(contact_import_id: int) -> None:
    """Run an uploaded contact import from the bytes kept for it."""
    # No retry: the run is claimed once, and a failure is kept on the import itself.
    contact_import_run_stored(contact_import_id=contact_import_id)


@shared_task
def contact_imports_sweep_task() -> int:
    """Fail the running imports whose worker stopped; queue again the lost ones.

    Also deletes the uploads left unused for a week (contact_import_uploads_purge).
    """
    for contact_import_id in contact_imports_requeue():
        contact_import_task.delay(contact_import_id)
    contact_import_uploads_purge()
    return contact_imports_sweep()


# Events: the API and the Shopify webhook ask for a processing run once their events
# are committed; a run already asked for and not yet begun takes them along. The
# beat sweep finds whatever a lost or failed task left unprocessed.
EVENTS_SWEEP_BATCH_SIZE = 1000


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def events_process_task(event_ids: list[int] | None = None) -> int:
    """Process the waiting events, oldest first; return how many were processed.

    `event_ids` is ignored: tasks queued by an earlier release named their events.
    """
    return events_process()


def events_process_enqueue() -> None:
    """Queue a processing run unless one is queued; if the broker is down, the sweep."""
    try:
        if not events_processing_request():
            return
    except DatabaseError:
        # The events are committed; without the request row, ask anyway.
        logger.warning("Could not record the processing request", exc_info=True)
    try:
        events_process_task.apply_async()
    except Exception:
        # The events are stored unprocessed, so the beat sweep will find them; the
        # next request tries the broker again.
        logger.warning(
            "Could not enqueue event processing; the sweep will pick it up",
            exc_info=True,
        )
        with contextlib.suppress(DatabaseError):
            events_processing_request_drop()


@shared_task
def events_sweep_task() -> int:
    """Process one batch of unprocessed events and re-enqueue if more may remain."""
    processed = events_process_pending(limit=EVENTS_SWEEP_BATCH_SIZE)
    if processed == EVENTS_SWEEP_BATCH_SIZE:
        events_sweep_task.delay()
    return processed


@shared_task
def events_orphans_repair_task() -> int:
    """Delete the events left behind by a profile deleted meanwhile."""
    return events_orphans_repair()


# Shopify: a webhook request applies its delivery at once; this sweep finishes the
# deliveries whose processing failed or never ran (processed_at still empty).
SHOPIFY_SWEEP_BATCH_SIZE = 200
# A delivery a webhook request could not apply (a profile held past the lock
# timeout) is tried again this much later, not at the next beat sweep.
SHOPIFY_RETRY_SECONDS = 5


@shared_task
def shopify_deliveries_sweep_task() -> int:
    """Process one batch of unfinished Shopify deliveries; re-enqueue while it helps."""
    tried, finished = shopify_deliveries_process_pending(limit=SHOPIFY_SWEEP_BATCH_SIZE)
    if finished:
        # Their events wait for processing, as a webhook request's do.
        events_process_enqueue()
    # A full batch that made progress may have more behind it; one that only
    # failed again waits for the next beat rather than spinning.
    if tried == SHOPIFY_SWEEP_BATCH_SIZE and finished:
        shopify_deliveries_sweep_task.delay()
    return finished


def shopify_deliveries_retry_soon() -> None:
    """Queue a sweep of unfinished deliveries in a few seconds; the beat's if not."""
    try:
        shopify_deliveries_sweep_task.apply_async(countdown=SHOPIFY_RETRY_SECONDS)
    except Exception:
        logger.warning("Could not queue a Shopify retry; the sweep will", exc_info=True)


# Traits: a declared trait's stored values are brought to its type in batches, one
# task each, and the definition's row says how far the run got; the beat sweep
# queues again a run whose task was lost.


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def trait_values_conform_task(trait_definition_id: int) -> bool:
    """Convert one batch of a trait's stored values; queue the next while more remain."""
    more = trait_values_conform_batch(trait_definition_id=trait_definition_id)
    if more:
        trait_values_conform_task.delay(trait_definition_id)
    return more


@shared_task
def trait_values_sweep_task() -> int:
    """Queue again the conversions of stored trait values that stopped making progress."""
    trait_definition_ids = trait_values_sweep()
    for trait_definition_id in trait_definition_ids:
        trait_values_conform_task.delay(trait_definition_id)
    return len(trait_definition_ids)
