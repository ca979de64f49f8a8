"""How names are read the same way wherever they arrive.

A full name as a first and a last name, for imports and identifies; tags as one tag
whatever the case they are written in, as segment rules compare them.
"""

import re
from collections.abc import Iterable

# The tag column's length: a longer tag is cut to it.
TAG_MAX_CHARS = 100

# In no one's name, city or phone number: NUL, escape, the other C0 and C1 codes,
# and the controls that reverse the direction of text ("Ann\u202egnp.exe" shows as
# "Annexe.png"). Tabs and line breaks are white space, read as one space.
CONTROL_CHARACTER = re.compile(
    r"[\x00-\x08\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
)


def field_text_clean(value: str) -> str:
    """Return a profile text field's value with each run of white space one space.

    Characters that show as nothing (INVISIBLE) are left out.

    A cell or trait that wraps ("Ana\nMaria") is the name on one line. A value with
    any other control character is refused with ValueError, which names it: such a
    value is a broken feed's, and would break the headers an email's name goes in.
    """
    found = CONTROL_CHARACTER.search(value)
    if found:
        raise ValueError(
            f"it holds the control character U+{ord(found.group()):04X}, "
            "which no name, place or phone number holds"
        )
    return " ".join(INVISIBLE.sub("", value).split())


# Characters that show as nothing and mean nothing in a name, a place or a phone
# number, but make "Ana" and "Ana\u200b" two names to a segment rule: zero-width
# space, word joiner, zero-width no-break space (a byte-order mark pasted inside),
# soft hyphen and the Mongolian vowel separator. The zero-width joiner and non-joiner
# stay: some scripts (Persian, Indic ones) and emoji need them.
INVISIBLE = re.compile("[\u200b\u2060\ufeff\u00ad\u180e]")


def name_split(full_name: str) -> dict[str, str]:
    """Return the first_name and last_name a full name holds, leaving out blank ones.

    "Last, First" when the name holds a comma (as directories and CRMs write it):
    the last name is what comes before the first comma. Otherwise the last word is
    the last name and the words before it the first name; one word is a first name.
    """
    if "," in full_name:
        last, first = full_name.split(",", 1)
    else:
        words = full_name.split()
        first, last = " ".join(words[:-1]), " ".join(words[-1:])
        if len(words) == 1:
            first, last = last, ""

    parts = {"first_name": first, "last_name": last}
    spaced = {name: " ".join(value.split()) for name, value in parts.items()}
    return {name: value for name, value in spaced.items() if value}


def tag_key(name: str) -> str:
    """Return what makes two tag names one tag, as PostgreSQL's lower() reads it.

    Letter by letter, as the database lowers them for the unique index of a
    profile's tags: a final sigma is "σ" there ("ΣΑΣ" is "σασ", where Python's
    lower() gives "σας"), and "İ" is "i" (Python adds a combining dot). The index
    decides in the end; this only keeps a tag's first spelling in Python.
    """
    return "".join(letter.lower()[0] for letter in name)


def tags_distinct(names: Iterable[str]) -> list[str]:
    """Return the names with each tag once, as first written ("VIP" before "vip")."""
    kept: dict[str, str] = {}
    for name in names:
        kept.setdefault(tag_key(name), name)
    return list(kept.values())
