"""Event processing: identity resolution, profile upserts, merges, computed traits.

Events are processed in chunks, oldest first. A chunk is claimed under row locks
(skipping rows another worker holds) and processed in one transaction that attaches
each event to its profile and marks the chunk processed. The chunk's identities,
email owners and profiles are read with a few queries up front: an event whose ids
all point at one known profile is applied in memory and written with the rest of
the chunk, while one that creates a profile, links a new id or may merge two
profiles takes the careful path, one event at a time. Computed traits are then
brought up to date once per profile per chunk (see profiles/processing_traits.py).
An identify never changes consent or subscription status.
"""

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import OperationalError, transaction
from django.db.models import Q, QuerySet
from django.db.models.functions import Lower

from profiles.emails import InvalidEmail, NormalizedEmail, email_normalize
from profiles.models import (
    ConsentRecord,
    Event,
    EventType,
    IdentityKind,
    Profile,
    ProfileIdentity,
    ProfileMerge,
    ProfileTag,
    RejectedEvent,
)
from profiles.processing_identify import (
    IdentifyChange,
    identify_change_read,
    identify_change_set,
    identify_rejections,
)
from profiles.processing_traits import (
    ORDER_COMPLETED,
    PRODUCT_EVENTS,
    TraitsRefresh,
    number_coerce,
    profile_traits_compute,
    profiles_traits_refresh,
)
from profiles.processing_writes import (
    events_finish,
    identities_insert,
    profiles_create,
    profiles_identify_write,
)
from profiles.services import profile_get_or_create_by_email
from profiles.traits import TraitRule, trait_schema_load

__all__ = [
    "EventUnresolvable",
    "MergeRefused",
    "events_process",
    "events_process_pending",
    "number_coerce",
    "profile_merge",
    "profile_traits_compute",
]

logger = logging.getLogger(__name__)

EVENT_CHUNK_SIZE = 1000
CHUNK_ATTEMPTS = 3
EMAIL_CACHE_SIZE = 20_000
# What processing reads of an event; properties are left to the SQL of the traits.
EVENT_FIELDS_READ = (
    "message_id",
    "type",
    "event",
    "user_id",
    "anonymous_id",
    "previous_id",
    "profile_id",
    "traits",
    "context",
    "source",
    "timestamp",
    "received_at",
)
PROFILE_FIELDS_FILLED_ON_MERGE = (
    "first_name",
    "last_name",
    "phone",
    "city",
    "region",
    "country_code",
    "timezone",
)
IdentityKey = tuple[str, str]


class IdentityTaken(Exception):
    """Another worker linked one of a chunk's new ids first; the chunk is redone."""


class EventUnresolvable(Exception):
    """An event that names no one: no userId, no anonymousId and no profile."""


class MergeRefused(Exception):
    """Two profiles look linked but cannot be one person (two emails, two user ids)."""


def events_process(*, event_ids: list[int]) -> int:
    """Process the given events that are still unprocessed; return how many were."""
    pending = Event.objects.filter(pk__in=event_ids, processed_at__isnull=True)
    return _events_process_queryset(pending, limit=len(event_ids))


def events_process_pending(*, limit: int | None = None) -> int:
    """Process unprocessed events oldest first, at most `limit`; return how many."""
    pending = Event.objects.filter(processed_at__isnull=True)
    return _events_process_queryset(pending, limit=limit)


def _events_process_queryset(pending: QuerySet[Event], *, limit: int | None) -> int:
    # The schema is read once for the whole run, not once per event.
    schema = trait_schema_load()
    done = 0
    while limit is None or done < limit:
        size = (
            EVENT_CHUNK_SIZE if limit is None else min(EVENT_CHUNK_SIZE, limit - done)
        )
        processed = _chunk_redone_if_raced(pending, size=size, schema=schema)
        if processed == 0:
            break
        done += processed

    if done:
        logger.info("Events processed: %s", done, extra={"events": done})
    return done


def _chunk_redone_if_raced(
    pending: QuerySet[Event], *, size: int, schema: dict[str, TraitRule]
) -> int:
    for _ in range(CHUNK_ATTEMPTS - 1):
        try:
            return _chunk_process(pending, size=size, schema=schema)
        except IdentityTaken:
            # Rolled back whole; the other worker's ids are committed by now, so
            # the next attempt sees them.
            logger.warning("Event chunk redone: another worker linked its ids first")
    return _chunk_process(pending, size=size, schema=schema)


@transaction.atomic
def _chunk_process(
    pending: QuerySet[Event], *, size: int, schema: dict[str, TraitRule]
) -> int:
    # skip_locked lets two workers share the backlog without taking the same rows;
    # the locks last until this transaction marks the rows processed.
    claimed = pending.select_for_update(skip_locked=True, of=("self",))
    events = list(claimed.only(*EVENT_FIELDS_READ).order_by("timestamp", "id")[:size])
    if not events:
        return 0

    chunk = _Chunk(events=events, schema=schema)
    failed: dict[int, str] = {}
    for event in events:
        try:
            chunk.apply(event)
        except OperationalError:
            # Transient (a deadlock, a lost connection): roll the chunk back whole
            # and let the task's retry or the next sweep do it again.
            raise
        except Exception as exc:
            logger.exception("Event processing failed", extra={"event": event.pk})
            failed[event.pk] = f"{type(exc).__name__}: {exc}"[:500]

    chunk.finish(events=events, failed=failed)
    return len(events)


@dataclass
class _Plan:
    profile_id: int | None  # None: a new profile
    missing: list[IdentityKey]  # the event's ids that nobody has yet


class _Chunk:
    """What one chunk knows of its events' people, read up front with a few queries.

    `owners` and `email_owners` map an id or address to its profile's pk (None when
    nobody has it) and `user_ids` the user ids each profile holds; `profiles` holds
    the chunk's locked profile rows, changed in memory by the quick path and
    written by `flush`. The careful path reads and writes the database itself, so
    the chunk flushes before it and forgets, after it, everything it may have
    changed.
    """

    def __init__(self, *, events: list[Event], schema: dict[str, TraitRule]) -> None:
        self.schema = schema
        self.refresh = TraitsRefresh(profile_ids=set(), event_ids=[])
        self.rejections: list[RejectedEvent] = []
        self.emails = _emails_read(events)
        self.owners = _owners_load(events)
        self.email_owners = _email_owners_load(
            {email.key for email in self.emails.values() if email is not None}
        )
        wanted = {*self.owners.values(), *self.email_owners.values()}
        wanted |= {event.profile_id for event in events}
        # Every profile the chunk may touch is locked; only those an identify may
        # change are read whole.
        self.locked = _profiles_lock({pk for pk in wanted if pk is not None})
        self.profiles = _profiles_read(self._identify_profile_ids(events))
        self.user_ids = _user_ids_load(set(self.locked))
        self._new_people_create(events)
        self.dirty: set[int] = set()
        # Written by `flush`: events attached (event pk -> profile pk) and the
        # (profile pk, kind, value) identities linked in memory.
        self.attached: dict[int, int] = {}
        self.linked: list[tuple[int, str, str]] = []

    def apply(self, event: Event) -> None:
        """Attach one event to its profile, quickly unless it may merge profiles."""
        plan = self._plan(event)
        if plan is None:
            profile_id = self._apply_carefully(event)
        else:
            profile_id = self._apply_quickly(event, plan)

        self.refresh.profile_ids.add(profile_id)
        self.refresh.event_ids.append(event.pk)
        if event.event == ORDER_COMPLETED:
            self.refresh.order_profile_ids.add(profile_id)
        if event.event in PRODUCT_EVENTS:
            self.refresh.category_profile_ids.add(profile_id)

    def finish(self, *, events: list[Event], failed: dict[int, str]) -> None:
        """Write everything the chunk did and bring its profiles' traits up to date."""
        self._profiles_flush()
        events_finish(
            event_ids=[event.pk for event in events],
            profiles=self.attached,
            failed=failed,
        )
        profiles_traits_refresh(refresh=self.refresh)
        RejectedEvent.objects.bulk_create(self.rejections)

    def profile(self, pk: int) -> Profile:
        if pk not in self.profiles:
            self.profiles[pk] = Profile.objects.select_for_update().get(pk=pk)
            self.locked[pk] = self.profiles[pk].email
        return self.profiles[pk]

    def _identify_profile_ids(self, events: list[Event]) -> set[int]:
        keys = [
            key
            for event in events
            if event.type == EventType.IDENTIFY
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
            events_finish(
                event_ids=list(self.attached), profiles=self.attached, failed={}
            )
            self.attached = {}

    def _profiles_flush(self) -> None:
        if self.linked:
            added = identities_insert(rows=self.linked)
            if len(added) != len(self.linked):
                raise IdentityTaken("Another worker linked one of the chunk's ids.")
            self.linked = []
        profiles_identify_write(profiles=[self.profiles[pk] for pk in self.dirty])
        self.dirty = set()

    def _plan(self, event: Event) -> _Plan | None:
        # The quick path is for events that cannot merge profiles: their ids point
        # at one profile or none, and an identify's address is that profile's or
        # nobody's. Everything else goes the careful way.
        if event.type == EventType.ALIAS or event.pk in self.emails.unreadable:
            return None
        if not event.user_id and not event.anonymous_id:
            known = event.profile_id in self.locked
            return _Plan(profile_id=event.profile_id, missing=[]) if known else None

        owners = {key: self.owner(key) for key in _identity_keys(event)}
        known_ids = {pk for pk in owners.values() if pk is not None}
        if len(known_ids) > 1:
            return None

        profile_id = next(iter(known_ids), None)
        missing = [key for key, pk in owners.items() if pk is None]
        if not self._email_fits(event, profile_id):
            return None
        if missing and not self._claimable(event, profile_id):
            return None
        return _Plan(profile_id=profile_id, missing=missing)

    def _email_fits(self, event: Event, profile_id: int | None) -> bool:
        email = self.emails.get(event.pk)
        if email is None:
            return True
        # A new profile with an address is found or made by that address, carefully.
        if profile_id is None:
            return False
        return self.email_owner(email.key) in (None, profile_id)

    def _claimable(self, event: Event, profile_id: int | None) -> bool:
        # A profile that belongs to another userId is someone else who used the
        # same device: a new userId must not join it.
        if profile_id is None or not event.user_id:
            return True
        if self.owner((IdentityKind.USER_ID, event.user_id)) == profile_id:
            return True
        return not self.user_ids_of(profile_id)

    def _apply_quickly(self, event: Event, plan: _Plan) -> int:
        # Read an identify's change first: an event that fails links nothing.
        change = None
        if event.type == EventType.IDENTIFY:
            known = plan.profile_id is not None
            profile = self.profile(plan.profile_id) if known else Profile()
            change = identify_change_read(
                profile=profile,
                traits=event.traits,
                context=event.context,
                schema=self.schema,
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
        self, event: Event, profile: Profile, change: IdentifyChange
    ) -> None:
        self._email_take(event, profile)
        identify_change_set(profile=profile, change=change)
        self.dirty.add(profile.pk)
        self.rejections += identify_rejections(event=event, change=change)

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

    def _new_people_create(self, events: list[Event]) -> None:
        # An event whose ids nobody has, and that no earlier event of the chunk
        # names, would create a profile of its own when its turn came: create all
        # of those at once. Each then finds its profile like any known person.
        named: set[IdentityKey] = set()
        newcomers: list[list[IdentityKey]] = []
        for event in events:
            keys = _identity_keys(event)
            if self._is_newcomer(event, keys, named):
                newcomers.append(keys)
            named.update(keys)
            named.update((kind, event.previous_id) for kind in IdentityKind.values)
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
        self, event: Event, keys: list[IdentityKey], named: set[IdentityKey]
    ) -> bool:
        return bool(
            keys
            and event.type != EventType.ALIAS
            and event.pk not in self.emails.unreadable
            and self.emails.get(event.pk) is None
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

    def _email_take(self, event: Event, profile: Profile) -> None:
        email = self.emails.get(event.pk)
        if email is None or profile.email or self.email_owner(email.key) is not None:
            return

        # _email_fits made sure no other profile holds this address.
        profile.email = email.key
        profile.email_display = email.display
        self.locked[profile.pk] = email.key
        self.email_owners[email.key] = profile.pk
        self.dirty.add(profile.pk)

    def _apply_carefully(self, event: Event) -> int:
        self.flush()
        rejections: list[RejectedEvent] = []
        with transaction.atomic():
            profile = _event_apply(event, schema=self.schema, rejections=rejections)

        self.rejections += rejections
        self._forget(event, kept=profile.pk)
        return profile.pk

    def _forget(self, event: Event, *, kept: int) -> None:
        # The careful path may have created, linked or merged any profile the
        # event's ids or address pointed at; read those afresh when next needed.
        keys = _identity_keys(event)
        if event.previous_id:
            keys += [(kind, event.previous_id) for kind in IdentityKind.values]
        involved = {self.owners.get(key) for key in keys}
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


class _ChunkEmails(dict):
    """Each identify's normalised address by event pk; `unreadable` holds the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.unreadable: set[int] = set()


def _emails_read(events: Iterable[Event]) -> _ChunkEmails:
    emails = _ChunkEmails()
    for event in events:
        if event.type != EventType.IDENTIFY:
            continue
        if isinstance(event.traits, dict) and isinstance(event.context, dict):
            emails[event.pk] = _identify_email(event)
        else:
            # Left to the careful path, which records why it cannot be processed.
            emails.unreadable.add(event.pk)
    return emails


def _identity_keys(event: Event) -> list[IdentityKey]:
    keys = [
        (IdentityKind.USER_ID, event.user_id),
        (IdentityKind.ANONYMOUS_ID, event.anonymous_id),
    ]
    return [(str(kind), value) for kind, value in keys if value]


def _owners_load(events: list[Event]) -> dict[IdentityKey, int | None]:
    keys = {key for event in events for key in _identity_keys(event)}
    user_ids = [value for kind, value in keys if kind == IdentityKind.USER_ID]
    anonymous_ids = [value for kind, value in keys if kind == IdentityKind.ANONYMOUS_ID]
    owners: dict[IdentityKey, int | None] = dict.fromkeys(keys)

    found = ProfileIdentity.objects.filter(
        Q(kind=IdentityKind.USER_ID, value__in=user_ids)
        | Q(kind=IdentityKind.ANONYMOUS_ID, value__in=anonymous_ids)
    )
    for kind, value, profile_id in found.values_list("kind", "value", "profile_id"):
        owners[(kind, value)] = profile_id
    return owners


def _email_owners_load(keys: set[str]) -> dict[str, int | None]:
    owners: dict[str, int | None] = dict.fromkeys(keys)
    if not keys:
        return owners

    # Lower(email) is what the unique index holds: a capitalised row still matches.
    found = (
        Profile.objects.annotate(email_key=Lower("email"))
        .filter(email_key__in=keys)
        .values_list("email_key", "pk")
    )
    owners.update(dict(found))
    return owners


def _user_ids_load(pks: set[int]) -> dict[int, set[str]]:
    user_ids: dict[int, set[str]] = {pk: set() for pk in pks}
    found = ProfileIdentity.objects.filter(
        profile_id__in=pks, kind=IdentityKind.USER_ID
    )
    for profile_id, value in found.values_list("profile_id", "value"):
        user_ids[profile_id].add(value)
    return user_ids


def _profiles_lock(pks: set[int]) -> dict[int, str | None]:
    # In pk order, so two workers locking overlapping profiles never deadlock here.
    rows = Profile.objects.select_for_update().filter(pk__in=pks).order_by("pk")
    return dict(rows.values_list("pk", "email"))


def _profiles_read(pks: set[int]) -> dict[int, Profile]:
    return {profile.pk: profile for profile in Profile.objects.filter(pk__in=pks)}


def _event_apply(
    event: Event, *, schema: dict[str, TraitRule], rejections: list[RejectedEvent]
) -> Profile:
    if event.user_id or event.anonymous_id:
        profile = _profile_resolve(event)
    elif event.profile_id is not None:
        # Written by another source (a webhook) that already knew the profile.
        # Read afresh: an earlier event of this chunk may have merged it away.
        profile = Profile.objects.get(events=event)
    else:
        raise EventUnresolvable("The event has no userId, anonymousId or profile.")

    if event.type == EventType.IDENTIFY:
        change = identify_change_read(
            profile=profile, traits=event.traits, context=event.context, schema=schema
        )
        fields = identify_change_set(profile=profile, change=change)
        profile.save(update_fields=[*fields, "updated_at"])
        rejections += identify_rejections(event=event, change=change)

    Event.objects.filter(pk=event.pk).update(profile=profile)
    return profile


def _profile_resolve(event: Event) -> Profile:
    email = _identify_email(event)
    user_id = event.user_id
    profile = _owner(IdentityKind.USER_ID, user_id)

    # iexact, as profile_get_or_create_by_email: a hand-stored capitalised row counts.
    email_owner = (
        Profile.objects.filter(email__iexact=email.key).first() if email else None
    )
    profile = _join(profile, _claimable(email_owner, user_id=user_id))
    anonymous_owner = _owner(IdentityKind.ANONYMOUS_ID, event.anonymous_id)
    profile = _join(profile, _claimable(anonymous_owner, user_id=user_id))
    if event.type == EventType.ALIAS:
        # An alias says outright that the two ids are one person.
        profile = _join(profile, _previous_owner(event.previous_id), explicit=True)

    if profile is None:
        profile = _profile_create(email if email_owner is None else None)
    elif email is not None and not profile.email and email_owner is None:
        profile = _email_assign(profile=profile, email=email)

    return _identities_attach(profile=profile, event=event)


def _claimable(profile: Profile | None, *, user_id: str) -> Profile | None:
    # A profile that already belongs to another userId is someone else who used
    # the same device or address; the event must not join it.
    if profile is None or not user_id:
        return profile

    other_user = profile.identities.filter(kind=IdentityKind.USER_ID).exclude(
        value=user_id
    )
    return None if other_user.exists() else profile


def _identify_email(event: Event) -> NormalizedEmail | None:
    if event.type != EventType.IDENTIFY:
        return None

    raw = event.traits.get("email")
    if not isinstance(raw, str) or not raw.strip():
        return None
    try:
        return _email_normalize_cached(raw)
    except InvalidEmail:
        logger.info("Identify email trait is not an address", extra={"event": event.pk})
        return None


@functools.lru_cache(maxsize=EMAIL_CACHE_SIZE)
def _email_normalize_cached(raw: str) -> NormalizedEmail:
    # The same person's identify calls repeat one address; validating it is the
    # costliest step of an identify. A refused address is not cached.
    return email_normalize(raw)


def _owner(kind: str, value: str) -> Profile | None:
    if not value:
        return None
    identity = (
        ProfileIdentity.objects.select_related("profile")
        .filter(kind=kind, value=value)
        .first()
    )
    return identity.profile if identity else None


def _previous_owner(previous_id: str) -> Profile | None:
    # previousId is usually an anonymousId, but may be an earlier userId.
    identity = (
        ProfileIdentity.objects.select_related("profile")
        .filter(value=previous_id)
        .order_by("kind")
        .first()
    )
    return identity.profile if identity else None


def _join(
    profile: Profile | None, other: Profile | None, *, explicit: bool = False
) -> Profile | None:
    if profile is None:
        return other
    if other is None:
        return profile
    return _merge_or_keep(profile, other, explicit=explicit)


def _merge_or_keep(profile: Profile, other: Profile, *, explicit: bool) -> Profile:
    if other.pk == profile.pk:
        return profile

    reason = "alias" if explicit else "identity link"
    try:
        return profile_merge(
            first=profile, second=other, reason=reason, explicit=explicit
        )
    except MergeRefused:
        # The event stays with the profile its strongest id points to.
        logger.info(
            "Profile merge refused",
            extra={"profile": profile.pk, "other_profile": other.pk},
        )
        return profile


def _profile_create(email: NormalizedEmail | None) -> Profile:
    if email is None:
        return Profile.objects.create()
    profile, _ = profile_get_or_create_by_email(email)
    return profile


def _email_assign(*, profile: Profile, email: NormalizedEmail) -> Profile:
    # Checked before the caller got here: no other profile holds this address.
    profile.email = email.key
    profile.email_display = email.display
    profile.save(update_fields=["email", "email_display", "updated_at"])
    return profile


def _identities_attach(*, profile: Profile, event: Event) -> Profile:
    wanted = [
        (IdentityKind.USER_ID, event.user_id),
        (IdentityKind.ANONYMOUS_ID, event.anonymous_id),
    ]
    if (
        event.type == EventType.ALIAS
        and not ProfileIdentity.objects.filter(value=event.previous_id).exists()
    ):
        wanted.append((IdentityKind.ANONYMOUS_ID, event.previous_id))

    for kind, value in wanted:
        if value:
            profile = _identity_attach(profile=profile, kind=kind, value=value)
    return profile


def _identity_attach(*, profile: Profile, kind: str, value: str) -> Profile:
    # get_or_create survives a concurrent insert of the same identity; if another
    # profile won that race, the two are joined like any other link.
    identity, _ = ProfileIdentity.objects.get_or_create(
        kind=kind, value=value, defaults={"profile": profile}
    )
    return _merge_or_keep(profile, identity.profile, explicit=False)


@transaction.atomic
def profile_merge(
    *, first: Profile, second: Profile, reason: str, explicit: bool = False
) -> Profile:
    """Merge two profiles of one person into the one to keep; return it.

    The kept profile is the one with an email, else the older one. Everything the
    other owns moves over, blanks are filled, and a ProfileMerge records it.
    Raises MergeRefused when the two cannot be one person: two email addresses,
    or two userIds unless the merge is `explicit` (an alias).
    """
    locked = {
        profile.pk: profile
        for profile in Profile.objects.select_for_update()
        .filter(pk__in=[first.pk, second.pk])
        .order_by("pk")
    }
    kept, merged = _merge_order(locked[first.pk], locked[second.pk])
    _merge_check(kept, merged, explicit=explicit)

    moved = _related_move(kept=kept, merged=merged)
    _blanks_fill(kept=kept, merged=merged)
    # Earlier merges into the merged profile keep their record under the kept one.
    ProfileMerge.objects.filter(kept=merged).update(kept=kept)
    merged_id = merged.pk
    merged.delete()
    profile_traits_compute(profile=kept)

    ProfileMerge.objects.create(
        kept=kept, merged_profile_id=merged_id, reason=reason[:200], moved=moved
    )
    logger.info(
        "Profiles merged",
        extra={"kept_profile": kept.pk, "merged_profile": merged_id, **moved},
    )
    return kept


def _merge_order(a: Profile, b: Profile) -> tuple[Profile, Profile]:
    if bool(a.email) != bool(b.email):
        return (a, b) if a.email else (b, a)
    return (a, b) if (a.created_at, a.pk) <= (b.created_at, b.pk) else (b, a)


def _merge_check(kept: Profile, merged: Profile, *, explicit: bool) -> None:
    if kept.email and merged.email:
        raise MergeRefused("both profiles have an email address")
    if explicit:
        return

    with_user_id = ProfileIdentity.objects.filter(
        profile__in=[kept, merged], kind=IdentityKind.USER_ID
    )
    if with_user_id.values("profile").distinct().count() > 1:
        raise MergeRefused("both profiles have a user id")


def _related_move(*, kept: Profile, merged: Profile) -> dict[str, int]:
    moved = {
        "events": Event.objects.filter(profile=merged).update(profile=kept),
        "identities": ProfileIdentity.objects.filter(profile=merged).update(
            profile=kept
        ),
        # A queryset update bypasses ConsentRecord.save(): the records are moved
        # whole, never rewritten, so they stay append-only facts.
        "consent_records": ConsentRecord.objects.filter(profile=merged).update(
            profile=kept
        ),
    }
    moved["tags"] = _tags_move(kept=kept, merged=merged)
    moved["messages"], moved["messages_dropped"] = _messages_move(
        kept=kept, merged=merged
    )
    return moved


def _tags_move(*, kept: Profile, merged: Profile) -> int:
    names = list(merged.tags.values_list("name", flat=True))
    ProfileTag.objects.bulk_create(
        [ProfileTag(profile=kept, name=name) for name in names], ignore_conflicts=True
    )
    merged.tags.all().delete()
    return len(names)


def _messages_move(*, kept: Profile, merged: Profile) -> tuple[int, int]:
    # campaigns.Message allows one row per (campaign, profile): where both profiles
    # got the same campaign, the kept profile's row is the record that stays.
    kept_campaigns = kept.messages.values("campaign_id")
    clashing = merged.messages.filter(campaign_id__in=kept_campaigns)
    dropped = clashing.count()
    moved = merged.messages.exclude(campaign_id__in=kept_campaigns).update(profile=kept)
    return moved, dropped


def _blanks_fill(*, kept: Profile, merged: Profile) -> None:
    for name in PROFILE_FIELDS_FILLED_ON_MERGE:
        if not getattr(kept, name) and getattr(merged, name):
            setattr(kept, name, getattr(merged, name))

    kept.traits = {**merged.traits, **kept.traits}
    kept.save(update_fields=[*PROFILE_FIELDS_FILLED_ON_MERGE, "traits", "updated_at"])
