"""The Celery app, configured from Django's settings (CELERY_* names)."""

import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("bespoke")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    "process-pending-events": {
        "task": "profiles.tasks.events_sweep_task",
        "schedule": 30.0,
    },
    "send-due-campaigns": {
        "task": "campaigns.tasks.campaigns_sweep_task",
        "schedule": 30.0,
    },
    "finish-shopify-deliveries": {
        "task": "profiles.tasks.shopify_deliveries_sweep_task",
        "schedule": 60.0,
    },
    "finish-esp-events": {
        "task": "campaigns.tasks.esp_events_sweep_task",
        "schedule": 60.0,
    },
    "fail-stuck-contact-imports": {
        "task": "profiles.tasks.contact_imports_sweep_task",
        "schedule": 60.0,
    },
    "convert-stored-trait-values": {
        "task": "profiles.tasks.trait_values_sweep_task",
        "schedule": 60.0,
    },
    # Time windows lapse with no event; this also releases stuck segment refreshes.
    "refresh-time-window-segments": {
        "task": "segments.tasks.segments_time_refresh_task",
        "schedule": 300.0,
    },
    "refresh-every-segment": {
        "task": "segments.tasks.segments_refresh_all_task",
        "schedule": 3600.0,
    },
    # The event table has no foreign key to profiles: this finds any event a race
    # left attached to a deleted profile (profiles/models.py, Event.profile).
    "repair-orphaned-events": {
        "task": "profiles.tasks.events_orphans_repair_task",
        "schedule": 86400.0,
    },
}


# Celery's Django fixup closes every database connection after each task unless
# CELERY_DB_REUSE_MAX is set, whatever DATABASE_CONN_MAX_AGE says: a worker
# processing events then opened a PostgreSQL connection (a new backend, its caches
# cold) for every task. Settings set CELERY_DB_REUSE_MAX so that the fixup leaves
# them open, and a worker treats each task as Django treats a request: connections
# past their age, or broken, are closed before and after it.
@task_prerun.connect
@task_postrun.connect
def _database_connections_tidy(task: Any = None, **_: Any) -> None:
    if task is not None and task.request.is_eager:
        return  # run inside the caller's own transaction: its connection is not ours
    close_old_connections()
