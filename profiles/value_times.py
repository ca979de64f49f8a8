"""When each of a profile's fields and custom traits was said, so that older news loses.

Profile.value_times maps a field or custom trait name to the time of the identify,
or of the shop's customer record, that set it: ISO 8601 in UTC with microseconds,
texts that sort as the times do. Such a source leaves alone a value said later than
itself, whatever order the two were processed in (history back-filled, a retry that
arrives late). A value Bespoke was given with no time of its own (an import's, an
edit in the admin) has none: whatever the person says next replaces it.
"""

from collections.abc import Iterable
from datetime import UTC, datetime

from profiles.models import Profile


def value_time_text(at: datetime) -> str:
    """Return a time as Profile.value_times keeps it."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def said_at(timestamp: datetime, received_at: datetime) -> str:
    """Return when an event's values were said, as value_times keeps it.

    No later than the event arrived: a sender's clock ahead of Bespoke's (which the
    API accepts by a day) must not make its values outrank what comes after.
    """
    return value_time_text(min(timestamp, received_at))


def values_newer(profile: Profile, said: str) -> set[str]:
    """Return the names whose value was said later than `said`."""
    return {name for name, time in profile.value_times.items() if time > said}


def values_stamp(profile: Profile, names: Iterable[str], said: str) -> None:
    """Note, in memory, that these names' values were said at `said`."""
    profile.value_times = {**profile.value_times, **dict.fromkeys(names, said)}


def values_unstamp(profile: Profile, names: Iterable[str]) -> None:
    """Forget, in memory, when these names' values were said: they have no time."""
    names = set(names)
    profile.value_times = {
        name: time for name, time in profile.value_times.items() if name not in names
    }


def place_names_said(fields: Iterable[str], *, moved: bool) -> list[str]:
    """Return the names a change of these fields speaks for.

    A move to a new city speaks for the region too, whether or not it names one:
    the old city's region is not the new one's, and an older call's must not return.
    A call that names only a country or a state speaks for that alone.
    """
    said = list(fields)
    if moved and "city" in said and "region" not in said:
        said.append("region")
    return said
