from config.celery import app


def test_every_scheduled_task_is_registered():
    app.loader.import_default_modules()

    scheduled = {entry["task"] for entry in app.conf.beat_schedule.values()}

    assert scheduled <= set(app.tasks)
    assert scheduled == {
        "profiles.tasks.events_sweep_task",
        "campaigns.tasks.campaigns_sweep_task",
        "profiles.tasks.shopify_deliveries_sweep_task",
        "campaigns.tasks.esp_events_sweep_task",
        "profiles.tasks.contact_imports_sweep_task",
        "segments.tasks.segments_time_refresh_task",
        "segments.tasks.segments_refresh_all_task",
        "profiles.tasks.events_orphans_repair_task",
        "profiles.tasks.trait_values_sweep_task",
    }
