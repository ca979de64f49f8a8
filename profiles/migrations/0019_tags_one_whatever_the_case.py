"""A profile's tags differing only in case ("VIP", "vip") become one, the first kept."""

import django.db.models.functions.text
from django.db import migrations, models
from django.db.models import Count, Min
from django.db.models.functions import Lower


def tags_merge_caseless(apps, schema_editor):
    ProfileTag = apps.get_model("profiles", "ProfileTag")
    repeated = (
        ProfileTag.objects.annotate(key=Lower("name"))
        .values("profile_id", "key")
        .annotate(count=Count("id"), first=Min("id"))
        .filter(count__gt=1)
    )
    for group in repeated.iterator():
        ProfileTag.objects.annotate(key=Lower("name")).filter(
            profile_id=group["profile_id"], key=group["key"]
        ).exclude(id=group["first"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("profiles", "0018_event_profile_index_partial"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="profiletag",
            name="profile_tag_unique",
        ),
        migrations.RemoveIndex(
            model_name="profiletag",
            name="profiles_pr_name_754ac8_idx",
        ),
        migrations.RunPython(tags_merge_caseless, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="profiletag",
            index=models.Index(
                django.db.models.functions.text.Lower("name"),
                name="profile_tag_name_caseless",
            ),
        ),
        migrations.AddConstraint(
            model_name="profiletag",
            constraint=models.UniqueConstraint(
                models.F("profile"),
                django.db.models.functions.text.Lower("name"),
                name="profile_tag_unique_caseless",
            ),
        ),
    ]
