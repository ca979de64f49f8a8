"""The Celery app, configured from Django's settings (CELERY_* names)."""

import os

from celery import Celery

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
    "fail-stuck-contact-imports": {
        "task": "profiles.tasks.contact_imports_sweep_task",
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
