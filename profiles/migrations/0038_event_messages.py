"""MessageIds are kept unique in a table of their own; profiles leave room on each page.

Every stored event's messageId is copied into the new table before the event
table's unique constraint goes, so an id stored before stays refused after. The web
processes are stopped for it, as the workers are: an event the old release stored
after the copy would claim nothing, and its retry would be stored again.

On PostgreSQL the profile table is given a fill factor of 70: processing rewrites a
chunk's profiles after each chunk, and a new row version that finds room on its
page takes no new entry in the table's indexes (a heap-only update). It holds for
the pages written from now on; a VACUUM FULL applies it to the old ones.
"""

from django.db import migrations, models

import profiles.models

PROFILE_FILL_FACTOR = 70


def profile_fill_factor_set(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"ALTER TABLE profiles_profile SET (fillfactor = {PROFILE_FILL_FACTOR})"
    )


def profile_fill_factor_reset(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("ALTER TABLE profiles_profile RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [
        ("profiles", "0037_trait_values_run"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventMessage",
            fields=[
                (
                    "message_id",
                    profiles.models.KeyText(
                        max_length=100, primary_key=True, serialize=False
                    ),
                ),
                ("event_id", models.BigIntegerField(blank=True, null=True)),
            ],
        ),
        migrations.RunSQL(
            "INSERT INTO profiles_eventmessage (message_id, event_id) "
            "SELECT message_id, id FROM profiles_event",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.RemoveConstraint(
            model_name="event",
            name="event_message_id_unique",
        ),
        migrations.RunPython(profile_fill_factor_set, profile_fill_factor_reset),
    ]
