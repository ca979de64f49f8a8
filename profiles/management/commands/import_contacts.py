"""Import contact files: Mailchimp, Klaviyo or Brevo exports, or any CSV or XLSX."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from profiles.importing import contact_import_file, contact_import_summary
from profiles.importing.reading import ENCODINGS
from profiles.models import ContactImport, ImportStatus

# The mapping page's date formats (profiles/forms.py DATE_FORMATS), by name.
DATE_FORMAT_NAMES = {
    "iso": "",
    "day-first": "%d/%m/%Y",
    "month-first": "%m/%d/%Y",
    "day-first-dots": "%d.%m.%Y",
    "day-first-dashes": "%d-%m-%Y",
    "year-first": "%Y-%m-%d",
}


class Command(BaseCommand):
    help = (
        "Import contact CSV or XLSX files in the order given, each with its "
        "recognised layout's column map. For a Mailchimp export, give the "
        "subscribed file first, then unsubscribed, then cleaned."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
        parser.add_argument(
            "--encoding",
            choices=sorted(ENCODINGS),
            default="",
            help="the CSV files' text encoding (found from each file when not given)",
        )
        parser.add_argument(
            "--date-format",
            choices=sorted(DATE_FORMAT_NAMES),
            default="iso",
            help="how the files write dates, as on the mapping page: iso "
            "(2025-03-31, the default), day-first (31/03/2025), month-first "
            "(03/31/2025), day-first-dots, day-first-dashes, year-first; dates "
            "are never guessed",
        )

    def handle(
        self,
        *args,
        files: list[Path],
        encoding: str = "",
        date_format: str = "iso",
        **options,
    ) -> None:
        folders = [str(path) for path in files if path.is_dir()]
        if folders:
            raise CommandError(f"A folder, not a file: {', '.join(folders)}")
        missing = [str(path) for path in files if not path.is_file()]
        if missing:
            raise CommandError(f"No such file: {', '.join(missing)}")

        failed = []
        for path in files:
            contact_import = contact_import_file(
                filename=path.name,
                data=path.read_bytes(),
                encoding=encoding,
                date_format=DATE_FORMAT_NAMES[date_format],
            )
            self._report(contact_import)
            if contact_import.status != ImportStatus.DONE:
                failed.append(path.name)

        if failed:
            raise CommandError(f"Not imported: {', '.join(failed)}")

    def _report(self, contact_import: ContactImport) -> None:
        name = contact_import.filename
        if contact_import.status != ImportStatus.DONE:
            self.stderr.write(f"{name}: failed: {contact_import.error}")
            return

        self.stdout.write(
            f"{name} ({contact_import.layout}): "
            f"{contact_import_summary(contact_import)}"
        )
        for rejection in contact_import.rejections:
            self.stdout.write(
                f"  record {rejection['record']} (line {rejection['line']}): "
                f"{rejection['reason']}: {rejection['email']!r}: {rejection['message']}"
            )
        for note in contact_import.notes:
            self.stdout.write(f"  note: {note['message']}")
