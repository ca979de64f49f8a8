"""Celery tasks of the profiles app: thin callers of services, taking ids."""

from celery import shared_task

from profiles.importing import contact_import_run_stored


@shared_task
def contact_import_task(contact_import_id: int) -> None:
    """Run an uploaded contact import from the bytes kept for it."""
    # No retry: the run is claimed once, and a failure is kept on the import itself.
    contact_import_run_stored(contact_import_id=contact_import_id)
