from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("profiles", "0003_trait_schema_shop_webhooks_import_progress"),
    ]

    operations = [
        migrations.AddField(
            model_name="profile",
            name="suppressed_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
