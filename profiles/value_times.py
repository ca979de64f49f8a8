"""When each of a profile's fields and custom traits was said, so that older news loses.

Profile.value_times maps a field or custom trait name to the time it was said:
ISO 8601 in UTC with microseconds, texts that sort as the times do. An identify and
the shop's customer record give their values their own time (the call's timestamp,
the record's updated_at); an edit in the admin gives the values it changes the time
it was made. An import dates what it changes by when it ran, under the key FLOOR:
every value with no time of its own was given no earlier than that (one key a
profile, not one a value, so that a million-row import writes no more).

A value is left alone by anything said earlier than it, whatever order the two were
processed in (history back-filled, a retry that arrives late): the person's newest
word stands. A value no source dated (from before Bespoke kept times) yields to any.
"""

from collections.abc import Iterable
from datetime import UTC, datetime

from profiles.models import PERSON_FIELDS, Profile

# The time of the values that have none of their own: when an import last wrote.
FLOOR = "*"


def value_time_text(at: datetime) -> str:
    """Return a time as Profile.value_times keeps it."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def said_at(timestamp: datetime, received_at: datetime) -> str:
    """Return when an event's values were said, as value_times keeps it.

    No later than the event arrived: a sender's clock ahead of Bespoke's (which the
    API accepts by a day) must not make its values outrank what comes after.
    """
    return value_time_text(min(timestamp, received_at))


def value_time(times: dict[str, str], name: str) -> str:
    """Return when a value was said: its own time, else the floor, else ''."""
    return times.get(name) or times.get(FLOOR, "")


class _Newer:
    """The names a profile holds a value of that was said later than a given time.

    The floor dates only values the profile holds: an empty field, or a trait it
    lacks, was never given, and anything may fill it.
    """

    def __init__(self, profile: Profile, said: str) -> None:
        times = profile.value_times
        self.profile = profile
        self.own = {n for n, t in times.items() if n != FLOOR and t > said}
        self.floor_newer = times.get(FLOOR, "") > said

    def __contains__(self, name: object) -> bool:
        if name in self.own:
            return True
        if not self.floor_newer or name in self.profile.value_times:
            return False
        return _holds(self.profile, str(name))


def _holds(profile: Profile, name: str) -> bool:
    # A custom trait is never named like a field (trait_name_is_reserved).
    if name in PERSON_FIELDS:
        return bool(getattr(profile, name))
    return name in profile.traits


def values_newer(profile: Profile, said: str) -> _Newer:
    """Return the names whose value was said later than `said` (tested with `in`)."""
    return _Newer(profile, said)


def values_stamp(profile: Profile, names: Iterable[str], said: str) -> None:
    """Note, in memory, that these names' values were said at `said`."""
    profile.value_times = {**profile.value_times, **dict.fromkeys(names, said)}


def values_imported(profile: Profile, names: Iterable[str], at: str) -> None:
    """Note, in memory, that an import running at `at` wrote these names' values."""
    names = set(names)
    if not names:
        return
    kept = {n: t for n, t in profile.value_times.items() if n not in names}
    profile.value_times = {**kept, FLOOR: max(kept.get(FLOOR, ""), at)}


def place_names_said(fields: dict[str, str], *, country_was: str) -> list[str]:
    """Return the names a change of these fields speaks for.

    A call naming a city speaks for the region too, whether or not it names one
    (the region is that city's, or none), and so does one that moves the person
    from the country they were known in (`country_was`) to another: an older call's
    region must not return. A call naming only a state, or only a country where
    none was known, speaks for that alone.
    """
    said = list(fields)
    country = fields.get("country_code", "")
    moved = bool(country_was and country) and country.upper() != country_was.upper()
    if ("city" in said or moved) and "region" not in said:
        said.append("region")
    return said
