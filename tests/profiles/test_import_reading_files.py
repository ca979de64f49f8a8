"""Files that broke reading in QA: stray quotes, lone CRs, Excel's sep= line,
repeated headers, typed workbook dates and the wording of refused fields."""

import io
import zipfile
from datetime import datetime
from decimal import Decimal

import pytest
from openpyxl import Workbook

from profiles.importing import (
    ImportFormatError,
    contact_import_create,
    contact_import_file,
    contact_import_map,
    contact_import_run_stored,
    contacts_header,
    contacts_parse,
    contacts_preview,
)
from profiles.importing.reading import trait_key
from profiles.models import ImportStatus, Profile, TraitDefinition, TraitType
from profiles.traits import TraitInvalid, TraitRule, trait_coerce

STRAY_QUOTE = (
    b"Email,Name,City\r\n"
    b"q1.qa@example.com,Ann,Paris\r\n"
    b'q2.qa@example.com,"Bobby,Rome\r\n'
    b"q3.qa@example.com,Cid,Oslo\r\n"
    b"q4.qa@example.com,Dee,Lima\r\n"
)
UNCLOSED_ON_LINE_3 = (
    "A quote opened on line 3 is never closed, so the rest of the file would be "
    "read as one cell. Close or remove that quote and upload the file again."
)
DAMAGED_WORKBOOK = (
    "The workbook is damaged (often a file cut short while saving or uploading), "
    "so it cannot be read. Open it in Excel, save it again and upload the new file."
)


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def xlsx_bytes(rows: list[list[object]]) -> bytes:
    workbook = Workbook()
    for row in rows:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def naive(*parts: int) -> datetime:
    return datetime(*parts)  # noqa: DTZ001 - a sheet's cells hold naive times


def run_mapped(data: bytes, column_map: dict[str, str], date_format: str = ""):
    contact_import = contact_import_create(filename="qa.csv", data=data)
    contact_import_map(
        contact_import_id=contact_import.pk,
        column_map=column_map,
        date_format=date_format,
    )
    return contact_import_run_stored(contact_import_id=contact_import.pk)


# A quote that is never closed -------------------------------------------------------


@pytest.mark.django_db
def test_a_stray_quote_fails_the_import_naming_its_line_and_writes_nothing():
    contact_import = contact_import_file(filename="stray.csv", data=STRAY_QUOTE)

    assert contact_import.status == ImportStatus.FAILED
    assert contact_import.error == UNCLOSED_ON_LINE_3
    assert contact_import.records == 0
    assert Profile.objects.count() == 0


@pytest.mark.django_db
def test_a_stray_quote_is_named_on_the_line_it_opens_after_a_multi_line_cell():
    data = (
        b"email,notes,city\n"
        b"a@example.com,Ann,Paris\n"
        b'b@example.com,"first line\nsecond line","Lyon\n'
        b"c@example.com,Cid,Oslo\n"
    )

    with pytest.raises(ImportFormatError) as refused:
        contacts_parse(data)

    assert str(refused.value).startswith("A quote opened on line 4 is never closed")


@pytest.mark.django_db
def test_a_stray_quote_closed_lines_later_is_refused_not_left_to_swallow_rows():
    # The lines between would be one cell of the first name, and their people lost.
    data = (
        b"email,first_name,last_name\n"
        b'one@example.com,"Ann,One\n'
        b"two@example.com,Two,Two\n"
        b"three@example.com,Three,Three\n"
        b'five@example.com,Fi"ve,Five\n'
    )

    with pytest.raises(ImportFormatError) as refused:
        contacts_parse(data)

    assert str(refused.value) == (
        "A quote opened on line 2 is closed only on line 5, so the lines between "
        "were read as part of one cell, though they look like rows of their own. "
        "Remove or close that quote and upload the file again."
    )


@pytest.mark.django_db
def test_a_quoted_cell_on_two_lines_with_commas_is_one_cell():
    data = (
        b"email,first_name,address\n"
        b'ann@example.com,Ann,"12 Main St, Apt 4\nSpringfield, IL, 62704"\n'
        b"bo@example.com,Bo,Oslo\n"
    )

    column_map = {"email": "email", "first_name": "", "address": "traits.address"}
    parsed = contacts_parse(data, column_map=column_map)

    assert [row.traits for row in parsed.rows] == [
        {"address": "12 Main St, Apt 4\nSpringfield, IL, 62704"},
        {"address": "Oslo"},
    ]


@pytest.mark.django_db
def test_a_list_of_addresses_without_column_names_is_refused():
    data = b"plain.one@example.com\nplain.two@example.com\n"

    with pytest.raises(ImportFormatError) as refused:
        contacts_parse(data)

    assert str(refused.value).startswith(
        "The first row holds the address plain.one@example.com where the column "
        "names belong"
    )


@pytest.mark.django_db
def test_a_quote_left_open_on_the_last_line_is_refused_too():
    data = b'email,name\na@example.com,Ann\nb@example.com,"Bob'

    with pytest.raises(ImportFormatError) as refused:
        contacts_parse(data)

    assert str(refused.value).startswith("A quote opened on line 3 is never closed")


def test_the_preview_refuses_a_stray_quote_among_its_sample_rows():
    with pytest.raises(ImportFormatError) as refused:
        contacts_preview(STRAY_QUOTE)

    assert str(refused.value) == UNCLOSED_ON_LINE_3


@pytest.mark.django_db
@pytest.mark.parametrize("ending", [b"\r\n", b"\n", b"\r", b""])
def test_closed_multi_line_cells_still_read_with_any_line_ending(ending):
    data = (
        b"email,notes" + b"\r\n"
        b'a@example.com,"line one\r\nline two"\r\n'
        b'b@example.com,"say ""hi"""' + ending
    )

    parsed = contacts_parse(data)

    assert [row.traits for row in parsed.rows] == [
        {"notes": "line one\r\nline two"},
        {"notes": 'say "hi"'},
    ]
    assert [row.lines for row in parsed.rows] == [[2], [4]]


# Line endings and Excel's sep= line ------------------------------------------------


@pytest.mark.django_db
def test_a_file_with_lone_cr_line_endings_imports_like_any_other():
    data = (
        b"Email;Nickname;City\r"
        b"cr1.qa@example.com;Cr One;Paris\r"
        b"cr2.qa@example.com;Two;Lyon\r"
    )

    contact_import = contact_import_file(filename="mac.csv", data=data)

    assert contact_import.status == ImportStatus.DONE
    assert (contact_import.records, contact_import.rejected) == (2, 0)
    cr1 = Profile.objects.get(email="cr1.qa@example.com")
    assert (cr1.city, cr1.traits) == ("Paris", {"nickname": "Cr One"})
    assert Profile.objects.get(email="cr2.qa@example.com").city == "Lyon"


def test_a_header_cell_too_long_for_a_name_names_its_column_by_its_start():
    data = b'"' + b"x" * 200_000 + b'"\na@example.com\n'

    assert contacts_header(data) == ["x" * 200]


@pytest.mark.django_db
def test_a_file_with_a_header_cell_over_200_characters_is_imported_and_noted():
    # Given a sign-up form's export whose question is 300 characters long
    question = (
        "Which of our newsletters would you like to receive from us, and why? " * 5
    )
    question = question.strip()[:300]
    data = f'email,"{question}"\nlong.q@example.com,weekly\n'.encode()

    # When it is imported on the default map
    contact_import = contact_import_file(filename="form.csv", data=data)

    # Then the column is named by its first 200 characters and its trait by the
    # first 100 of those, with one note saying both
    assert contact_import.status == ImportStatus.DONE
    trait = trait_key(question, 1)
    assert len(trait) == 100
    assert Profile.objects.get().traits == {trait: "weekly"}
    (note,) = [n for n in contact_import.notes if n["kind"].endswith("_cut")]
    assert note == {
        "kind": "column_name_cut",
        "column": question[:200].rstrip(),
        "message": (
            "The header of column 2 is 300 characters long, more than a column's "
            "name holds (200): the column is named by its first 200 characters, "
            f"“{question[:60]}…”. It is imported as the trait “{trait}”, a trait's "
            "name being at most 100 characters."
        ),
    }


def test_a_utf16_mark_before_odd_bytes_is_a_format_error():
    with pytest.raises(ImportFormatError) as refused:
        contacts_header(b"\xff\xfeE\x00m\x00a")

    assert str(refused.value) == (
        "The file starts like UTF-16 text but is not; save it as CSV UTF-8."
    )


@pytest.mark.django_db
def test_an_excel_sep_line_sets_the_delimiter_and_is_not_the_header():
    data = b"sep=;\r\nEmail;Nickname\r\na@example.com;Ann, Jr.\r\nnot-an-email;Bob\r\n"

    parsed = contacts_parse(data)

    assert contacts_header(data) == ["Email", "Nickname"]
    assert [(row.email.key, row.traits) for row in parsed.rows] == [
        ("a@example.com", {"nickname": "Ann, Jr."})
    ]
    # Lines stay the file's own: the sep= line is line 1.
    assert parsed.rows[0].lines == [3]
    assert [(r.record, r.line) for r in parsed.rejections] == [(2, 4)]


def test_a_sep_line_in_a_tab_file_uses_the_tab():
    data = b"sep=\t\nemail\tcity\na@example.com\tParis, TX\n"

    parsed = contacts_parse(data, column_map={"email": "email", "city": "city"})

    assert parsed.rows[0].fields == {"city": "Paris, TX"}


# Repeated and blank header names ----------------------------------------------------


@pytest.mark.django_db  # the default map asks which traits are declared
def test_repeated_and_blank_header_names_become_distinct_columns():
    data = b"Email,Nick,Nick,,\r\ndup.qa@example.com,First,Second,X,Y"

    preview = contacts_preview(data)

    assert preview.names == ["Email", "Nick", "Nick (column 3)", "Column 4", "Column 5"]
    assert preview.samples == ["dup.qa@example.com", "First", "Second", "X", "Y"]
    assert preview.column_map == {
        "Email": "email",
        "Nick": "traits.nick",
        "Nick (column 3)": "traits.nick_column_3",
        "Column 4": "traits.column_4",
        "Column 5": "traits.column_5",
    }


@pytest.mark.django_db
def test_every_column_of_a_repeated_header_can_be_mapped_and_imported():
    data = b"Email,Name,Name,,\r\ndup.qa@example.com,First,Second,X,Y"

    contact_import = run_mapped(
        data,
        {
            "Email": "email",
            "Name": "first_name",
            "Name (column 3)": "last_name",
            "Column 4": "traits.x",
            "Column 5": "traits.y",
        },
    )

    assert contact_import.status == ImportStatus.DONE
    dup = Profile.objects.get(email="dup.qa@example.com")
    assert (dup.first_name, dup.last_name) == ("First", "Second")
    assert dup.traits == {"x": "X", "y": "Y"}


@pytest.mark.django_db
def test_a_layout_is_recognised_when_a_column_repeats():
    data = (
        b"Email,Source,Email Marketing Consent,Source\n"
        b"ana@example.com,Signup form,SUBSCRIBED,Popup\n"
    )

    parsed = contacts_parse(data)

    assert parsed.layout == "klaviyo"
    assert parsed.rows[0].traits == {
        "klaviyo_source": "Signup form",
        "source_column_4": "Popup",
    }


# Typed dates in a workbook -----------------------------------------------------------


@pytest.mark.django_db
def test_typed_workbook_dates_are_read_whatever_text_format_is_declared():
    TraitDefinition.objects.create(name="last_login", type=TraitType.DATETIME)
    TraitDefinition.objects.create(name="joined", type=TraitType.DATE)
    data = xlsx_bytes(
        [
            ["Email", "Last Login", "Joined"],
            ["a@example.com", naive(2025, 3, 31, 14, 30), "31/03/2025"],
            ["b@example.com", naive(2025, 3, 31), naive(2024, 1, 2)],
            ["c@example.com", "2025-03-31 14:30:00", "2024-01-02"],
        ]
    )

    contact_import = run_mapped(
        data,
        {
            "Email": "email",
            "Last Login": "traits.last_login",
            "Joined": "traits.joined",
        },
        date_format="%d/%m/%Y",
    )

    assert contact_import.status == ImportStatus.DONE
    assert Profile.objects.get(email="a@example.com").traits == {
        "last_login": "2025-03-31T14:30:00+00:00",
        "joined": "2025-03-31",
    }
    assert Profile.objects.get(email="b@example.com").traits == {
        "last_login": "2025-03-31T00:00:00+00:00",
        "joined": "2024-01-02",
    }
    # Text typed into the sheet is still read only in the declared format.
    refused = [
        (r["record"], r["column"], r["reason"]) for r in contact_import.rejections
    ]
    assert refused == [
        (3, "Last Login", "not_a_date"),
        (3, "Joined", "not_a_date"),
    ]


def test_a_zip_cut_short_that_holds_a_workbook_is_called_a_damaged_workbook():
    whole = xlsx_bytes([["Email"], ["a@example.com"]])

    with pytest.raises(ImportFormatError) as refused:
        contacts_header(whole[: len(whole) // 2])

    assert str(refused.value) == DAMAGED_WORKBOOK


def test_a_workbook_with_a_damaged_sheet_is_called_a_damaged_workbook():
    whole = xlsx_bytes([["Email"], ["a@example.com"]])
    damaged = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(whole)) as source,
        zipfile.ZipFile(damaged, "w") as target,
    ):
        for item in source.infolist():
            content = source.read(item)
            if item.filename.startswith("xl/worksheets/"):
                content = content[: len(content) // 2]
            target.writestr(item, content)

    with pytest.raises(ImportFormatError) as refused:
        contacts_header(damaged.getvalue())

    assert str(refused.value) == DAMAGED_WORKBOOK


def test_a_real_zip_of_csv_files_keeps_its_advice():
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as target:
        target.writestr("subscribed_members_export.csv", "Email Address\n")

    with pytest.raises(ImportFormatError) as refused:
        contacts_header(archive.getvalue())

    assert str(refused.value).startswith("This is a zip archive. Unzip the Mailchimp")


# How a refused field is worded -------------------------------------------------------


@pytest.mark.django_db
def test_a_refused_number_names_its_column_once_and_writes_bounds_plainly():
    TraitDefinition.objects.create(
        name="spend", type=TraitType.NUMBER, minimum=0, maximum=Decimal("99.5")
    )
    data = b"Email,Spend\na@example.com,-5\nb@example.com,100.25\nc@example.com,12\n"

    contact_import = run_mapped(data, {"Email": "email", "Spend": "traits.spend"})

    refused = [(r["reason"], r["message"]) for r in contact_import.rejections]
    assert refused == [
        (
            "below_minimum",
            "Spend: -5 is below 0; the rest of the row was imported.",
        ),
        (
            "above_maximum",
            "Spend: 100.25 is above 99.5; the rest of the row was imported.",
        ),
    ]
    assert Profile.objects.get(email="c@example.com").traits == {"spend": 12}


@pytest.mark.parametrize(
    ("rule", "raw", "message"),
    [
        (
            TraitRule("spend", "number", minimum=Decimal("0.000000")),
            "-5",
            "-5 is below 0",
        ),
        (
            TraitRule("spend", "number", maximum=Decimal("1000000.000000")),
            "1000000.5",
            "1000000.5 is above 1000000",
        ),
        (
            TraitRule("size", "number", allowed_values=(1.0, 2.5)),
            "3",
            "3 is not one of the allowed values (1, 2.5)",
        ),
    ],
)
def test_rule_messages_write_numbers_without_trailing_zeros(rule, raw, message):
    with pytest.raises(TraitInvalid) as refused:
        trait_coerce(rule, raw)

    assert refused.value.message == f"{rule.name}: {message}"


def test_a_workbook_missing_a_part_is_called_damaged_not_a_zip():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/worksheets/sheet1.xml", "<worksheet/>")

    with pytest.raises(ImportFormatError) as refused:
        contacts_parse(buffer.getvalue())

    assert "The workbook is damaged" in str(refused.value)


def test_a_workbook_whose_formulas_were_never_calculated_is_refused_naming_cells():
    # openpyxl, like other scripts, stores a formula without its value.
    data = xlsx_bytes([["Email", "First name"], ["a@example.com", "=1+1"]])

    with pytest.raises(ImportFormatError) as refused:
        contacts_header(data)

    assert str(refused.value) == (
        "The workbook holds formulas whose values were never calculated (cells B2), "
        "so they would import as empty. Open it in Excel or LibreOffice, save it "
        "again and upload the new file."
    )


def sheet_rewritten(data: bytes, pattern: bytes, replacement: bytes) -> bytes:
    """The workbook with its first sheet's XML rewritten, as another writer has it."""
    import re

    source, target = io.BytesIO(data), io.BytesIO()
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            content = old.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                content = re.sub(pattern, replacement, content)
            new.writestr(item, content)
    return target.getvalue()


def test_uncalculated_formulas_are_found_whatever_the_order_of_attributes():
    data = xlsx_bytes([["Email", "First name"], ["a@example.com", "=1+1"]])
    # Another writer puts the style before the reference.
    data = sheet_rewritten(data, rb'<c r="([A-Z]+[0-9]+)"', rb'<c s="0" r="\1"')

    with pytest.raises(ImportFormatError) as refused:
        contacts_header(data)

    assert "never calculated (cells B2)" in str(refused.value)


def test_a_workbook_with_calculated_formulas_is_read():
    data = xlsx_bytes([["Email", "Orders"], ["a@example.com", 3]])
    # What Excel writes: the formula and, beside it, its value.
    patched = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(patched, "w") as target,
    ):
        for item in source.infolist():
            content = source.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                content = content.replace(
                    b'<c r="B2" t="n"><v>3</v></c>',
                    b'<c r="B2" t="n"><f>1+2</f><v>3</v></c>',
                )
                assert b"<f>1+2</f>" in content
            target.writestr(item, content)

    assert contacts_header(patched.getvalue()) == ["Email", "Orders"]


def test_a_file_that_only_starts_like_a_zip_is_called_damaged_not_a_zip_to_unzip():
    with pytest.raises(ImportFormatError) as refused:
        contacts_header(b"PK\x03\x04" + b"not a zip at all" * 10)

    assert str(refused.value) == (
        "The file starts as a zip archive or an Excel workbook does, but it is "
        "damaged and cannot be read. Export or save it again and upload the new file."
    )


def workbook_with_dimension(ref: str) -> bytes:
    """A workbook whose sheet claims the range `ref`, as some writers get it wrong."""
    data = xlsx_bytes(
        [["Email", "First name", "City"], ["ana@example.com", "Ana", "Porto"]]
    )
    claimed = f'<dimension ref="{ref}"/>'.encode()
    return sheet_rewritten(data, rb'<dimension ref="[^"]*"/>', claimed)


@pytest.mark.django_db
@pytest.mark.parametrize("ref", ["A1", "A1:A1", "B2:C3"])
def test_a_workbook_that_misstates_its_size_is_read_whole(ref):
    data = workbook_with_dimension(ref)

    contact_import = contact_import_file(filename="wrong-size.xlsx", data=data)

    assert contact_import.status == ImportStatus.DONE, contact_import.error
    assert contact_import.records == 1
    ana = Profile.objects.get(email="ana@example.com")
    assert (ana.first_name, ana.city) == ("Ana", "Porto")


@pytest.mark.django_db
def test_a_cell_longer_than_pythons_csv_default_is_read():
    notes = "x" * 300_000
    data = f'email,notes\nana@example.com,"{notes}"\nben@example.com,short\n'.encode()

    contact_import = contact_import_file(filename="long.csv", data=data)

    # Read whole, then left out of the trait for its length, with a note.
    assert contact_import.status == ImportStatus.DONE, contact_import.error
    assert Profile.objects.get(email="ana@example.com").traits == {}
    assert "(300,000 characters) was not imported" in contact_import.notes[0]["message"]
    assert Profile.objects.get(email="ben@example.com").traits["notes"] == "short"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "data",
    [
        b"\nemail,first_name\nana@example.com,Ana\n",
        b",,\n\r\n \nemail,first_name\nana@example.com,Ana\n",
        b"\n\nemail;first_name\nana@example.com;Ana\n",
    ],
)
def test_blank_rows_above_the_header_are_passed_over(data):
    assert contacts_header(data) == ["email", "first_name"]

    contact_import = contact_import_file(filename="blank-first.csv", data=data)
    assert contact_import.records == 1

    assert contact_import.status == ImportStatus.DONE, contact_import.error
    assert Profile.objects.get().first_name == "Ana"


@pytest.mark.django_db
def test_a_sheet_whose_header_starts_lower_is_read():
    data = xlsx_bytes(
        [[None, None], [], ["Email", "First name"], ["ana@example.com", "Ana"]]
    )

    contact_import = contact_import_file(filename="lower.xlsx", data=data)

    assert contact_import.status == ImportStatus.DONE, contact_import.error
    assert Profile.objects.get().first_name == "Ana"


def test_a_control_character_excel_escaped_is_read_as_itself():
    from profiles.importing.reading import xlsx_cell_text

    assert xlsx_cell_text("line1_x000D_\nline2") == "line1\r\nline2"
    assert xlsx_cell_text("Plain_text") == "Plain_text"


def test_contacts_on_a_second_sheet_are_read_when_the_first_is_empty(db):
    workbook = Workbook()
    workbook.active.title = "Notes"
    contacts = workbook.create_sheet("Contacts")
    for row in (["Email", "First name"], ["ada@example.com", "Ada"]):
        contacts.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)

    done = contact_import_file(filename="list.xlsx", data=buffer.getvalue())

    assert done.status == ImportStatus.DONE
    assert list(Profile.objects.values_list("email", "first_name")) == [
        ("ada@example.com", "Ada")
    ]
