"""What an identify call changes on a profile: fields, custom traits and their schema.

An identify never changes consent or subscription status. Custom traits that have a
TraitDefinition are stored as their coerced, typed value; a value that breaks its
rule is left off the profile and reported (the event itself is kept), while the
call's other traits are applied.

Each field and trait an identify sets keeps the identify's time (Profile.
value_times, profiles/value_times.py): an identify older than the value it would
replace (history back-filled, or a retry that arrives after a newer call) leaves
that value be, so the person's newest word stands in whatever order their calls
are processed.
"""

import zoneinfo
from dataclasses import dataclass, field
from typing import Any

from profiles.models import Event, Profile, RejectedEvent
from profiles.names import field_text_clean, name_split
from profiles.traits import (
    TraitInvalid,
    TraitRule,
    country_code_read,
    trait_coerce,
    trait_name_is_reserved,
    trait_rule_find,
    trait_sent_twice,
    trait_text_check,
)
from profiles.value_times import (
    FLOOR,
    place_names_said,
    values_newer,
    values_stamp,
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
    # When the identify was said (value_times.said_at), and the names it speaks for.
    said: str | None = None
    said_for: list[str] = field(default_factory=list)


def identify_change_read(
    *,
    profile: Profile,
    traits: dict[str, Any],
    context: dict[str, Any],
    schema: dict[str, TraitRule],
    said: str | None,
) -> IdentifyChange:
    """Work out what an identify's traits change on the profile, writing nothing.

    `said` is when the identify was said (value_times.said_at): what the profile
    holds from a later one is left out of the change. None: every value is taken.
    """
    newer = values_newer(profile, said) if said is not None else set()
    refused: list[tuple[str, Any, TraitInvalid]] = []
    fields = {
        name: value
        for name, value in identify_fields_read(traits, refused).items()
        if name not in newer
    }
    moved = any(
        name in fields and fields[name].casefold() != getattr(profile, name).casefold()
        for name in ("city", "country_code")
    )
    state_sent = bool(_address(traits).get("state"))
    if moved and profile.region and not state_sent and "region" not in newer:
        # A new address is one whole: the old one's region is not the new one's.
        fields["region"] = ""
    unknown_country = any(
        trait == "address.country" and exc.reason == "unknown_country"
        for trait, _, exc in refused
    )
    if (
        moved
        and unknown_country
        and profile.country_code
        and "country_code" not in newer
    ):
        # Nor is its country: unknown is truer than the old one (Wien, US).
        fields["country_code"] = ""
    zone = context.get("timezone")
    if not profile.timezone and isinstance(zone, str) and _is_time_zone(zone):
        fields["timezone"] = zone

    # The address stays whole in traits too: street and postal code have no field.
    change = IdentifyChange(fields=fields, traits={}, refused=refused, said=said)
    for name, raw in traits.items():
        if name in IDENTIFY_FIELD_TRAITS or name in newer:
            continue
        if trait_name_is_reserved(name):
            # As an import refuses such a column: a custom trait by that name would
            # stand beside the field or computed trait, and templates read theirs.
            change.refused.append((name, raw, identify_trait_reserved(name)))
            continue
        rule = trait_rule_find(schema, name)
        if rule is None:
            try:
                trait_text_check(name, raw)
            except TraitInvalid as exc:
                change.refused.append((name, raw, exc))
                continue
            change.traits[name] = raw
            continue
        if rule.name != name and (rule.name in traits or rule.name in newer):
            # Sent in its declared spelling too, whose value stands; or held from
            # a later identify.
            if rule.name in traits:
                change.refused.append((name, raw, trait_sent_twice(name, rule.name)))
            continue

        try:
            change.traits[rule.name] = trait_coerce(rule, raw)
        except TraitInvalid as exc:
            change.refused.append((name, raw, exc))
    place = place_names_said(fields, country_was=profile.country_code)
    said_for = [*place, *change.traits]
    change.said_for = [name for name in said_for if name not in newer]
    return change


def identify_trait_reserved(name: str) -> TraitInvalid:
    """The reason a custom trait named like a profile field is not stored."""
    if name == FLOOR:
        return TraitInvalid(
            "reserved_name",
            f"{name}: is a name Bespoke keeps for itself, so it is not kept as a "
            "custom trait",
        )
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
    if change.said is None:
        return [*change.fields, "traits"]
    values_stamp(profile, change.said_for, change.said)
    return [*change.fields, "traits", "value_times"]


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


def identify_fields_read(
    traits: dict[str, Any], refused: list[tuple[str, Any, TraitInvalid]]
) -> dict[str, str]:
    """Return the profile fields the traits fill; refuse values too long for theirs."""
    first_name = "firstName" if "firstName" in traits else "first_name"
    last_name = "lastName" if "lastName" in traits else "last_name"
    address = _address(traits)
    # Each field, and the trait (as sent) that fills it.
    sent: dict[str, tuple[str, Any]] = {
        "first_name": (first_name, traits.get(first_name)),
        "last_name": (last_name, traits.get(last_name)),
        "phone": ("phone", traits.get("phone")),
        "city": ("address.city", address.get("city")),
        "region": ("address.state", address.get("state")),
    }
    full = _field_text("name", traits.get("name"), "name", refused)
    # Each field's text, once: a trait refused is named once, and one whose text is
    # nothing once cleaned is none.
    named: list[tuple[str, Any, TraitInvalid]] = []
    texts = {
        field_name: _field_text(
            trait,
            raw,
            field_name.replace("_", " "),
            named if field_name in NAME_FIELDS else refused,
        )
        for field_name, (trait, raw) in sent.items()
    }
    # A firstName that names nothing (a sign-up form's box left empty, or a value
    # that is no text) leaves a name beside it to be split.
    split = bool(full) and not (texts["first_name"] or texts["last_name"])
    if split:
        # Read as an import reads a "Full name" column.
        for name, part in name_split(full).items():
            sent[name], texts[name] = ("name", part), part
        named = [_name_taken_instead(refusal) for refusal in named]
    refused += named

    fields: dict[str, str] = {}
    for field_name, (trait, raw) in sent.items():
        value = texts[field_name]
        limit = FIELD_LENGTHS[field_name]
        if len(value) > limit:
            refused.append((trait, raw, _too_long(trait, value, field_name, limit)))
        elif value:
            # A trait that is absent or empty leaves what the profile knows.
            fields[field_name] = value
    if split and any(trait == "name" for trait, _, _ in refused):
        # Half a name would be a name nobody sent: the other half goes too.
        fields.pop("first_name", None)
        fields.pop("last_name", None)
    written = _text(address.get("country"))[:100]
    country = country_code_read(written)
    if country:
        fields["country_code"] = country
    elif written.strip():
        refused.append(
            ("address.country", address.get("country"), _no_country(written))
        )
    return fields


def _no_country(written: str) -> TraitInvalid:
    return TraitInvalid(
        "unknown_country",
        f"address.country: {written!r} is not a country Bespoke can read (a "
        "two-letter code, or the country's name in English or its own language, "
        "such as 'Austria' or 'Österreich'), so "
        "it was not stored; with a new city, the old country goes too",
    )


NAME_FIELDS = ("first_name", "last_name")


def _name_taken_instead(
    refusal: tuple[str, Any, TraitInvalid],
) -> tuple[str, Any, TraitInvalid]:
    # A firstName refused beside a name that is split: the name gives the field.
    trait, raw, exc = refusal
    for label in ("first name", "last name"):
        exc_message = exc.message.replace(
            _unused(label), f"so the {label} is read from 'name'"
        )
        if exc_message != exc.message:
            return trait, raw, TraitInvalid(exc.reason, exc_message)
    return refusal


# How long a value each field an identify fills holds.
FIELD_LENGTHS = {
    name: Profile._meta.get_field(name).max_length
    for name in ("first_name", "last_name", "phone", "city", "region")
}


def _too_long(trait: str, value: str, field_name: str, limit: int) -> TraitInvalid:
    label = field_name.replace("_", " ")
    return TraitInvalid(
        "too_long",
        f"{trait}: {len(value)} characters, more than the {limit} of the profile's "
        f"{label}, which keeps the {label} it had",
    )


def _field_text(
    trait: str, raw: Any, label: str, refused: list[tuple[str, Any, TraitInvalid]]
) -> str:
    """Return the text a trait gives a profile field, or refuse it and return ''."""
    if raw is None:
        return ""
    kind = _NOT_TEXT.get(type(raw))
    if kind is not None:
        refused.append((trait, raw, _not_text(trait, kind, label)))
        return ""
    try:
        return field_text_clean(_text(raw))
    except ValueError as exc:
        refused.append(
            (
                trait,
                raw,
                TraitInvalid("control_character", f"{trait}: {exc}, {_unused(label)}"),
            )
        )
        return ""


# What a JSON value that cannot be a profile's text is called in a warning.
_NOT_TEXT = {dict: "an object", list: "a list", bool: "true or false"}


def _not_text(trait: str, kind: str, label: str) -> TraitInvalid:
    return TraitInvalid("not_text", f"{trait}: is {kind}, not text, {_unused(label)}")


def _unused(label: str) -> str:
    # A full name fills two fields, which firstName and lastName may have filled.
    if label == "name":
        return "so it is not used"
    return f"so the profile keeps the {label} it had"


def _address(traits: dict[str, Any]) -> dict[str, Any]:
    address = traits.get("address")
    return address if isinstance(address, dict) else {}


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    return str(value).strip()


def _is_time_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return len(name) <= 64
