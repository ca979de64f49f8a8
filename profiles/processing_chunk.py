"""One processing chunk: its people read up front, its quick events applied in memory.

An event whose ids all point at one profile (or at nobody, or at a profile that may
take them), and whose address is that profile's or nobody's, cannot merge anyone: it
is applied in memory and written with the rest of the chunk. Every other event goes
the careful way (profiles.processing_identities) after the chunk has written what it
holds, and the chunk then forgets what that event may have changed.
"""

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.db.models.functions import Lower
from psycopg.errors import UniqueViolation

from profiles.emails import traits_flagged
from profiles.models import (
    PROFILE_EMAIL_UNIQUE,
    Event,
    EventType,
    IdentityKind,
    Profile,
    ProfileIdentity,
    ProfileMerge,
    RejectedEvent,
)
from profiles.processing_identify import (
    IdentifyChange,
    identify_change_read,
    identify_change_set,
    identify_rejections,
)
from profiles.processing_identities import email_notices, event_apply, identify_email
from profiles.processing_traits import (
    ORDER_EVENTS,
    PRODUCT_EVENTS,
    VISIT_TYPES,
    TraitsRefresh,
    profiles_traits_refresh,
)
from profiles.processing_writes import IDENTIFY_FIELDS as PROFILE_IDENTIFY_FIELDS
from profiles.processing_writes import (
    among,
    driver_error,
    events_finish,
    identities_insert,
    profiles_create,
    profiles_identify_write,
)
from profiles.services import profiles_suppression_mark
from profiles.traits import TraitRule
from profiles.value_times import said_at

logger = logging.getLogger(__name__)

IdentityKey = tuple[str, str]


class ProfileDeleted(Exception):
    """An event's stored profile was deleted after the event was attached to it."""


class IdentityTaken(Exception):
    """Whose a chunk's ids are changed after the chunk read them; it is redone.

    Another worker linked one of its new ids first, or a profile it read was
    merged away (by hand, on the profile page) before the chunk could lock it.
    """


# What processing reads of every event: properties and times are left to the SQL of
# the traits.
EVENT_FIELDS = ("type", "event", "user_id", "anonymous_id", "previous_id", "profile_id")
# What an identify changes or reports: read for identifies up front, for other
# events only if asked.
IDENTIFY_FIELDS = (
    "traits",
    "context",
    "message_id",
    "source",
    "received_at",
    "timestamp",
)
# What the chunk reads of a profile an identify may change: what it reads and writes
# back. Building whole Profile instances (timestamps each loaded in Python) cost
# about as much as reading them.
PROFILE_FIELDS = ("pk", *PROFILE_IDENTIFY_FIELDS, "traits", "value_times")


class ChunkEvent:
    """An event as a chunk reads it: a few columns, not a model instance.

    Building 40,000 model instances a chunk cost more than applying the events.
    An identify also carries IDENTIFY_FIELDS (set by the claim); any of those read
    on another event is fetched from the database then, as a deferred field is.
    """

    __slots__ = ("pk", *EVENT_FIELDS, *IDENTIFY_FIELDS)

    def __init__(
        self,
        pk: int,
        type: str,  # noqa: A002 - the column's name
        event: str,
        user_id: str,
        anonymous_id: str,
        previous_id: str,
        profile_id: int | None,
    ) -> None:
        # The pk, then EVENT_FIELDS in their order: a claimed row as it is read.
        self.pk = pk
        self.type = type
        self.event = event
        self.user_id = user_id
        self.anonymous_id = anonymous_id
        self.previous_id = previous_id
        self.profile_id = profile_id

    def __getattr__(self, name: str) -> Any:
        # Called only for a slot never set: an identify field of another event.
        if name not in IDENTIFY_FIELDS:
            raise AttributeError(name)
        found = Event.objects.filter(pk=self.pk).values_list(*IDENTIFY_FIELDS).get()
        for field_name, value in zip(IDENTIFY_FIELDS, found, strict=True):
            setattr(self, field_name, value)
        return getattr(self, name)

    def __repr__(self) -> str:
        return f"<ChunkEvent {self.pk} {self.type}>"


@dataclass
class _Plan:
    profile_id: int | None  # None: a new profile
    missing: list[IdentityKey]  # the event's ids that nobody has yet


class EventChunk:
    """What one chunk knows of its events' people, read up front with a few queries.

    `owners` and `email_owners` map an id or address to its profile's pk (None when
    nobody has it) and `user_ids` the user ids each profile holds; `profiles` holds
    the chunk's locked profile rows, changed in memory by the quick path and
    written by `flush`. The careful path reads and writes the database itself, so
    the chunk flushes before it and forgets, after it, everything it may have
    changed.
    """

    def __init__(
        self, *, events: list[ChunkEvent], schema: dict[str, TraitRule]
    ) -> None:
        self.schema = schema
        self.refresh = TraitsRefresh(profile_ids=set(), event_ids=[])
        self.rejections: list[RejectedEvent] = []
        self.emails = _emails_read(events)
        self.owners = _owners_load(events)
        self.email_owners = _email_owners_load(
            {email.key for email in self.emails.values() if email is not None}
        )
        owning = {*self.owners.values(), *self.email_owners.values()} - {None}
        stored = {event.profile_id for event in events} - {None}
        # Every profile the chunk may touch is locked; only those an identify may
        # change are read whole.
        self.locked = _profiles_lock(owning | stored)
        if not owning <= self.locked.keys():
            # Deleted since the chunk read who owns its ids: merged into another.
            raise IdentityTaken("A profile the chunk read was merged away meanwhile.")
        # Events stored with a profile that was deleted since (the event table has
        # no foreign key): each fails alone, and goes with its profile.
        self.gone = stored - self.locked.keys()
        self.profiles = _profiles_read(self._identify_profile_ids(events))
        self.user_ids = _user_ids_load(set(self.locked))
        self._new_people_create(events)
        self.dirty: set[int] = set()
        # The profiles that took an address (pk: its key): marked suppressed if it
        # is on the suppression list.
        self.emails_taken: dict[int, str] = {}
        # Written by `flush`: events attached (event pk -> profile pk) and the
        # (profile pk, kind, value) identities linked in memory.
        self.attached: dict[int, int] = {}
        self.linked: list[tuple[int, str, str]] = []
        # The latest ProfileMerge the chunk knows of, read before its first careful
        # event.
        self.merges_seen: int | None = None
        # The profiles others were merged into: every segment reads them again.
        self.merged_into: set[int] = set()

    def apply(self, event: ChunkEvent) -> None:
        """Attach one event to its profile, quickly unless it may merge profiles."""
        if event.profile_id in self.gone:
            raise ProfileDeleted(
                f"Its profile {event.profile_id} was deleted; the event is deleted "
                "with it by the daily events_orphans_repair_task."
            )
        plan = self._plan(event)
        if plan is None:
            profile_id = self._apply_carefully(event)
        else:
            profile_id = self._apply_quickly(event, plan)

        self.refresh.profile_ids.add(profile_id)
        self.refresh.event_ids.append(event.pk)
        if event.event in ORDER_EVENTS:
            self.refresh.order_profile_ids.add(profile_id)
        if event.event in PRODUCT_EVENTS:
            self.refresh.category_profile_ids.add(profile_id)
        if event.type in VISIT_TYPES and not event.event:
            self.refresh.visit_profile_ids.add(profile_id)

    def finish(
        self, *, events: list[ChunkEvent], failed: dict[int, str]
    ) -> list[tuple[int, str, str]]:
        """Write everything the chunk did and bring its profiles' traits up to date.

        Return the (profile pk, type, event name) of each event attached to a profile.
        """
        self._profiles_flush()
        if self.emails_taken:
            profiles_suppression_mark(self.emails_taken)
        attached = events_finish(
            event_ids=[event.pk for event in events],
            profiles=self.attached,
            failed=failed,
        )
        profiles_traits_refresh(refresh=self.refresh)
        RejectedEvent.objects.bulk_create(self.rejections)
        return attached

    def profile(self, pk: int) -> Profile:
        if pk not in self.profiles:
            locked = Profile.objects.select_for_update().only(*PROFILE_FIELDS)
            try:
                self.profiles[pk] = locked.get(pk=pk)
            except Profile.DoesNotExist as exc:
                raise IdentityTaken(f"Profile {pk} was merged away meanwhile.") from exc
            self.locked[pk] = self.profiles[pk].email
        return self.profiles[pk]

    def _identify_profile_ids(self, events: list[ChunkEvent]) -> set[int]:
        keys = [
            key
            for event in events
            if event.type == IDENTIFY
            for key in _identity_keys(event)
        ]
        found = {self.owners[key] for key in keys} | set(self.email_owners.values())
        return {pk for pk in found if pk is not None}

    def owner(self, key: IdentityKey) -> int | None:
        if key not in self.owners:
            found = ProfileIdentity.objects.filter(kind=key[0], value=key[1])
            self.owners[key] = found.values_list("profile_id", flat=True).first()
        return self.owners[key]

    def email_owner(self, key: str) -> int | None:
        if key not in self.email_owners:
            self.email_owners.update(_email_owners_load({key}))
        return self.email_owners[key]

    def user_ids_of(self, pk: int) -> set[str]:
        if pk not in self.user_ids:
            self.user_ids.update(_user_ids_load({pk}))
        return self.user_ids[pk]

    def flush(self) -> None:
        """Write what the quick path changed in memory, before a careful event."""
        self._profiles_flush()
        if self.attached:
            # The chunk's last finish marks these again, and counts them then.
            events_finish(
                event_ids=list(self.attached),
                profiles=self.attached,
                failed={},
                count=False,
            )
            self.attached = {}

    def _profiles_flush(self) -> None:
        if self.linked:
            added = identities_insert(rows=self.linked)
            if len(added) != len(self.linked):
                raise IdentityTaken("Another worker linked one of the chunk's ids.")
            self.linked = []
        with _address_race_redone():
            profiles_identify_write(profiles=[self.profiles[pk] for pk in self.dirty])
        self.dirty = set()

    def _plan(self, event: ChunkEvent) -> _Plan | None:
        # The quick path is for events that cannot merge profiles: their ids point
        # at one profile or none, and an identify's address is that profile's or
        # nobody's. Everything else goes the careful way.
        if event.type == ALIAS or event.pk in self.emails.unreadable:
            return None
        if not event.user_id and not event.anonymous_id:
            known = event.profile_id in self.locked
            return _Plan(profile_id=event.profile_id, missing=[]) if known else None

        owners = {key: self.owner(key) for key in _identity_keys(event)}
        known_ids = {pk for pk in owners.values() if pk is not None}
        if len(known_ids) > 1:
            return None

        profile_id = next(iter(known_ids), None)
        email = self.emails.get(event.pk)
        if profile_id is None and email is not None:
            # Ids nobody has, and an address someone has (an imported customer's):
            # the ids join that profile, unless it is another userId's.
            profile_id = self.email_owner(email.key)
        missing = [key for key, pk in owners.items() if pk is None]
        if not self._email_fits(event, profile_id):
            return None
        if missing and not self._claimable(event, profile_id):
            return None
        return _Plan(profile_id=profile_id, missing=missing)

    def _email_fits(self, event: ChunkEvent, profile_id: int | None) -> bool:
        email = self.emails.get(event.pk)
        if email is None:
            return True
        # A new profile with an address is found or made by that address, carefully.
        if profile_id is None:
            return False
        # Another address than the profile's: a known person's new address, or
        # another person on a shared device, which the careful path tells apart.
        held = self.profile(profile_id).email
        if held and held.lower() != email.key:
            return False
        return self.email_owner(email.key) in (None, profile_id)

    def _claimable(self, event: ChunkEvent, profile_id: int | None) -> bool:
        # A profile that belongs to another userId is someone else who used the
        # same device: a new userId must not join it.
        if profile_id is None or not event.user_id:
            return True
        if self.owner((IdentityKind.USER_ID, event.user_id)) == profile_id:
            return True
        return not self.user_ids_of(profile_id)

    def _apply_quickly(self, event: ChunkEvent, plan: _Plan) -> int:
        # Read an identify's change first: an event that fails links nothing.
        change = None
        if event.type == IDENTIFY:
            known = plan.profile_id is not None
            profile = self.profile(plan.profile_id) if known else Profile()
            change = identify_change_read(
                profile=profile,
                traits=event.traits,
                context=event.context,
                schema=self.schema,
                said=said_at(event.timestamp, event.received_at),
            )

        if plan.profile_id is None:
            profile_id = self._newcomer_create(plan.missing)
            if profile_id is None:
                # Another worker took one of the ids meanwhile: link it carefully.
                return self._apply_carefully(event)
        else:
            profile_id = plan.profile_id
            self._link(profile_id, plan.missing)

        if change is not None:
            self._identify_apply(event, self.profile(profile_id), change)
        self.attached[event.pk] = profile_id
        return profile_id

    def _identify_apply(
        self, event: ChunkEvent, profile: Profile, change: IdentifyChange
    ) -> None:
        self._email_take(event, profile)
        identify_change_set(profile=profile, change=change)
        self.dirty.add(profile.pk)
        self.rejections += identify_rejections(event=event, change=change)
        self.rejections += email_notices(event, profile, self.emails.get(event.pk))

    def _link(self, profile_id: int, keys: list[IdentityKey]) -> None:
        # Written by `flush`, which redoes the chunk if another worker was first.
        rows = {(profile_id, *key) for key in keys}
        self.linked += rows
        self._owners_note(rows)

    def _newcomer_create(self, keys: list[IdentityKey]) -> int | None:
        (profile_id,) = profiles_create(count=1)
        self.locked[profile_id] = None
        self.user_ids[profile_id] = set()
        added = identities_insert(rows=[(profile_id, *key) for key in keys])
        self._owners_note(added)
        if len(added) == len(keys):
            return profile_id

        if not added:
            Profile.objects.filter(pk=profile_id).delete()
            self.locked.pop(profile_id)
        return None

    def _owners_note(self, added: set[tuple[int, str, str]]) -> None:
        for profile_id, kind, value in added:
            self.owners[(kind, value)] = profile_id
            if kind == IdentityKind.USER_ID:
                self.user_ids_of(profile_id).add(value)

    def _new_people_create(self, events: list[ChunkEvent]) -> None:
        # An event whose ids nobody has, and that no earlier event of the chunk
        # names, would create a profile of its own when its turn came: create all
        # of those at once. Each then finds its profile like any known person.
        named: set[IdentityKey] = set()
        addressed: set[str] = set()
        newcomers: list[list[IdentityKey]] = []
        for event in events:
            keys = _identity_keys(event)
            if self._is_newcomer(event, keys, named, addressed):
                newcomers.append(keys)
            named.update(keys)
            named.update((kind, event.previous_id) for kind in IDENTITY_KINDS)
            email = self.emails.get(event.pk)
            if email is not None:
                addressed.add(email.key)
        if not newcomers:
            return

        profile_ids = profiles_create(count=len(newcomers))
        self.user_ids.update({pk: set() for pk in profile_ids})
        rows = [
            (profile_id, *key)
            for profile_id, keys in zip(profile_ids, newcomers, strict=True)
            for key in keys
        ]
        added = identities_insert(rows=rows)
        self._owners_note(added)
        self._newcomers_keep(profile_ids, added)

    def _is_newcomer(
        self,
        event: ChunkEvent,
        keys: list[IdentityKey],
        named: set[IdentityKey],
        addressed: set[str],
    ) -> bool:
        # Someone new with an address nobody has, and that no earlier event of the
        # chunk names, is new too: their identify then gives their profile the
        # address, as a known visitor's does. (Done one at a time, carefully, a
        # back-fill of new customers took 14 ms each.)
        email = self.emails.get(event.pk)
        return bool(
            keys
            and event.type != ALIAS
            and event.pk not in self.emails.unreadable
            and (
                email is None
                or (email.key not in addressed and self.email_owner(email.key) is None)
            )
            and all(self.owners.get(key) is None for key in keys)
            and named.isdisjoint(keys)
        )

    def _newcomers_keep(
        self, profile_ids: list[int], added: set[tuple[int, str, str]]
    ) -> None:
        # A concurrent worker may have taken a newcomer's ids first: a profile that
        # got none of its ids is dropped, and its event goes the careful way.
        owning = {profile_id for profile_id, _, _ in added}
        for profile_id in profile_ids:
            if profile_id in owning:
                self.locked[profile_id] = None
                # Just created with every default: what Profile() holds in memory.
                self.profiles[profile_id] = Profile(pk=profile_id)
            else:
                self.user_ids.pop(profile_id)
        orphans = [pk for pk in profile_ids if pk not in owning]
        if orphans:
            Profile.objects.filter(pk__in=orphans).delete()

    def _owns_any(self, pk: int) -> bool:
        return pk in self.owners.values()

    def _email_take(self, event: ChunkEvent, profile: Profile) -> None:
        email = self.emails.get(event.pk)
        if email is None or profile.email or self.email_owner(email.key) is not None:
            return

        # _email_fits made sure no other profile holds this address.
        profile.email = email.key
        profile.email_display = email.display
        profile.traits = traits_flagged(profile.traits, email)
        self.locked[profile.pk] = email.key
        self.email_owners[email.key] = profile.pk
        self.dirty.add(profile.pk)
        self.emails_taken[profile.pk] = email.key

    def _apply_carefully(self, event: ChunkEvent) -> int:
        self.flush()
        if self.merges_seen is None:
            self.merges_seen = _merges_latest()
        rejections: list[RejectedEvent] = []
        with _address_race_redone(), transaction.atomic():
            profile = event_apply(event, schema=self.schema, rejections=rejections)
            # The event table has no foreign key (Event.profile): the profile the
            # event went to is held until the chunk commits; one deleted meanwhile
            # has the chunk redone.
            if not Profile.objects.select_for_update().filter(pk=profile.pk).exists():
                raise IdentityTaken(f"Profile {profile.pk} was deleted meanwhile.")

        self.rejections += rejections
        merged = self._merged_since()
        if merged:
            self.merged_into.add(profile.pk)
        self._forget(event, kept=profile.pk, merged=merged)
        return profile.pk

    def _merged_since(self) -> set[int]:
        # The profiles merged away since the last look: an id the chunk never read
        # (an alias's previousId) may have taken a profile some cached id points at.
        found = list(
            ProfileMerge.objects.filter(pk__gt=self.merges_seen).values_list(
                "pk", "merged_profile_id"
            )
        )
        if found:
            self.merges_seen = max(pk for pk, _ in found)
        return {merged for _, merged in found}

    def _forget(self, event: ChunkEvent, *, kept: int, merged: set[int]) -> None:
        # The careful path may have created, linked or merged any profile the
        # event's ids or address pointed at; read those afresh when next needed.
        keys = _identity_keys(event)
        if event.previous_id:
            keys += [(kind, event.previous_id) for kind in IDENTITY_KINDS]
        involved = {self.owners.get(key) for key in keys} | merged
        email = self.emails.get(event.pk)
        if email is not None:
            involved.add(self.email_owners.pop(email.key, None))
        involved |= {kept, event.profile_id}

        for key in keys:
            self.owners.pop(key, None)
        self.owners = {k: v for k, v in self.owners.items() if v not in involved}
        self.email_owners = {
            k: v for k, v in self.email_owners.items() if v not in involved
        }
        for pk in involved:
            self.locked.pop(pk, None)
            self.profiles.pop(pk, None)
            self.user_ids.pop(pk, None)


def _merges_latest() -> int:
    latest = ProfileMerge.objects.order_by("-pk").values_list("pk", flat=True).first()
    return latest or 0


class _ChunkEmails(dict):
    """Each identify's normalised address by event pk; `unreadable` holds the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.unreadable: set[int] = set()


def _emails_read(events: Iterable[ChunkEvent]) -> _ChunkEmails:
    emails = _ChunkEmails()
    for event in events:
        if event.type != IDENTIFY:
            continue
        if isinstance(event.traits, dict) and isinstance(event.context, dict):
            emails[event.pk] = identify_email(event)
        else:
            # Left to the careful path, which records why it cannot be processed.
            emails.unreadable.add(event.pk)
    return emails


# Plain strings: reading a choices member, several times for every event, adds up.
USER_ID = str(IdentityKind.USER_ID)
ANONYMOUS_ID = str(IdentityKind.ANONYMOUS_ID)
IDENTITY_KINDS = tuple(IdentityKind.values)
IDENTIFY = str(EventType.IDENTIFY)
ALIAS = str(EventType.ALIAS)


def _identity_keys(event: ChunkEvent) -> list[IdentityKey]:
    keys: list[IdentityKey] = []
    if event.user_id:
        keys.append((USER_ID, event.user_id))
    if event.anonymous_id:
        keys.append((ANONYMOUS_ID, event.anonymous_id))
    return keys


def _owners_load(events: list[ChunkEvent]) -> dict[IdentityKey, int | None]:
    keys = {key for event in events for key in _identity_keys(event)}
    user_ids = [value for kind, value in keys if kind == IdentityKind.USER_ID]
    anonymous_ids = [value for kind, value in keys if kind == IdentityKind.ANONYMOUS_ID]
    owners: dict[IdentityKey, int | None] = dict.fromkeys(keys)

    found = ProfileIdentity.objects.filter(
        Q(kind=IdentityKind.USER_ID, value__in=among(user_ids, of="text"))
        | Q(kind=IdentityKind.ANONYMOUS_ID, value__in=among(anonymous_ids, of="text"))
    )
    for kind, value, profile_id in found.values_list("kind", "value", "profile_id"):
        owners[(kind, value)] = profile_id
    return owners


@contextmanager
def _address_race_redone() -> Iterator[None]:
    """Turn a clash on a profile's address into IdentityTaken: the chunk is redone.

    Another writer (an import, a request) gave an address the chunk gives to a
    profile of its own since the chunk looked. Done again, the chunk sees that
    profile; done one event at a time, as for an event's own fault, a chunk took
    minutes, and the careful path's event failed for good.
    """
    try:
        yield
    except IntegrityError as exc:
        found = driver_error(exc)
        clash = isinstance(found, UniqueViolation)
        if not clash or found.diag.constraint_name != PROFILE_EMAIL_UNIQUE:
            raise
        raise IdentityTaken(
            "Another writer gave one of the chunk's addresses to a profile first."
        ) from exc


def _email_owners_load(keys: set[str]) -> dict[str, int | None]:
    owners: dict[str, int | None] = dict.fromkeys(keys)
    if not keys:
        return owners

    # Lower(email) is what the unique index holds: a capitalised row still matches.
    found = (
        Profile.objects.annotate(email_key=Lower("email"))
        .filter(email_key__in=among(keys, of="text"))
        .values_list("email_key", "pk")
    )
    owners.update(dict(found))
    return owners


def _user_ids_load(pks: set[int]) -> dict[int, set[str]]:
    user_ids: dict[int, set[str]] = {pk: set() for pk in pks}
    found = ProfileIdentity.objects.filter(
        profile_id__in=among(pks, of="bigint"), kind=IdentityKind.USER_ID
    )
    for profile_id, value in found.values_list("profile_id", "value"):
        user_ids[profile_id].add(value)
    return user_ids


def _profiles_lock(pks: set[int]) -> dict[int, str | None]:
    # In pk order, so two workers locking overlapping profiles never deadlock here.
    locked = Profile.objects.select_for_update()
    rows = locked.filter(pk__in=among(pks, of="bigint")).order_by("pk")
    return dict(rows.values_list("pk", "email"))


def _profiles_read(pks: set[int]) -> dict[int, Profile]:
    found = Profile.objects.filter(pk__in=among(pks, of="bigint"))
    return {profile.pk: profile for profile in found.only(*PROFILE_FIELDS)}
