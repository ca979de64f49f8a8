"""A declared trait whose only allowed value is "[]" allows any value again.

The Traits page showed a trait with no allowed values as "[]", and saving the page
again stored that text as the one allowed value.
"""

from django.db import migrations


def allowed_brackets_clear(apps, schema_editor):
    TraitDefinition = apps.get_model("profiles", "TraitDefinition")
    for definition in TraitDefinition.objects.all():
        if definition.allowed_values == ["[]"]:
            definition.allowed_values = []
            definition.save(update_fields=["allowed_values"])


class Migration(migrations.Migration):
    dependencies = [
        ("profiles", "0021_suppressed_profiles_marked"),
    ]

    operations = [
        migrations.RunPython(allowed_brackets_clear, migrations.RunPython.noop),
    ]
