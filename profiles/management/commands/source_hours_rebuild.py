"""Count each source's processed events again, by the hour they arrived."""

from typing import Any

from django.core.management.base import BaseCommand

from profiles.source_counts import source_hours_rebuild


class Command(BaseCommand):
    help = (
        "Count each source's processed events again from the event table, for the "
        "Sources page's volume, last success and lag. Processing keeps these counts "
        "as it goes; run this after changing events by hand in the database."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        hours = source_hours_rebuild()
        self.stdout.write(f"Counted {hours} source hours.")
