"""Each declared trait keeps the state of the run that converts its stored values.

Values stored before their trait was declared were never converted: every trait
declared so far is marked for a run, which the beat sweep starts.
"""

from django.db import migrations, models
from django.utils import timezone


def runs_ask(apps, schema_editor):
    TraitDefinition = apps.get_model("profiles", "TraitDefinition")
    TraitDefinition.objects.update(
        values_status="pending", values_requested_at=timezone.now()
    )


class Migration(migrations.Migration):

    dependencies = [
        ('profiles', '0036_shop_order_customer'),
    ]

    operations = [
        migrations.AddField(
            model_name='traitdefinition',
            name='values_after_id',
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='traitdefinition',
            name='values_checked',
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='traitdefinition',
            name='values_converted',
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='traitdefinition',
            name='values_finished_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='traitdefinition',
            name='values_kept',
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='traitdefinition',
            name='values_requested_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='traitdefinition',
            name='values_status',
            field=models.CharField(
                blank=True,
                choices=[('', 'Not asked'), ('pending', 'Under way'), ('done', 'Done')],
                default='',
                max_length=10,
            ),
        ),
        migrations.AddField(
            model_name='traitdefinition',
            name='values_touched_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(runs_ask, migrations.RunPython.noop),
    ]
