"""Profiles whose address is on the suppression list are marked suppressed.

Before, an identify that gave a profile a listed address left it unmarked, so that
segment rules and the builder's preview counted someone sending skips.
"""

import hashlib
import hmac

from django.conf import settings
from django.db import migrations
from django.utils import timezone

BATCH = 10_000


def suppressed_profiles_mark(apps, schema_editor):
    Profile = apps.get_model("profiles", "Profile")
    Suppression = apps.get_model("profiles", "Suppression")
    listed = set(Suppression.objects.values_list("email_hash", flat=True))
    if not listed:
        return

    # The list's keyed hash (profiles.services.suppression_hash) of each address.
    key = settings.BESPOKE_SUPPRESSION_KEY.encode()
    unmarked = Profile.objects.filter(suppressed_at=None, email__isnull=False)
    found = []
    for pk, email in unmarked.values_list("pk", "email").iterator(chunk_size=BATCH):
        digest = hmac.new(key, email.lower().encode(), hashlib.sha256).hexdigest()
        if digest in listed:
            found.append(pk)
    now = timezone.now()
    for first in range(0, len(found), BATCH):
        Profile.objects.filter(pk__in=found[first : first + BATCH]).update(
            suppressed_at=now
        )


class Migration(migrations.Migration):
    dependencies = [
        ("profiles", "0020_import_requeued_at"),
    ]

    operations = [
        migrations.RunPython(suppressed_profiles_mark, migrations.RunPython.noop),
    ]
