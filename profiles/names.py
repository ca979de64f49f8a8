"""How a full name is read as a first and a last name: the same for imports and identifies."""


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
