"""Workbook cells read as Excel shows them: numbers to 15 digits, errors as empty."""

import io
import re
import zipfile

import pytest
from openpyxl import Workbook

from profiles.importing import contact_import_file
from profiles.importing.mapping import NO_CONSENT_COLUMN_NOTE
from profiles.importing.reading import xlsx_cell_text
from profiles.models import ImportStatus, Profile, TraitDefinition, TraitType

SHEET = "xl/worksheets/sheet1.xml"


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def xlsx_bytes(rows: list[list[object]], stored: dict[str, str] | None = None) -> bytes:
    """Write a workbook with openpyxl; `stored` sets a number cell's text in the file.

    openpyxl writes a float to 16 digits, and Excel to 17 (0.30000000000000004).
    """
    workbook = Workbook()
    for row in rows:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    if not stored:
        return buffer.getvalue()

    written = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source,
        zipfile.ZipFile(written, "w") as target,
    ):
        for item in source.infolist():
            part = source.read(item)
            if item.filename == SHEET:
                part = _values_set(part.decode(), stored).encode()
            target.writestr(item, part)
    return written.getvalue()


def _values_set(xml: str, stored: dict[str, str]) -> str:
    for cell, text in stored.items():
        xml, count = re.subn(
            rf'(<c r="{cell}" t="n"><v>)[^<]*(</v>)', rf"\g<1>{text}\g<2>", xml
        )
        assert count == 1
    return xml


# Numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.234567890123457e18, "1234567890123460000"),
        (1.234567890123457e16, "12345678901234600"),
        (0.30000000000000004, "0.3"),
        (1e-7, "0.0000001"),
        (-2.5, "-2.5"),
        (3.0, "3"),
        (-0.0, "0"),
        (1e21, "1e+21"),
        (1e-16, "1e-16"),
        (12345678901234567890123, "12345678901234567890123"),
    ],
)
def test_a_number_cell_reads_as_excel_shows_it(value, text):
    assert xlsx_cell_text(value) == text


@pytest.mark.django_db
def test_workbook_numbers_keep_no_digit_excel_does_not_show():
    TraitDefinition.objects.create(name="score", type=TraitType.NUMBER)
    data = xlsx_bytes(
        [
            ["Email", "Account", "Serial", "Small", "Orders", "Score"],
            [
                "a@example.com",
                1234567890123456789,
                12345678901234567,
                1e-7,
                3,
                0.30000000000000004,
            ],
            ["b@example.com", 987654321, 2.5, 0.25, 7, 12.5],
        ],
        stored={"F2": "0.30000000000000004"},
    )

    contact_import = contact_import_file(filename="numbers.xlsx", data=data)

    assert contact_import.status == ImportStatus.DONE
    assert contact_import.rejections == []
    assert contact_import.notes == [NO_CONSENT_COLUMN_NOTE]
    traits = dict(Profile.objects.values_list("email", "traits"))
    assert traits == {
        "a@example.com": {
            "account": "1234567890123460000",
            "serial": "12345678901234600",
            "small": "0.0000001",
            "orders": "3",
            "score": 0.3,
        },
        "b@example.com": {
            "account": "987654321",
            "serial": "2.5",
            "small": "0.25",
            "orders": "7",
            "score": 12.5,
        },
    }


# Errors ----------------------------------------------------------------------------


def error_workbook(codes: list[str]) -> bytes:
    """Write a workbook whose Score cells hold Excel errors, as Excel types them."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Email", "Name", "Score"])
    for number, code in enumerate(codes, start=1):
        sheet.append([f"e{number}@example.com", "Ann Lee", 7])
        # openpyxl types only the older codes as errors by itself.
        cell = sheet.cell(row=number + 1, column=3, value=code)
        cell.data_type = "e"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


@pytest.mark.django_db
def test_an_excel_error_cell_is_imported_as_empty_with_a_note_naming_it():
    TraitDefinition.objects.create(name="score", type=TraitType.NUMBER)
    codes = [
        "#DIV/0!",
        "#N/A",
        "#VALUE!",
        "#REF!",
        "#NAME?",
        "#NUM!",
        "#NULL!",
        "#GETTING_DATA",
    ]
    Profile.objects.create(email="e1@example.com", traits={"score": 3})

    contact_import = contact_import_file(
        filename="errors.xlsx", data=error_workbook(codes)
    )

    assert contact_import.rejections == []
    assert contact_import.notes == [
        *(
            {
                "kind": "sheet_error",
                "record": number,
                "column": "Score",
                "email": f"e{number}@example.com",
                "message": (
                    f"Record {number}: Score holds the Excel error {code}, so it "
                    "was read as empty."
                ),
            }
            for number, code in enumerate(codes, start=1)
        ),
        NO_CONSENT_COLUMN_NOTE,
    ]
    traits = dict(Profile.objects.values_list("email", "traits"))
    assert traits == {f"e{number}@example.com": {} for number in range(2, 9)} | {
        "e1@example.com": {"score": 3}
    }


@pytest.mark.django_db
def test_an_error_in_the_email_cell_refuses_the_record_and_names_the_error():
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Email", "Plan"])
    sheet.append(["#REF!", "gold"])
    buffer = io.BytesIO()
    workbook.save(buffer)

    contact_import = contact_import_file(filename="e.xlsx", data=buffer.getvalue())

    assert [r["reason"] for r in contact_import.rejections] == ["missing_email"]
    assert [note["message"] for note in contact_import.notes] == [
        "Record 1: Email holds the Excel error #REF!, so it was read as empty.",
        NO_CONSENT_COLUMN_NOTE["message"],
    ]
    assert not Profile.objects.exists()


@pytest.mark.django_db
def test_text_that_looks_like_an_excel_error_stays_text():
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Email", "Code"])
    sheet.append(["w@example.com", "#GETTING_DATA"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    csv_data = b"Email,Code\nc@example.com,#DIV/0!\n"

    workbook_import = contact_import_file(filename="w.xlsx", data=buffer.getvalue())
    csv_import = contact_import_file(filename="c.csv", data=csv_data)

    assert (workbook_import.notes, csv_import.notes) == (
        [NO_CONSENT_COLUMN_NOTE],
        [NO_CONSENT_COLUMN_NOTE],
    )
    traits = dict(Profile.objects.values_list("email", "traits"))
    assert traits == {
        "w@example.com": {"code": "#GETTING_DATA"},
        "c@example.com": {"code": "#DIV/0!"},
    }


@pytest.mark.django_db
@pytest.mark.parametrize("copy_rows_min", [0, 10**9])
def test_a_nul_written_as_excels_escape_is_read_as_empty_and_named(
    monkeypatch, copy_rows_min
):
    from profiles.importing import runs

    monkeypatch.setattr(runs, "COPY_MIN_ROWS", copy_rows_min)
    rows = [
        ["Email", "First Name", "Note", "Tags", "Odd_x0000_name"],
        ["ok1@example.com", "Ana", "bad_x0000_note", "VIP", "a"],
        ["ok2@example.com", "Ben", "fine", "big_x0000_", "b"],
        ["nul_x0000_@example.com", "Cy", "n", "", "c"],
    ]

    contact_import = contact_import_file(filename="n.xlsx", data=xlsx_bytes(rows))

    assert contact_import.status == ImportStatus.DONE
    assert [r["reason"] for r in contact_import.rejections] == ["missing_email"]
    messages = [note["message"] for note in contact_import.notes]
    nul = "holds a NUL character (Excel's _x0000_), so it was read as empty."
    assert f"Record 1: Note {nul}" in messages
    assert f"Record 2: Tags {nul}" in messages
    assert f"Record 3: Email {nul}" in messages
    ana, ben = Profile.objects.order_by("email")
    assert "note" not in ana.traits
    assert ana.traits["column_5"] == "a"
    assert list(ben.tags.values_list("name", flat=True)) == []


@pytest.mark.django_db
def test_half_a_character_written_as_excels_escape_is_read_as_empty_and_named():
    rows = [["Email", "Notes", "Tags"], ["ok@example.com", "x_xD800_y", "t_xDC00_"]]

    contact_import = contact_import_file(filename="s.xlsx", data=xlsx_bytes(rows))

    assert contact_import.status == ImportStatus.DONE
    half = "holds half of a character (Excel's _xD800_ to _xDFFF_)"
    assert [note["message"] for note in contact_import.notes] == [
        f"Record 1: Notes {half}, which no text holds, so it was read as empty.",
        f"Record 1: Tags {half}, which no text holds, so it was read as empty.",
        NO_CONSENT_COLUMN_NOTE["message"],
    ]
    assert Profile.objects.get().traits == {}


@pytest.mark.django_db
def test_a_decimal_comma_for_a_workbook_is_said_to_change_nothing():
    TraitDefinition.objects.create(name="points", type=TraitType.NUMBER)
    rows = [["Email", "Points"], ["wb.dc@example.com", 1250.5]]

    contact_import = contact_import_file(
        filename="eu.xlsx", data=xlsx_bytes(rows), decimal_comma=True
    )

    assert Profile.objects.get().traits == {"points": 1250.5}
    kinds = [note.get("kind") for note in contact_import.notes]
    assert "decimal_comma_workbook" in kinds
