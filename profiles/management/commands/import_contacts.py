"""Import contact files: Mailchimp, Klaviyo or Brevo exports, or any CSV or XLSX."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from profiles.importing import (
    ImportFormatError,
    column_target_check,
    contact_import_create,
    contact_import_discard,
    contact_import_file,
    contact_import_map,
    contact_import_preview,
    contact_import_refuse,
    contact_import_run_stored,
    contact_import_summary,
)
from profiles.importing.reading import ENCODINGS, column_key
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
        "recognised layout's column map. A Mailchimp export's subscribed, "
        "unsubscribed and cleaned files give the same outcome in any order."
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
            "--map",
            action="append",
            default=[],
            metavar="COLUMN=TARGET",
            help="import a column as something else than its default, as the "
            "mapping page does: a profile field (email, first_name, last_name, "
            "full_name, phone, city, region, country_code, timezone), tags, "
            "status, subscribed, unsubscribed, changed_at (when the row last "
            "changed, which dates its consent: of one address's rows, the newest "
            "wins), traits.<name> (a declared trait in any case), or nothing to "
            "leave it out ('Notes='); may be given once per column",
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
        parser.add_argument(
            "--decimal-comma",
            action="store_true",
            help="the CSV files write numbers with a decimal comma (1.234,5), as "
            "European spreadsheets do; otherwise 1.000 is one",
        )

    def handle(
        self,
        *args,
        files: list[Path],
        encoding: str = "",
        date_format: str = "iso",
        decimal_comma: bool = False,
        **options,
    ) -> None:
        folders = [str(path) for path in files if path.is_dir()]
        if folders:
            raise CommandError(f"A folder, not a file: {', '.join(folders)}")
        missing = [str(path) for path in files if not path.is_file()]
        if missing:
            raise CommandError(f"No such file: {', '.join(missing)}")

        changes = _map_read(options.get("map") or [])
        failed = []
        for path in files:
            if changes:
                contact_import = _mapped_import(
                    path,
                    changes,
                    encoding,
                    DATE_FORMAT_NAMES[date_format],
                    decimal_comma=decimal_comma,
                )
            else:
                contact_import = contact_import_file(
                    filename=path.name,
                    data=path.read_bytes(),
                    encoding=encoding,
                    date_format=DATE_FORMAT_NAMES[date_format],
                    decimal_comma=decimal_comma,
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
        if contact_import.status_counts_shown:
            self.stdout.write(
                f"  email consent after it: {contact_import.status_counts_shown}"
            )
        for rejection in contact_import.rejections:
            self.stdout.write(
                f"  record {rejection['record']} (line {rejection['line']}): "
                f"{rejection['reason']}: {rejection['email']!r}: {rejection['message']}"
            )
        for note in contact_import.notes:
            self.stdout.write(f"  note: {note['message']}")


def _map_read(given: list[str]) -> dict[str, str]:
    changes = {}
    for item in given:
        column, sep, target = item.partition("=")
        if not sep or not column.strip():
            raise CommandError(f"--map {item!r}: write it as COLUMN=TARGET")
        if column.strip() in changes:
            raise CommandError(f"--map {item!r}: {column.strip()!r} is mapped twice")
        try:
            changes[column.strip()] = column_target_check(
                target.strip(), column=column.strip()
            )
        except ImportFormatError as exc:
            raise CommandError(f"--map {item!r}: {exc}") from exc
    return changes


def _mapped_import(
    path: Path,
    changes: dict[str, str],
    encoding: str,
    date_format: str,
    *,
    decimal_comma: bool,
) -> ContactImport:
    """Import a file with the default map of its layout, changed as --map says."""
    contact_import = contact_import_create(filename=path.name, data=path.read_bytes())
    try:
        preview = contact_import_preview(
            contact_import=contact_import, encoding=encoding
        )
    except ImportFormatError as exc:
        # The mapping page keeps an import pending while its encoding is to be
        # chosen; here no one would choose it: refused, as without --map.
        contact_import_refuse(contact_import=contact_import, error=str(exc))
        return contact_import
    # Header names are matched as everywhere else: any case, any spacing.
    by_key = {column_key(name): name for name in preview.names}
    changes = {
        by_key.get(column_key(name), name): target for name, target in changes.items()
    }
    unknown = sorted(set(changes) - set(preview.names))
    if unknown:
        contact_import_discard(contact_import_id=contact_import.pk)
        raise CommandError(
            f"{path.name}: no column {', '.join(map(repr, unknown))}; its columns "
            f"are {', '.join(map(repr, preview.names))}"
        )
    try:
        contact_import_map(
            contact_import_id=contact_import.pk,
            column_map={**preview.column_map, **changes},
            date_format=date_format,
            encoding=encoding,
            decimal_comma=decimal_comma,
        )
    except ImportFormatError as exc:
        contact_import_discard(contact_import_id=contact_import.pk)
        raise CommandError(f"{path.name}: {exc}") from exc
    return contact_import_run_stored(contact_import_id=contact_import.pk)
