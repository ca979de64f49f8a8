"""Reading a contact file: bytes to a header and records of text cells.

CSV text in any of the encodings spreadsheets save (UTF-8 with or without a
byte-order mark, UTF-16, Windows-1252), any of the usual delimiters or the one an
Excel "sep=" first line declares, and any line ending (CR LF, LF, or the lone CR of
old Mac Excel); or the first sheet of an XLSX workbook. Every way a file cannot be
read ends in ImportFormatError with a sentence for the marketer. Nothing here knows
what a column means.
"""

import codecs
import contextlib
import csv
import io
import itertools
import re
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from functools import lru_cache
from typing import Any

from openpyxl import load_workbook
from openpyxl.utils.escape import unescape

from profiles.names import tags_distinct
from profiles.traits import TRAIT_NAME_MAX_CHARS

DELIMITERS = (",", ";", "\t")
XLSX_PARTS = {"[Content_Types].xml", "xl/workbook.xml"}
ZIP_LOCAL_HEADER = re.compile(rb"PK\x03\x04")
# Tag names each in plain double quotes, comma-separated, no quote inside a name.
QUOTED_TAGS = re.compile(r'"[^"]*"(?:,"[^"]*")*')
QUOTED_TAG = re.compile(r'"([^"]*)"')
# Excel's first line naming the file's delimiter, e.g. "sep=;".
SEP_LINE = re.compile(r'sep=([^"\r\n])')
# Fed to the CSV reader after the file's last line. It is read as a record of its
# own unless the file ends inside a quoted cell, which then swallows it; a decoded
# file holds no NUL (contacts_decode refuses one), so no file can contain it.
END_OF_FILE = "\x00"
# Excel shows a number with at most 15 significant digits, and in plain digits
# (no exponent) from 1e-15 up to 1e21, the sizes a number trait can hold and more.
EXCEL_DIGITS = 15
EXCEL_PLAIN_SMALLEST = Decimal("1e-15")
EXCEL_PLAIN_LARGEST = Decimal("1e21")
ZIP_DAMAGED = (
    "The file starts as a zip archive or an Excel workbook does, but it is damaged "
    "and cannot be read. Export or save it again and upload the new file."
)
XLSX_DAMAGED = (
    "The workbook is damaged (often a file cut short while saving or uploading), "
    "so it cannot be read. Open it in Excel, save it again and upload the new file."
)

# A column's name is at most this long: a longer header cell (a sign-up form's
# whole question) names its column by its start, so that the map, the mapping
# page and each note about the column stay short. The report says so.
HEADER_NAME_MAX_CHARS = 200
# Python's csv module refuses a cell over 131,072 characters, which would refuse a
# whole file for one long note; a cell may be as long as the file.
csv.field_size_limit(2**31 - 1)


class ImportFormatError(ValueError):
    """The file cannot be read as a contact list; the message says why, for people."""


class EncodingUnknown(ImportFormatError):
    """A text file in an encoding Bespoke does not find by itself: it must be chosen.

    The file may be fine (a Czech list in Windows-1250): the import waits for the
    marketer's choice instead of failing. `hint` is the code page its words read
    right in, when one does (encoding_hint).
    """

    def __init__(self, message: str, hint: "EncodingHint | None" = None) -> None:
        super().__init__(message)
        self.hint = hint


class SheetDate(str):
    """A workbook cell typed as a date or a date and time, written in ISO 8601.

    Its text says what the sheet holds, not how someone typed it, so it is read
    whatever date format the marketer declared for the file's text dates.
    """

    __slots__ = ()


class SheetError(str):
    """A workbook cell holding an Excel error (#DIV/0!, #N/A...), read as empty.

    Its text is empty, so every reader of cells sees a blank; `error` keeps the
    code, and `held` what the note that says the cell was not imported names.
    """

    error: str
    held: str

    def __new__(cls, error: str, held: str = "") -> "SheetError":
        cell = super().__new__(cls, "")
        cell.error = error
        cell.held = held or f"the Excel error {error}"
        return cell


# Excel's escape of a NUL character: PostgreSQL stores none, and no name, tag or
# value holds one.
SHEET_NUL = SheetError("_x0000_", "a NUL character (Excel's _x0000_)")
# Half of a UTF-16 pair on its own (Excel's _xD800_ to _xDFFF_): no text holds one.
SHEET_SURROGATE = SheetError(
    "_xD800_", "half of a character (Excel's _xD800_ to _xDFFF_), which no text holds"
)
SURROGATE = re.compile("[\ud800-\udfff]")


@lru_cache(maxsize=4096)
def column_key(name: str) -> str:
    """Return the key headers are compared by: case-folded, letters and digits only.

    Composed first: "é" written as e and an accent (as macOS names files) is é.
    """
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFC", name).casefold())


ADDRESS_ALONE = re.compile(r"[^\s@,;\"<>]+@[^\s@,;\"<>]+\.[^\s@,;\"<>]+")


def header_names(cells: list[str]) -> list[str]:
    """Return a header's column names, stripped and each one different.

    The column map names columns by header name, so a repeated name becomes
    'Name (column 3)' and a blank one 'Column 4', by position counted from 1. A
    name is cut to HEADER_NAME_MAX_CHARS (see header_cells_cut).
    """
    names: list[str] = []
    taken: set[str] = set()
    for position, cell in enumerate(cells, start=1):
        if ADDRESS_ALONE.fullmatch(cell.strip()):
            raise ImportFormatError(
                f"The first row holds the address {cell.strip()[:100]} where the "
                "column names belong, so it would be read as a name and its "
                "person left out. Add a first row that names the columns (Email, "
                "First name...) and upload the file again."
            )
        name = cell.strip()[:HEADER_NAME_MAX_CHARS].rstrip() or f"Column {position}"
        while name in taken:
            name = f"{name} (column {position})"
        taken.add(name)
        names.append(name)
    return names


def header_cells_cut(cells: list[str]) -> list[tuple[int, int]]:
    """Return (position, length) of each header cell longer than a column's name."""
    lengths = (len(cell.strip()) for cell in cells)
    return [
        (position, length)
        for position, length in enumerate(lengths)
        if length > HEADER_NAME_MAX_CHARS
    ]


def trait_key(name: str, position: int) -> str:
    """Return the trait name a column of this header name becomes by default.

    Cut to the longest name a trait has: a header may name a column in twice as
    many characters (a sign-up form's question).
    """
    key = _trait_words(name)[:TRAIT_NAME_MAX_CHARS].rstrip("_")
    return key or f"column_{position + 1}"


def trait_key_cut(name: str) -> bool:
    """Tell whether trait_key cuts a column's name to make it a trait's."""
    return len(_trait_words(name)) > TRAIT_NAME_MAX_CHARS


def _trait_words(name: str) -> str:
    return re.sub(r"[\W_]+", "_", name.casefold()).strip("_")


# The text encodings a marketer may choose for a CSV file, by Python codec name.
ENCODINGS = {
    "utf-8": "UTF-8",
    "cp1252": "Windows-1252 (Western Europe and the Americas)",
    "cp1250": "Windows-1250 (Central Europe: Polish, Czech, Hungarian)",
    "cp1251": "Windows-1251 (Cyrillic)",
    "cp1253": "Windows-1253 (Greek)",
    "cp1254": "Windows-1254 (Turkish)",
    "cp1257": "Windows-1257 (Baltic)",
    "mac_roman": "Mac OS Roman",
    "utf-16-le": "UTF-16, little-endian",
    "utf-16-be": "UTF-16, big-endian",
}
# Found automatically: a UTF-8 file with a few bytes from another code page.
UTF8_MIXED = "utf-8+cp1252"
ENCODING_LABELS = {
    **ENCODINGS,
    "utf-8-sig": "UTF-8",
    "utf-16": "UTF-16",
    UTF8_MIXED: "UTF-8, with some bytes read as Windows-1252",
}
# What a CSV file's text holds somewhere, read in the right encoding.
CSV_MARKS = "\r\n,;\t"
# More bytes than this that are not UTF-8, and a file is not taken for UTF-8.
UTF8_STRAYS_MAX = 100
# UTF-16 without a byte-order mark: at least this share of one side's bytes is 0,
# and that side has this many times the other side's 0 bytes.
UTF16_ZERO_SHARE = 0.2
UTF16_SIDES = 4
UTF16_ZEROS_MIN = 8
UTF16_SAMPLE_BYTES = 8192


@dataclass(frozen=True)
class Decoded:
    """A CSV file's text, the encoding it was read in, and the lines it misread."""

    text: str
    encoding: str
    # Lines holding bytes that are not UTF-8 in a file that otherwise is.
    stray_lines: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        return ENCODING_LABELS.get(self.encoding, self.encoding)


def contacts_decode(data: bytes, encoding: str = "") -> str:
    """Return the file's text, in `encoding` if one is chosen (see contacts_decoded)."""
    return contacts_decoded(data, encoding).text


# The first bytes of an old Office file (Excel's .xls, Word's .doc).
OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def contacts_decoded(data: bytes, encoding: str = "") -> Decoded:
    """Read the file's text in the chosen encoding, or in the one it shows.

    Found automatically: UTF-16 with a byte-order mark, or without one when every
    other byte of its letters is 0; UTF-8 with or without BOM, read as such even
    when a few bytes are not (each of those is read as Windows-1252, and the lines
    are named); otherwise Windows-1252, what Excel on Windows saves most often.
    """
    if data.startswith(b"PK\x03\x04"):
        raise ImportFormatError(
            "This is a zip archive. Unzip the Mailchimp export and import its CSV "
            "files one by one (subscribed, unsubscribed and cleaned, in any order)."
        )
    if data.startswith(OLE2_MAGIC):
        raise ImportFormatError(
            "This is an Excel 97-2003 workbook (.xls), which Bespoke does not read. "
            "Open it in Excel or LibreOffice, save it as an Excel Workbook (.xlsx) "
            "or as CSV, and import that."
        )

    decoded = _chosen_decode(data, encoding) if encoding else _text_decode(data)
    # PostgreSQL stores no NUL character, and a text file has none.
    if "\x00" in decoded.text:
        raise ImportFormatError(
            "The file contains NUL characters, so it is not a CSV text file."
        )
    return decoded


def _chosen_decode(data: bytes, encoding: str) -> Decoded:
    if encoding not in ENCODINGS:
        raise ImportFormatError(f"Bespoke does not read the encoding {encoding!r}.")
    if not encoding.startswith("utf-16"):
        data = _without_utf8_mark(data)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = _line_at(data, exc.start)
        raise ImportFormatError(
            f"Line {line} holds the byte 0x{data[exc.start]:02X}, which is no "
            f"letter in {ENCODINGS[encoding]}; choose the encoding the file was "
            "saved in."
        ) from exc
    if not _reads_as_csv(text):
        # UTF-16 in the other byte order decodes, but into one long line of
        # letters from other alphabets.
        raise ImportFormatError(
            f"Read as {ENCODINGS[encoding]}, the file has no line break and no "
            "comma, semicolon or tab; choose the encoding the file was saved in."
        )
    return Decoded(text, encoding)


def _without_utf8_mark(data: bytes) -> bytes:
    # A UTF-8 byte-order mark is never meant as text, even before text another code
    # page wrote (a tool that writes the mark and then saves in the system's code
    # page): read as Windows-1252, it is "ï»¿" in front of the first column's name.
    return data.removeprefix(codecs.BOM_UTF8)


def _reads_as_csv(text: str) -> bool:
    return any(mark in text for mark in CSV_MARKS)


def _text_decode(data: bytes) -> Decoded:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return Decoded(data.decode("utf-16"), "utf-16")
        except UnicodeDecodeError as exc:
            raise ImportFormatError(
                "The file starts like UTF-16 text but is not; save it as CSV UTF-8."
            ) from exc
    utf16 = _utf16_without_mark(data)
    if utf16:
        with contextlib.suppress(UnicodeDecodeError):
            text = data.decode(utf16)
            # Read so, a CSV file has its line breaks and delimiters back.
            if "\x00" not in text and _reads_as_csv(text):
                return Decoded(text, utf16)

    try:
        return Decoded(data.decode("utf-8-sig"), "utf-8-sig")
    except UnicodeDecodeError:
        pass
    mixed = _utf8_mixed_decode(data)
    if mixed is not None:
        return mixed

    # Excel on Windows saves "CSV" in the machine's code page, most often this one.
    try:
        return Decoded(_without_utf8_mark(data).decode("cp1252"), "cp1252")
    except UnicodeDecodeError as exc:
        hint = encoding_hint(data, read_as_1252=False)
        if hint is None:
            message = (
                "The file is neither UTF-8 nor Windows-1252 text; choose its "
                "encoding, or save it as CSV UTF-8."
            )
        else:
            message = (
                "The file is neither UTF-8 nor Windows-1252 text. Its words read "
                f"right in {hint.label}, as in {hint.as_meant}: choose that "
                f"encoding ({hint.encoding}), or save the file as CSV UTF-8."
            )
        raise EncodingUnknown(message, hint) from exc


# A file read as Windows-1252 for want of any sign may be in one of these; the
# mapping page and the report suggest the one whose words read as words.
HINTED_ENCODINGS = ("cp1250", "cp1251", "cp1253", "cp1254", "cp1257", "mac_roman")
# A word: ASCII letters and digits and the bytes above ASCII. Every code page above
# keeps ASCII where it is, so a word is the same bytes in all. Those holding a byte
# above ASCII are kept (two steps: one pattern asking for such a byte inside a run
# would search each long run of ASCII again from each of its bytes).
_WORD = re.compile(rb"[0-9A-Za-z\x80-\xff]+")
_HIGH_BYTE = re.compile(rb"[\x80-\xff]")
HINT_SAMPLE_BYTES = 1 << 20
HINT_WORDS_MAX = 5000
# Another code page is suggested when its reading leaves at most this share of the
# odd words Windows-1252's does.
HINT_ODD_SHARE = 0.25
_SCRIPTS = {"LATIN", "CYRILLIC", "GREEK"}
# A unit's letters before its power: m², km³, CO².
UNIT_LETTERS_MAX = 2
# Letters (first), and every accented letter a word holding one of them may have
# in any language written with them: Danish, Norwegian and Faroese ø; the grave
# accents of French, Italian and Catalan (not à, which Portuguese shares; and ß, for
# a Molièrestraße); Icelandic and Faroese ð and þ;
# Czech, Slovak and Icelandic ý; Romanian ţ; Croatian đ; Polish ż; Turkish ğ, ı
# and ş (Romanian's too); Portuguese and Estonian õ; French û. Hungarian ő and ű read
# as õ and û beside its own á, ó, ü (Tûzoltó, Kõmûves).
_LETTER_COMPANIONS = (
    (frozenset("ø"), frozenset("øåæéáíóúýð")),
    (frozenset("èìòù"), frozenset("èìòùàéêëîïôûçœâäöüÿß")),
    (frozenset("ðþ"), frozenset("ðþáéíóúýæöø")),
    (frozenset("ý"), frozenset("ýáéíóúčďěňřšťžůäôľĺŕþðæö")),
    (frozenset("ţ"), frozenset("ţăâîşș")),
    (frozenset("đ"), frozenset("đčćšž")),
    (frozenset("ż"), frozenset("żąćęłńóśź")),
    (frozenset("ğış"), frozenset("ğışçöüâîûăţș")),
    (frozenset("õ"), frozenset("õãáâàçéêíóôúäöüšž")),
    (frozenset("û"), frozenset("ûéèêëîïôçàâœæùÿüşğıö")),
)
# Punctuation that sits inside or against words in good text (Women’s, 25–34,
# l·l, “quoted”): never a sign of the wrong code page.
_WORD_JOINERS = frozenset("’‘‛‚–—‐‑·•…“”„«»‹›")
# A Cyrillic or Greek word of this many letters has some vowels among them.
_VOWELS = frozenset("аеёиоуыэюяіїєАЕЁИОУЫЭЮЯІЇЄαεηιουωάέήίόύώϊϋΐΰΑΕΗΙΟΥΩΆΈΉΊΌΎΏΪΫ")
_VOWELS_FROM_LETTERS = 5
_ACCENTED_ONLY_FROM_LETTERS = 5
_VOWEL_SHARE_MIN = 0.2


@dataclass(frozen=True)
class EncodingHint:
    """A code page a file's words read better in, with one word in both readings."""

    encoding: str
    # One word as Windows-1252 reads it (empty when it cannot read the file) and as
    # the suggested code page does.
    as_read: str
    as_meant: str

    @property
    def label(self) -> str:
        return ENCODINGS[self.encoding]


def encoding_hint(data: bytes, *, read_as_1252: bool = True) -> EncodingHint | None:
    """Suggest the code page a file read as Windows-1252 was more likely saved in.

    The bytes alone cannot tell one single-byte code page from another, but the
    words they make can: read in the wrong one, Polish gives "£ukasz" and "Wroc³aw"
    (a symbol against or inside a word), Russian "Èâàí" (a word of accented letters
    only) or, in Greek letters, "Ρμθπνξβΰ" (hardly a vowel), Mac text odd capitals
    ("ChloŽ"), Czech, Hungarian, Turkish and Baltic text real letters in words no
    language writes ("Èerný", "Tûzoltó", "Güneþ", "Ðimkutë"). A word is odd in a
    reading when it has one of those, or has a byte the code page does not read;
    only words with a letter as Windows-1252 reads them count (a price, "£45",
    tells nothing). The code page whose reading leaves far fewer odd words than
    Windows-1252's, and fewer than any other's, and that reads the whole file, is
    suggested. A Hungarian file may give plausible words alone (Erdõs), and so may
    a short Czech or Turkish one: nothing is suggested for them, unless the file
    holds a byte Windows-1252 does not read (ť, Ź): then `read_as_1252` is false,
    and the code page is suggested whose reading leaves few odd words among all,
    and fewer than any other's.
    """
    sample = _without_utf8_mark(data)[:HINT_SAMPLE_BYTES]
    found = (word for word in _WORD.findall(sample) if _HIGH_BYTE.search(word))
    words = [
        word
        for word in dict.fromkeys(found)
        if any(map(_is_letter, word.decode("cp1252", "replace")))
    ][:HINT_WORDS_MAX]
    # What the suggestion is measured against: the words Windows-1252 reads oddly,
    # or every word when it cannot read the file.
    as_read = [word for word in words if read_as_1252 and _odd_in(word, "cp1252")]
    against = as_read if read_as_1252 else words
    if not against:
        return None
    allowed = len(against) * HINT_ODD_SHARE

    odd = {
        encoding: {word for word in words if _odd_in(word, encoding)}
        for encoding in HINTED_ENCODINGS
    }
    best, second = sorted(HINTED_ENCODINGS, key=lambda encoding: len(odd[encoding]))[:2]
    if len(odd[best]) > allowed:
        return None
    if len(odd[second]) == len(odd[best]):
        # Two read as well (few words, "Jürgen" alone): neither is suggested.
        return None
    try:
        data.decode(best)
    except UnicodeDecodeError:
        return None
    if not read_as_1252:
        shown = next(word for word in words if word not in odd[best])
        return EncodingHint(best, "", shown.decode(best))
    shown = next((w for w in as_read if w not in odd[best]), as_read[0])
    return EncodingHint(best, shown.decode("cp1252"), shown.decode(best))


def _is_letter(char: str) -> bool:
    # Not a spacing modifier (ˇ, ˘, ˙): no word is made of those.
    return char.isalpha() and unicodedata.category(char) != "Lm"


def _odd_in(word: bytes, encoding: str) -> bool:
    try:
        return _word_odd(word.decode(encoding))
    except UnicodeDecodeError:
        return True


def _word_odd(word: str) -> bool:
    letters = [char for char in word if _is_letter(char)]
    for at, char in enumerate(word):
        if char.isascii() or _is_letter(char) or char in _WORD_JOINERS:
            continue
        if unicodedata.category(char)[0] == "M":
            continue
        before = at > 0 and _is_letter(word[at - 1])
        after = at + 1 < len(word) and _is_letter(word[at + 1])
        if not after and _is_unit_power(word, at):
            continue
        # A symbol inside a word (Wroc³aw), or against one where good text has
        # none (£ukasz, Pawe³, te¿, Wei§): a letter of another code page.
        # "Bespoke™", "N°" and "¿Hola" are good text.
        kind = unicodedata.category(char)
        letter_like = kind[0] == "N" or kind in ("Sc", "Sk")
        if (before and after) or (before and (letter_like or kind == "Po")):
            return True
        if after and letter_like:
            return True
    scripts = {unicodedata.name(char, "?").split()[0] for char in letters}
    if len(scripts & _SCRIPTS) > 1:
        return True
    if _letters_clash(letters):
        return True
    # Latin words hold ASCII letters beside their accented ones, but for a few short
    # ones (Polish Żółć): Russian read as Windows-1252 is long words of accents only.
    if (
        "LATIN" in scripts
        and len(letters) >= _ACCENTED_ONLY_FROM_LETTERS
        and not any(map(str.isascii, letters))
    ):
        return True
    if scripts & {"CYRILLIC", "GREEK"}:
        if "ς" in letters[:-1]:
            return True  # Greek writes this sigma only at a word's end
        vowels = sum(char in _VOWELS for char in letters)
        if len(letters) >= _VOWELS_FROM_LETTERS and (
            vowels < len(letters) * _VOWEL_SHARE_MIN
        ):
            return True
    shape = "".join(letters)
    return bool(shape) and not (shape.islower() or shape.isupper() or shape.istitle())


def _is_unit_power(word: str, at: int) -> bool:
    """Tell whether a superscript ends a unit ("m²", "km³", "CO²"): good text.

    Polish ł read as Windows-1252 is ³ too, but ends longer words (Pawe³).
    """
    if not unicodedata.decomposition(word[at]).startswith("<super>"):
        return False
    letters = word[:at]
    return 0 < len(letters) <= UNIT_LETTERS_MAX and all(map(_is_letter, letters))


def _letters_clash(letters: list[str]) -> bool:
    """Tell whether a word holds letters no one language writes together.

    Central European and Turkish text read as Windows-1252 gives such words: Czech
    č reads è and ř reads ø beside its own á, ý, ž (Sedláèek, Èerný, Køíž),
    Turkish ş reads þ and ğ reads ð beside its ç and ü (Güneþ, Çaðlar).
    """
    # İ lowers to i and a combining dot: the dot is no letter of its own.
    found = {
        lower
        for char in letters
        for lower in char.lower()
        if not lower.isascii() and _is_letter(lower)
    }
    for marked, companions in _LETTER_COMPANIONS:
        if found & marked and not found <= companions:
            return True
    return False


def _utf16_without_mark(data: bytes) -> str:
    # An ASCII letter in UTF-16 has a 0 beside it: after it (little-endian) or
    # before it (big-endian). A contact file's addresses, commas and line breaks
    # are ASCII whatever its names' alphabet, so one side holds many 0 bytes and
    # the other few (Ā, U+0100, has its 0 on the other side). A text file in any
    # other encoding holds none.
    sample = data[:UTF16_SAMPLE_BYTES]
    if len(sample) < 4 or len(data) % 2 or b"\x00" not in sample:
        return ""
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    least = max(UTF16_ZEROS_MIN, UTF16_ZERO_SHARE * len(sample) / 2)
    if odd >= least and odd > UTF16_SIDES * even:
        return "utf-16-le"
    if even >= least and even > UTF16_SIDES * odd:
        return "utf-16-be"
    return ""


def _utf8_mixed_decode(data: bytes) -> Decoded | None:
    # Bytes another code page wrote into a UTF-8 file (a name pasted from an old
    # system): the file is UTF-8 if its other non-ASCII bytes are, and those few
    # bytes are read as Windows-1252, each line named. A Windows-1252 file with
    # accents almost never forms a valid UTF-8 sequence.
    data = _without_utf8_mark(data)
    pieces: list[str] = []
    strays: list[int] = []  # where each run of stray bytes starts
    utf8_letters = 0
    start = 0
    while True:
        try:
            piece = data[start:].decode("utf-8")
        except UnicodeDecodeError as exc:
            if len(strays) == UTF8_STRAYS_MAX:
                return None
            bad, after = start + exc.start, start + exc.end
            piece = data[start:bad].decode("utf-8")
            pieces.append(piece)
            utf8_letters += sum(1 for letter in piece if ord(letter) > 127)
            pieces.append(data[bad:after].decode("cp1252", errors="replace"))
            strays.append(bad)
            start = after
            continue
        pieces.append(piece)
        utf8_letters += sum(1 for letter in piece if ord(letter) > 127)
        break
    if not utf8_letters:
        return None  # no letter is UTF-8's: the file is in another code page
    lines = sorted({_line_at(data, at) for at in strays})
    return Decoded("".join(pieces), UTF8_MIXED, tuple(lines))


def _line_at(data: bytes, at: int) -> int:
    # Lines end in CR LF, LF or a lone CR, as the CSV reader counts them.
    return len(LINE_BREAK.findall(data, 0, at)) + 1


LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def _csv_dialect(text: str) -> tuple[str, int]:
    """Return the delimiter and how many lines before the header say only that."""
    lines = io.StringIO(text, newline="")
    first_line = lines.readline()
    declared = SEP_LINE.fullmatch(first_line.rstrip("\r\n"))
    if declared:
        return declared[1], 1
    # The header is the first line with something on it (blank lines may lead).
    header = first_line
    while not header.strip() and (following := lines.readline()):
        header = following
    return _delimiter_sniff(header), 0


def _delimiter_sniff(header: str) -> str:
    """Return the delimiter that splits the header line into the most columns."""
    counts = {
        delimiter: len(next(csv.reader([header], delimiter=delimiter), []))
        for delimiter in DELIMITERS
    }
    return max(DELIMITERS, key=lambda delimiter: counts[delimiter])


def _csv_records(text: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (physical line where the record starts, cells) for each CSV record."""
    try:
        delimiter, skipped = _csv_dialect(text)
    except csv.Error as exc:
        raise ImportFormatError(f"The file is not valid CSV on line 1: {exc}.") from exc

    lines = io.StringIO(text, newline="")
    for _ in range(skipped):
        lines.readline()
    reader = csv.reader(itertools.chain(lines, [END_OF_FILE]), delimiter=delimiter)
    next_line = skipped + 1
    width = 0
    try:
        for cells in reader:
            if cells and cells[-1].endswith(END_OF_FILE):
                _end_check(cells, next_line)
                return
            last_line = skipped + reader.line_num
            if last_line > next_line:
                _swallowed_check(cells, next_line, last_line, delimiter, width)
            width = width or len(cells)
            yield next_line, cells
            next_line = last_line + 1
    except csv.Error as exc:
        raise ImportFormatError(
            f"The file is not valid CSV near line {skipped + reader.line_num}: {exc}."
        ) from exc


def _end_check(cells: list[str], line: int) -> None:
    """Accept the end-of-file record alone; refuse a last cell that swallowed it."""
    if cells == [END_OF_FILE]:
        return

    # The record's earlier cells keep their line breaks, so they say on which
    # line the last cell, the one left open, starts.
    opened = line + sum(_line_breaks(cell) for cell in cells[:-1])
    raise ImportFormatError(
        f"A quote opened on line {opened} is never closed, so the rest of the file "
        "would be read as one cell. Close or remove that quote and upload the file "
        "again."
    )


# Something like an address: a line of a cell that holds one and as many cells as
# the header is a row of its own.
ADDRESS_LIKE = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]")


def _swallowed_check(
    cells: list[str], first: int, last: int, delimiter: str, width: int
) -> None:
    """Refuse a record whose quoted cell took in whole rows, a quote left open.

    A cell may hold line breaks (an address on two lines); one whose later lines
    each read as a row of the file's own, with an address, is a stray quote that
    closed lines later: the rows between would be lost inside one cell.
    """
    if width < 2:
        return
    opened = first
    for cell in cells:
        inner = cell.splitlines()[1:]
        if any(_is_row(line, delimiter, width) for line in inner):
            raise ImportFormatError(
                f"A quote opened on line {opened} is closed only on line {last}, "
                "so the lines between were read as part of one cell, though they "
                "look like rows of their own. Remove or close that quote and "
                "upload the file again."
            )
        opened += _line_breaks(cell)


def _is_row(line: str, delimiter: str, width: int) -> bool:
    return len(line.split(delimiter)) >= width and bool(ADDRESS_LIKE.search(line))


def _line_breaks(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _is_xlsx(data: bytes) -> bool:
    """Tell whether the bytes are a workbook; refuse a damaged one."""
    if not data.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except zipfile.BadZipFile as exc:
        if any(name.startswith("xl/") for name in _zip_part_names(data)):
            raise ImportFormatError(XLSX_DAMAGED) from exc
        # No archive to unzip either: saying "unzip it" would send the marketer
        # after a file that does not open.
        raise ImportFormatError(ZIP_DAMAGED) from exc

    if names >= XLSX_PARTS:
        return True
    # Some of a workbook's parts but not all: a damaged workbook, not an export zip.
    if "[Content_Types].xml" in names or any(name.startswith("xl/") for name in names):
        raise ImportFormatError(XLSX_DAMAGED)
    return False


def _zip_part_names(data: bytes) -> set[str]:
    """Return the part names a zip's local headers give, even in a zip cut short."""
    # A cut zip loses its directory at the end, but each part it still holds
    # starts with a header naming it: 30 bytes, the name's length at 26.
    names = set()
    for header in ZIP_LOCAL_HEADER.finditer(data):
        start = header.start() + 30
        length = int.from_bytes(data[start - 4 : start - 2], "little")
        names.add(data[start : start + length].decode("cp437"))
    return names


def xlsx_cell_text(value: object) -> str:
    """Return a spreadsheet cell as the text a CSV export of it would hold."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, datetime):
        # A date typed into a sheet is a datetime at midnight: give the date alone.
        if value.time() == time(0):
            return SheetDate(value.date().isoformat())
        return SheetDate(value.isoformat(sep=" "))
    if isinstance(value, date):
        return SheetDate(value.isoformat())
    if isinstance(value, time):
        return value.isoformat()
    text = str(value)
    # Excel writes a control character as _xHHHH_ (a line break in a cell as
    # _x000D_), and the reader gives it as written.
    if "_x" not in text:
        return text
    text = unescape(text)
    if "\x00" in text:
        return SHEET_NUL
    if SURROGATE.search(text):
        return SHEET_SURROGATE
    return text


def _float_text(value: float) -> str:
    """Return a number cell as Excel shows it: at most 15 significant digits."""
    # A workbook stores a float's 17 digits (0.30000000000000004, or
    # 1.234567890123457e+18 for 1234567890123456789), of which Excel shows 15; the
    # rest is binary noise, or digits that were never typed.
    shown = Decimal(format(value, f".{EXCEL_DIGITS}g"))
    if not shown:
        return "0"
    if EXCEL_PLAIN_SMALLEST <= abs(shown) < EXCEL_PLAIN_LARGEST:
        return format(shown.normalize(), "f")
    return format(shown, "e")


def _sheet_cell_text(cell: Any) -> str:
    # An error's code is stored like text (t="e"), and only the cell's type tells
    # it from a text cell that reads "#N/A".
    if cell.data_type == "e":
        return SheetError(str(cell.value))
    return xlsx_cell_text(cell.value)


def _xlsx_records(data: bytes) -> Iterator[tuple[int, list[str]]]:
    """Yield (row number, cells as text) for each row of the workbook's first sheet.

    The first that holds anything: contacts saved on a second sheet, the first
    left empty, are read, not refused as an empty file.
    """
    # openpyxl raises many kinds of error on a damaged workbook, on opening it or
    # only on reaching the damaged part.
    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:
        raise ImportFormatError(XLSX_DAMAGED) from exc

    try:
        sheet = _first_sheet_used(workbook)
        _formulas_calculated_check(data, sheet)
        # The size a sheet states is trusted by the read-only reader, and some
        # writers state "A1" for a full sheet: every row is read instead.
        sheet.reset_dimensions()
        for number, cells in enumerate(sheet.iter_rows(), start=1):
            yield number, [_sheet_cell_text(cell) for cell in cells]
    except ImportFormatError:
        raise
    except Exception as exc:
        raise ImportFormatError(XLSX_DAMAGED) from exc
    finally:
        workbook.close()


def _first_sheet_used(workbook: Any) -> Any:
    for sheet in workbook.worksheets:
        sheet.reset_dimensions()
        for row in sheet.iter_rows(values_only=True):
            if any(value not in (None, "") for value in row):
                return sheet
    return workbook.worksheets[0]


# A formula cell whose value was never calculated: `<f>` with an empty or no `<v>`.
# Excel and LibreOffice store each formula's value; a workbook written by a script
# may not, and its cells would read as empty.
UNCALCULATED_FORMULA = re.compile(
    rb'<(?:\w+:)?c\s+(?:[^>]*?\s)?r="([A-Z]+[0-9]+)"[^>]*>\s*'
    rb"<(?:\w+:)?f\b[^>]*(?:/>|>[^<]*</(?:\w+:)?f>)\s*"
    rb"(?:<(?:\w+:)?v\s*/>|<(?:\w+:)?v>\s*</(?:\w+:)?v>)?\s*</(?:\w+:)?c>"
)
FORMULA_CELLS_NAMED = 3


def _formulas_calculated_check(data: bytes, sheet: Any) -> None:
    # openpyxl gives such a cell as empty: refuse the file rather than import a
    # column of blanks. The sheet's own XML says which cells they are.
    path = getattr(sheet, "_worksheet_path", None)
    if path is None:
        return
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        xml = archive.read(path)
    cells = [
        match.group(1).decode()
        for match in itertools.islice(
            UNCALCULATED_FORMULA.finditer(xml), FORMULA_CELLS_NAMED
        )
    ]
    if cells:
        raise ImportFormatError(
            f"The workbook holds formulas whose values were never calculated "
            f"(cells {', '.join(cells)}), so they would import as empty. Open it "
            "in Excel or LibreOffice, save it again and upload the new file."
        )


def contacts_is_workbook(data: bytes) -> bool:
    """Tell whether contacts_records reads the bytes as a workbook (or refuses them)."""
    return data.startswith(b"PK\x03\x04")


def contacts_records(
    data: bytes, encoding: str = ""
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line, cells) for every record of a CSV or XLSX file, header first.

    `encoding` is a CSV file's chosen encoding (ENCODINGS); empty, it is found.
    """
    if _is_xlsx(data):
        yield from _xlsx_records(data)
        return

    yield from decoded_records(contacts_decoded(data, encoding))


def decoded_records(decoded: Decoded) -> Iterator[tuple[int, list[str]]]:
    """Yield (line, cells) for every record of a decoded CSV file, header first."""
    if not decoded.text.strip():
        raise ImportFormatError("The file is empty.")
    yield from _csv_records(decoded.text)


def contacts_header_read(records: Iterator[tuple[int, list[str]]]) -> list[str]:
    """Return the column names of the records' first one that is not blank, the header.

    Blank rows above it (an empty first line, a sheet that starts lower) are
    passed over, as blank rows between records are.
    """
    return header_names(contacts_header_cells(records))


def contacts_header_cells(records: Iterator[tuple[int, list[str]]]) -> list[str]:
    """Return the cells of the header, as written (see contacts_header_read)."""
    for _, cells in records:
        if "".join(cells).strip():
            return cells
    raise ImportFormatError("The file is empty.")


def contacts_header(data: bytes, encoding: str = "") -> list[str]:
    """Return the column names of a file's first record (see header_names)."""
    records = contacts_records(data, encoding)
    try:
        return contacts_header_read(records)
    finally:
        records.close()


def contacts_tags_split(cell: str) -> list[str]:
    """Split a TAGS cell like '"VIP","Expo 2024, Boston"' into its tag names."""
    if "," not in cell and '"' not in cell:
        name = cell.strip()
        return [name] if name else []

    if QUOTED_TAGS.fullmatch(cell):
        # What Mailchimp writes, read without a CSV reader: '"VIP","Expo, Boston"'.
        stripped = (name.strip() for name in QUOTED_TAG.findall(cell))
        return tags_distinct(name for name in stripped if name)

    # Tags are split on commas only. A line break outside quotes ends a record
    # for the CSV reader, but inside a tag it is white space, which the tag's
    # cleaning makes one space: the record's first cell goes on with the tag the
    # line before ended with ("Line\nBreak,Other" is "Line Break" and "Other").
    cells: list[str] = []
    for record in csv.reader(io.StringIO(cell, newline=""), skipinitialspace=True):
        if cells and record:
            record[0] = f"{cells.pop()}\n{record[0]}"
        cells.extend(record)
    names = (name.strip() for name in cells)
    return tags_distinct(name for name in names if name)
