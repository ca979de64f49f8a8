"""QA qa13: the code page the mapping page and the report suggest for a CSV file
read as Windows-1252 (encoding_hint).

Each docstring tells what the first version of the suggestion did wrong, fixed since:
prices and typography read as the wrong code page, a tie left Russian and Greek
unnamed, and a long cell made the word search quadratic.
"""

import pytest

from profiles.importing import contact_import_file
from profiles.importing.reading import contacts_decoded, encoding_hint


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


def _western(text: str) -> bytes:
    data = text.encode("cp1252")
    assert contacts_decoded(data).encoding == "cp1252"
    return data


@pytest.mark.django_db
def test_a_uk_list_with_a_spend_column_in_pounds_is_told_no_other_code_page():
    """A UK shop's Windows-1252 export with a spend column: the mapping page and the
    report say "£45 reads Ł45 in Windows-1250"; read so, Zoë and José stay but every
    £ turns into Ł (and å, ñ, ø into ĺ, ń, ř in other rows). Nothing should be
    suggested: a price holds no letter, so it says nothing of the code page."""
    data = _western(
        "email,first_name,last_name,total_spent\n"
        "ann@example.co.uk,Ann,O'Neill,£45.00\n"
        "zoe@example.co.uk,Zoë,McDonald,£120.50\n"
        "jose@example.co.uk,José,DeVries,£8.99\n"
    )

    done = contact_import_file(filename="shop.csv", data=data)

    (note,) = [n for n in done.notes if n["kind"] == "encoding_found"]
    assert "suggested_encoding" not in note


def test_vouchers_in_pounds_and_euros_are_told_no_cyrillic_code_page():
    """An Irish and British list whose voucher column holds £20 and €5: the page
    suggests Windows-1251 ("£20 reads Ј20"), which would turn any accented
    name into Cyrillic letters. Nothing should be suggested."""
    data = _western(
        "email,name,voucher\nann@example.co.uk,Ann,£20\nniamh@example.ie,Niamh,€5\n"
    )

    assert encoding_hint(data) is None


@pytest.mark.parametrize(
    "cell",
    [
        "Women’s shoes",  # a smart apostrophe, as Word, Outlook and phones type it
        "25–34",  # an age band with an en dash
        "—",  # an em dash for "nothing known"
        "Bespoke™ Pro",
    ],
)
def test_typographic_punctuation_is_told_no_mac_os_roman(cell):
    """A Windows-1252 list of English names whose one non-ASCII cell is ordinary
    typography: the page says e.g. "Women’s reads Womenís in Mac OS Roman" (or
    "25–34 reads 25ñ34"); read so, every ’ – — ™ in the file becomes a letter and
    every é a È. Nothing should be suggested."""
    data = _western(
        "email,name,note\n"
        f"ann@example.com,Ann O'Neill,{cell}\n"
        "bob@example.com,Bob McDonald,\n"
    )

    assert encoding_hint(data) is None


def test_a_spanish_greeting_is_told_no_windows_1250():
    """A Spanish Windows-1252 list with a greeting column: the page says "¡Hola
    reads ˇHola in Windows-1250"; read so, Peña becomes Peńa and every ¡ a ˇ.
    Nothing should be suggested."""
    data = _western("email,nombre,saludo\njose@example.es,José Peña,¡Hola!\n")

    assert encoding_hint(data) is None


@pytest.mark.parametrize(
    ("text", "codec"),
    [
        (
            "email,first_name,last_name\nivan@example.ru,Иван,Петров\n"
            "olga@example.ru,Ольга,Смирнова\ndima@example.ru,Дмитрий,Кузнецов\n",
            "cp1251",
        ),
        (
            "email,first_name,last_name\ngiorgos@example.gr,ΓΙΩΡΓΟΣ,ΠΑΠΑΔΟΠΟΥΛΟΣ\n"
            "maria@example.gr,ΜΑΡΙΑ,ΚΩΝΣΤΑΝΤΙΝΟΥ\n",
            "cp1253",
        ),
    ],
)
def test_a_russian_or_greek_list_with_an_english_header_is_told_its_code_page(
    text, codec
):
    """A Russian list (or a Greek one in capitals, as Greek registers write names)
    under an English header: the samples show Èâàí or ÃÉÙÑÃÏÓ and no suggestion is
    made, because each reads as well in the other alphabet (Θβΰν). The page should
    name Windows-1251 (Windows-1253)."""
    data = text.encode(codec)
    assert contacts_decoded(data).encoding == "cp1252"

    hint = encoding_hint(data)

    assert hint is not None
    assert hint.encoding == codec


def test_a_long_cell_of_letters_and_digits_is_searched_once():
    """A Windows-1252 file with a 1 MB hex cell (an exported picture). The word search
    once backtracked over such a run from each of its characters: seconds for 30,000
    characters, about an hour for 1 MB, on the mapping page and in the import. Read
    in one pass now, this test takes milliseconds; the quadratic search would hold it
    for the hour (no timing is asserted: speed is measured in bench/, not here)."""
    data = _western(
        "email,name,photo_hex\nann@example.com,José,"
        + "89504e470d0a1a0a" * 65536
        + "\n"
    )

    assert encoding_hint(data) is None
