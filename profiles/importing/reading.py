"""Reading a contact file: bytes to a header and records of text cells.

CSV text in any of the encodings spreadsheets save (UTF-8 with or without a
byte-order mark, UTF-16, Windows-1252) and any of the usual delimiters, or the first
sheet of an XLSX workbook. Nothing here knows what a column means.
"""

import csv
import io
import re
import zipfile
from collections.abc import Iterator
from datetime import date, datetime, time
from functools import lru_cache

from openpyxl import load_workbook

DELIMITERS = (",", ";", "\t")
XLSX_PARTS = {"[Content_Types].xml", "xl/workbook.xml"}
# Tag names each in plain double quotes, comma-separated, no quote inside a name.
QUOTED_TAGS = re.compile(r'"[^"]*"(?:,"[^"]*")*')
QUOTED_TAG = re.compile(r'"([^"]*)"')


class ImportFormatError(ValueError):
    """The file cannot be read as a contact list; the message says why, for people."""


@lru_cache(maxsize=4096)
def column_key(name: str) -> str:
    """Return the key headers are compared by: case-folded, letters and digits only."""
    return re.sub(r"[\W_]+", "", name.casefold())


def trait_key(name: str, position: int) -> str:
    """Return the trait name a column of this header name becomes by default."""
    key = re.sub(r"[\W_]+", "_", name.casefold()).strip("_")
    return key or f"column_{position + 1}"


def contacts_decode(data: bytes) -> str:
    """Return the file's text: UTF-8 (with or without BOM), UTF-16 or Windows-1252."""
    if data.startswith(b"PK\x03\x04"):
        raise ImportFormatError(
            "This is a zip archive. Unzip the Mailchimp export and import its CSV "
            "files one by one: subscribed, then unsubscribed, then cleaned."
        )

    text = _text_decode(data)
    # PostgreSQL stores no NUL character, and a text file has none.
    if "\x00" in text:
        raise ImportFormatError(
            "The file contains NUL characters, so it is not a CSV text file."
        )
    return text


def _text_decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")

    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass

    # Excel on Windows saves "CSV" in the machine's code page, most often this one.
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(
            "The file is neither UTF-8 nor Windows-1252 text; save it as CSV UTF-8."
        ) from exc


def _delimiter_sniff(text: str) -> str:
    """Return the delimiter that splits the header into the most columns."""
    header = text.split("\n", 1)[0]
    counts = {
        delimiter: len(next(csv.reader([header], delimiter=delimiter), []))
        for delimiter in DELIMITERS
    }
    return max(DELIMITERS, key=lambda delimiter: counts[delimiter])


def _csv_records(text: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (physical line where the record starts, cells) for each CSV record."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter_sniff(text))
    next_line = 1
    try:
        for cells in reader:
            yield next_line, cells
            next_line = reader.line_num + 1
    except csv.Error as exc:
        raise ImportFormatError(
            f"The file is not valid CSV near line {reader.line_num}: {exc}."
        ) from exc


def _is_xlsx(data: bytes) -> bool:
    if not data.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return set(archive.namelist()) >= XLSX_PARTS
    except zipfile.BadZipFile:
        return False


def xlsx_cell_text(value: object, *, date_format: str = "") -> str:
    """Return a spreadsheet cell as the text a CSV export of it would hold."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return _datetime_text(value, date_format)
    if isinstance(value, date):
        return value.strftime(date_format) if date_format else value.isoformat()
    if isinstance(value, time):
        return value.isoformat()
    return str(value)


def _datetime_text(value: datetime, date_format: str) -> str:
    # A date typed into a sheet is a datetime at midnight: give the date alone.
    if value.time() == time(0):
        return value.strftime(date_format) if date_format else value.date().isoformat()
    return value.isoformat(sep=" ")


def _xlsx_records(data: bytes, date_format: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (row number, cells as text) for each row of the workbook's first sheet."""
    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds on a damaged workbook
        raise ImportFormatError(f"The workbook cannot be read: {exc}.") from exc

    try:
        sheet = workbook.worksheets[0]
        for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
            yield number, [xlsx_cell_text(v, date_format=date_format) for v in values]
    finally:
        workbook.close()


def contacts_records(
    data: bytes, *, date_format: str = ""
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line, cells) for every record of a CSV or XLSX file, header first."""
    if _is_xlsx(data):
        yield from _xlsx_records(data, date_format)
        return

    text = contacts_decode(data)
    if not text.strip():
        raise ImportFormatError("The file is empty.")
    yield from _csv_records(text)


def contacts_header(data: bytes) -> list[str]:
    """Return the stripped column names of a file's first record."""
    records = contacts_records(data)
    try:
        _, names = next(records)
    except StopIteration as exc:
        raise ImportFormatError("The file is empty.") from exc
    finally:
        records.close()
    return [name.strip() for name in names]


def contacts_tags_split(cell: str) -> list[str]:
    """Split a TAGS cell like '"VIP","Expo 2024, Boston"' into its tag names."""
    if "," not in cell and '"' not in cell:
        name = cell.strip()
        return [name] if name else []

    if QUOTED_TAGS.fullmatch(cell):
        # What Mailchimp writes, read without a CSV reader: '"VIP","Expo, Boston"'.
        stripped = (name.strip() for name in QUOTED_TAG.findall(cell))
        return list(dict.fromkeys(name for name in stripped if name))

    names: list[str] = []
    for cells in csv.reader(io.StringIO(cell, newline=""), skipinitialspace=True):
        for name in cells:
            name = name.strip()
            if name and name not in names:
                names.append(name)
    return names
