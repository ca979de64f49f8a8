"""What an identify call changes on a profile: fields, custom traits and their schema.

An identify never changes consent or subscription status. Custom traits that have a
TraitDefinition are stored as their coerced, typed value; a value that breaks its
rule is left off the profile and reported (the event itself is kept), while the
call's other traits are applied.
"""

import zoneinfo
from dataclasses import dataclass, field
from typing import Any

from profiles.models import Event, Profile, RejectedEvent
from profiles.traits import (
    TraitInvalid,
    TraitRule,
    country_code_read,
    trait_coerce,
    trait_name_is_reserved,
)

# Identify traits that become profile fields (or identities) rather than traits.
IDENTIFY_FIELD_TRAITS = {
    "email",
    "firstName",
    "first_name",
    "lastName",
    "last_name",
    "name",
    "phone",
    # Segment's `id` trait is the userId again.
    "id",
}
TRAIT_INVALID_CODE = "trait_invalid:{reason}"


@dataclass
class IdentifyChange:
    """The profile fields and traits one identify sets, and the values it refused."""

    fields: dict[str, str]
    traits: dict[str, Any]
    refused: list[tuple[str, Any, TraitInvalid]] = field(default_factory=list)


def identify_change_read(
    *,
    profile: Profile,
    traits: dict[str, Any],
    context: dict[str, Any],
    schema: dict[str, TraitRule],
) -> IdentifyChange:
    """Work out what an identify's traits change on the profile, writing nothing."""
    fields = _trait_fields(traits)
    zone = context.get("timezone")
    if not profile.timezone and isinstance(zone, str) and _is_time_zone(zone):
        fields["timezone"] = zone

    # The address stays whole in traits too: street and postal code have no field.
    change = IdentifyChange(fields=fields, traits={})
    for name, raw in traits.items():
        if name in IDENTIFY_FIELD_TRAITS:
            continue
        if trait_name_is_reserved(name):
            # As an import refuses such a column: a custom trait by that name would
            # stand beside the field or computed trait, and templates read theirs.
            change.refused.append((name, raw, identify_trait_reserved(name)))
            continue
        rule = schema.get(name)
        if rule is None:
            change.traits[name] = raw
            continue

        try:
            change.traits[name] = trait_coerce(rule, raw)
        except TraitInvalid as exc:
            change.refused.append((name, raw, exc))
    return change


def identify_trait_reserved(name: str) -> TraitInvalid:
    """The reason a custom trait named like a profile field is not stored."""
    place = name.casefold() in PLACE_FIELDS
    return TraitInvalid(
        "reserved_name",
        f"{name}: is the name of a profile field or computed trait, so it is not "
        "kept as a custom trait"
        + (
            " (a place goes in address.city, address.state and address.country)"
            if place
            else ""
        ),
    )


# The reserved names an identify sends a place under: address.* says where they go.
PLACE_FIELDS = frozenset({"city", "region", "country_code", "country", "state"})


def identify_change_set(*, profile: Profile, change: IdentifyChange) -> list[str]:
    """Apply a change to the profile in memory; return the fields to save."""
    for name, value in change.fields.items():
        setattr(profile, name, value)
    profile.traits = {**profile.traits, **change.traits}
    return [*change.fields, "traits"]


def identify_rejections(*, event: Event, change: IdentifyChange) -> list[RejectedEvent]:
    """Return the rows that report the trait values an identify could not store."""
    return [
        RejectedEvent(
            source=event.source,
            message_id=event.message_id,
            code=TRAIT_INVALID_CODE.format(reason=exc.reason)[:50],
            message=f"Trait {exc.message}"[:500],
            payload={"trait": name, "value": raw},
            received_at=event.received_at,
        )
        for name, raw, exc in change.refused
    ]


def _trait_fields(traits: dict[str, Any]) -> dict[str, str]:
    first = traits.get("firstName", traits.get("first_name"))
    last = traits.get("lastName", traits.get("last_name"))
    full = _text(traits.get("name"), 300)
    if full and first is None and last is None:
        first, _, last = full.partition(" ")

    address = _address(traits)
    country = _text(address.get("country"), 100)
    candidates = {
        "first_name": _text(first, 150),
        "last_name": _text(last, 150),
        "phone": _text(traits.get("phone"), 50),
        "city": _text(address.get("city"), 100),
        "region": _text(address.get("state"), 100),
        "country_code": country_code_read(country),
    }
    # A trait that is absent or empty leaves what the profile knows.
    return {name: value for name, value in candidates.items() if value}


def _address(traits: dict[str, Any]) -> dict[str, Any]:
    address = traits.get("address")
    return address if isinstance(address, dict) else {}


def _text(value: Any, max_length: int) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    return str(value).strip()[:max_length]


def _is_time_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return len(name) <= 64
