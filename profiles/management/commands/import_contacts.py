"""Import contact files: Mailchimp, Klaviyo or Brevo exports, or any CSV or XLSX."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from profiles.importing import contact_import_file, contact_import_summary
from profiles.importing.reading import ENCODINGS
from profiles.models import ContactImport, ImportStatus


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

    def handle(self, *args, files: list[Path], encoding: str = "", **options) -> None:
        folders = [str(path) for path in files if path.is_dir()]
        if folders:
            raise CommandError(f"A folder, not a file: {', '.join(folders)}")
        missing = [str(path) for path in files if not path.is_file()]
        if missing:
            raise CommandError(f"No such file: {', '.join(missing)}")

        failed = []
        for path in files:
            contact_import = contact_import_file(
                filename=path.name, data=path.read_bytes(), encoding=encoding
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
