"""The careful path of event processing: one event at a time, with merges.

An event that may create a profile by its address, link ids to a profile that
another person's id already holds, or join two profiles is resolved here against
the database as it stands, one query at a time. A merge keeps the profile with an
email address (else the older one), moves everything the other owned and records
a ProfileMerge.
"""

import functools
import logging
from typing import Any

from django.db import connection, transaction
from django.db.models import Value
from django.db.models.functions import Coalesce

from profiles.emails import (
    InvalidEmail,
    NormalizedEmail,
    email_normalize,
    traits_flagged,
)
from profiles.models import (
    PERSON_FIELDS,
    ConsentRecord,
    Event,
    EventType,
    IdentityKind,
    Profile,
    ProfileIdentity,
    ProfileMerge,
    ProfileTag,
    RejectedEvent,
    ShopCheckout,
    ShopOrder,
    SubscriptionStatus,
)
from profiles.processing_identify import (
    identify_change_read,
    identify_change_set,
    identify_rejections,
)
from profiles.processing_traits import profile_traits_compute
from profiles.services import (
    profile_by_email_key,
    profile_get_or_create_by_email,
    profiles_suppression_mark,
)
from profiles.traits import TraitRule
from profiles.value_times import FLOOR, said_at, value_time

logger = logging.getLogger(__name__)

EMAIL_CACHE_SIZE = 20_000
PROFILE_FIELDS_FILLED_ON_MERGE = PERSON_FIELDS


class EventUnresolvable(Exception):
    """An event that names no one: no userId, no anonymousId and no profile."""


class MergeRefused(Exception):
    """Two profiles look linked but cannot be one person (two emails, two user ids)."""


MERGE_REFUSED_EMAILS = "both profiles have an email address"
MERGE_REFUSED_USER_IDS = "both profiles have a user id"
# What a marketer can do about a refused merge, on the sources page.
MERGE_ADVICE = {
    MERGE_REFUSED_EMAILS: "if they are one person, remove the wrong address from one "
    "profile in the admin, then merge them on the profile page.",
    MERGE_REFUSED_USER_IDS: "if they are one person, merge them on the profile page.",
}


def event_apply(
    event: Event, *, schema: dict[str, TraitRule], rejections: list[RejectedEvent]
) -> Profile:
    refused: list[str] = []
    if event.user_id or event.anonymous_id:
        profile = _profile_resolve(event, refused=refused)
        rejections += [
            identity_notice(event, "merge_refused", message) for message in refused
        ]
    elif event.profile_id is not None:
        # Written by another source (a webhook) that already knew the profile.
        # Read afresh: an earlier event of this chunk may have merged it away.
        profile = Profile.objects.get(events=event.pk)
    else:
        raise EventUnresolvable("The event has no userId, anonymousId or profile.")

    if event.type == EventType.IDENTIFY:
        change = identify_change_read(
            profile=profile,
            traits=event.traits,
            context=event.context,
            schema=schema,
            said=said_at(event.timestamp, event.received_at),
        )
        fields = identify_change_set(profile=profile, change=change)
        profile.save(update_fields=[*fields, "updated_at"])
        rejections += identify_rejections(event=event, change=change)
        rejections += email_notices(event, profile, identify_email(event))

    Event.objects.filter(pk=event.pk).update(profile=profile)
    return profile


def identity_notice(event: Event, code: str, message: str) -> RejectedEvent:
    """Return the row that reports what an event asked for and did not get.

    The event itself is kept and applied; the row makes the refusal visible on the
    sources page instead of leaving it to a log line.
    """
    return RejectedEvent(
        source=event.source,
        message_id=event.message_id,
        code=code,
        message=message[:500],
        payload={"userId": event.user_id, "anonymousId": event.anonymous_id},
        received_at=event.received_at,
    )


def email_notices(
    event: Event, profile: Profile, email: NormalizedEmail | None
) -> list[RejectedEvent]:
    """Report an identify's address that its profile did not take, and why."""
    if email is None or (profile.email or "").lower() == email.key:
        return []
    if profile.email:
        message = (
            f"The identify names {email.display}, but this person's profile has "
            f"{profile.email}: an identify does not change a known address, so "
            f"{email.display} was not stored."
        )
        return [identity_notice(event, "email_not_changed", message)]
    message = (
        f"{email.display} belongs to another person's profile (another userId), so "
        "it was not given to this one."
    )
    return [identity_notice(event, "email_taken", message)]


def _profile_resolve(event: Event, *, refused: list[str]) -> Profile:
    email = identify_email(event)
    user_id = event.user_id
    profile = _owner(IdentityKind.USER_ID, user_id)

    # By lower(email), as the unique index: email__iexact compares upper(), where
    # 'ſ' is 's' and 'ı' is 'i', and would join two mailboxes into one person.
    email_owner = profile_by_email_key(email.key) if email else None
    profile = _join(profile, _claimable(email_owner, user_id=user_id), refused=refused)
    anonymous_owner = _owner(IdentityKind.ANONYMOUS_ID, event.anonymous_id)
    device_shared = None
    if _someone_else(anonymous_owner, profile=profile, email=email):
        # The browser's earlier visitor had another address: the one signing in now
        # is another person, and the anonymousId stays with the first.
        device_shared, anonymous_owner = anonymous_owner, None
    profile = _join(
        profile, _claimable(anonymous_owner, user_id=user_id), refused=refused
    )
    if event.type == EventType.ALIAS:
        # An alias says outright that the two ids are one person.
        profile = _join(
            profile,
            _previous_owner(event.previous_id),
            explicit=True,
            refused=refused,
        )

    if profile is None:
        profile = _profile_create(email if email_owner is None else None)
    elif email is not None and not profile.email and email_owner is None:
        profile = _email_assign(profile=profile, email=email)

    if device_shared is not None and event.type == EventType.IDENTIFY:
        # Said once per identify, not for every event the device sends after.
        refused.append(_refused_message(profile, device_shared, MERGE_REFUSED_EMAILS))
    return _identities_attach(
        profile=profile, event=event, refused=refused, device_shared=device_shared
    )


def _someone_else(
    owner: Profile | None, *, profile: Profile | None, email: NormalizedEmail | None
) -> bool:
    """Whether an anonymousId's profile has an address other than this person's."""
    if owner is None or not owner.email:
        return False
    if profile is not None and profile.pk == owner.pk:
        # The person's own profile: a new address of theirs (email_not_changed).
        return False
    known = owner.email.lower()
    if email is not None:
        return known != email.key
    return bool(profile and profile.email and profile.email.lower() != known)


def _claimable(profile: Profile | None, *, user_id: str) -> Profile | None:
    # A profile that already belongs to another userId is someone else who used
    # the same device or address; the event must not join it.
    if profile is None or not user_id:
        return profile

    other_user = profile.identities.filter(kind=IdentityKind.USER_ID).exclude(
        value=user_id
    )
    return None if other_user.exists() else profile


def identify_email(event: Event) -> NormalizedEmail | None:
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
    profile: Profile | None,
    other: Profile | None,
    *,
    explicit: bool = False,
    refused: list[str] | None = None,
) -> Profile | None:
    if profile is None:
        return other
    if other is None:
        return profile
    return _merge_or_keep(profile, other, explicit=explicit, refused=refused)


def _merge_or_keep(
    profile: Profile,
    other: Profile,
    *,
    explicit: bool,
    refused: list[str] | None = None,
) -> Profile:
    if other.pk == profile.pk:
        return profile

    reason = "alias" if explicit else "identity link"
    try:
        return profile_merge(
            first=profile,
            second=other,
            reason=reason,
            explicit=explicit,
            traits_now=False,
        )
    except MergeRefused as exc:
        # The event stays with the profile its strongest id points to.
        logger.info(
            "Profile merge refused",
            extra={"profile": profile.pk, "other_profile": other.pk},
        )
        message = _refused_message(profile, other, str(exc))
        if refused is not None and message not in refused:
            refused.append(message)
        return profile


def _refused_message(profile: Profile, other: Profile, reason: str) -> str:
    return (
        f"Profiles {profile.pk} and {other.pk} were not merged: {reason}. "
        f"They stay two people; {MERGE_ADVICE[reason]}"
    )


def _profile_create(email: NormalizedEmail | None) -> Profile:
    if email is None:
        return Profile.objects.create()
    profile, _ = profile_get_or_create_by_email(email)
    return profile


def _email_assign(*, profile: Profile, email: NormalizedEmail) -> Profile:
    # Checked before the caller got here: no other profile holds this address.
    profile.email = email.key
    profile.email_display = email.display
    fields = ["email", "email_display", "updated_at"]
    flagged = traits_flagged(profile.traits, email)
    if flagged is not profile.traits:
        profile.traits = flagged
        fields.append("traits")
    profile.save(update_fields=fields)
    profiles_suppression_mark({profile.pk: email.key})
    profile.refresh_from_db(fields=["suppressed_at"])
    return profile


def _identities_attach(
    *,
    profile: Profile,
    event: Event,
    refused: list[str],
    device_shared: Profile | None = None,
) -> Profile:
    wanted = [(IdentityKind.USER_ID, event.user_id)]
    if device_shared is None:
        wanted.append((IdentityKind.ANONYMOUS_ID, event.anonymous_id))
    if (
        event.type == EventType.ALIAS
        and not ProfileIdentity.objects.filter(value=event.previous_id).exists()
    ):
        # An id Bespoke has not seen may be an anonymousId or an earlier userId
        # (the spec allows both): later events under either name find this person.
        wanted.append((IdentityKind.ANONYMOUS_ID, event.previous_id))
        wanted.append((IdentityKind.USER_ID, event.previous_id))

    for kind, value in wanted:
        if value:
            profile = _identity_attach(
                profile=profile, kind=kind, value=value, refused=refused
            )
    return profile


def _identity_attach(
    *, profile: Profile, kind: str, value: str, refused: list[str]
) -> Profile:
    # get_or_create survives a concurrent insert of the same identity; if another
    # profile won that race, the two are joined like any other link.
    identity, _ = ProfileIdentity.objects.get_or_create(
        kind=kind, value=value, defaults={"profile": profile}
    )
    return _merge_or_keep(profile, identity.profile, explicit=False, refused=refused)


@transaction.atomic
def profile_merge(
    *,
    first: Profile,
    second: Profile,
    reason: str,
    explicit: bool = False,
    traits_now: bool = True,
) -> Profile:
    """Merge two profiles of one person into the one to keep; return it.

    The kept profile is the one with an email, else the older one. Everything the
    other owns moves over, blanks are filled, and a ProfileMerge records it.
    Raises MergeRefused when the two cannot be one person: two email addresses,
    or two userIds unless the merge is `explicit` (an alias). The kept profile's
    computed traits are recomputed at once, unless `traits_now` is False (event
    processing, which recomputes them in full when its chunk finishes).
    """
    locked = {
        profile.pk: profile
        for profile in Profile.objects.select_for_update()
        .filter(pk__in=[first.pk, second.pk])
        .order_by("pk")
    }
    kept, merged = merge_order(locked[first.pk], locked[second.pk])
    merge_check(kept, merged, explicit=explicit)

    taken = merge_values_taken(kept=kept, merged=merged)
    moved = _related_move(kept=kept, merged=merged)
    _blanks_fill(kept=kept, merged=merged, taken=taken)
    # Earlier merges into the merged profile keep their record under the kept one.
    ProfileMerge.objects.filter(kept=merged).update(kept=kept)
    merged_id = merged.pk
    _merged_delete(merged)
    if traits_now:
        profile_traits_compute(profile=kept)
    else:
        # The kept profile now holds events the chunk processing this merge may
        # also count as new to it: its refresh reads all of its events instead.
        Profile.objects.filter(pk=kept.pk).update(
            engagement_at=None, category_counts=None
        )

    ProfileMerge.objects.create(
        kept=kept, merged_profile_id=merged_id, reason=reason[:200], moved=moved
    )
    logger.info(
        "Profiles merged",
        extra={"kept_profile": kept.pk, "merged_profile": merged_id, **moved},
    )
    return kept


def merge_order(a: Profile, b: Profile) -> tuple[Profile, Profile]:
    """Return (kept, merged): the one with an email is kept, else the older one."""
    if bool(a.email) != bool(b.email):
        return (a, b) if a.email else (b, a)
    return (a, b) if (a.created_at, a.pk) <= (b.created_at, b.pk) else (b, a)


def merge_check(kept: Profile, merged: Profile, *, explicit: bool) -> None:
    """Raise MergeRefused when the two cannot be one person."""
    if kept.email and merged.email:
        raise MergeRefused(MERGE_REFUSED_EMAILS)
    if explicit:
        return

    with_user_id = ProfileIdentity.objects.filter(
        profile__in=[kept, merged], kind=IdentityKind.USER_ID
    )
    if with_user_id.values("profile").distinct().count() > 1:
        raise MergeRefused(MERGE_REFUSED_USER_IDS)


def _related_move(*, kept: Profile, merged: Profile) -> dict[str, int]:
    moved = {
        "events": Event.objects.filter(profile=merged).update(profile=kept),
        "identities": ProfileIdentity.objects.filter(profile=merged).update(
            profile=kept
        ),
        # A queryset update bypasses ConsentRecord.save(): the records are moved
        # whole, never rewritten, so they stay append-only facts.
        "consent_records": ConsentRecord.objects.filter(profile=merged).update(
            profile=kept, merged_from=Coalesce("merged_from", Value(merged.pk))
        ),
    }
    # An order or checkout follows its buyer; unmoved, the delete below would
    # leave it with no profile.
    moved["shop_orders"] = ShopOrder.objects.filter(profile=merged).update(profile=kept)
    moved["shop_checkouts"] = ShopCheckout.objects.filter(profile=merged).update(
        profile=kept
    )
    moved["tags"] = _tags_move(kept=kept, merged=merged)
    moved["messages"], moved["messages_dropped"] = _messages_move(
        kept=kept, merged=merged
    )
    moved["segment_stays"] = _stays_move(kept=kept, merged=merged)
    return moved


# What still points at a merged profile once _related_move has moved the rest: it
# goes with the profile (an open stay or a message the kept profile has its own
# of). Every other relation to Profile is moved (a test holds this list to
# Profile's relations, so a new one is not forgotten).
MERGED_DROPS = ("segment_memberships", "messages")


def _merged_delete(merged: Profile) -> None:
    # One statement per leftover relation and one for the row, instead of Django's
    # collector looking through every relation again (a dozen queries a merge).
    for name in MERGED_DROPS:
        getattr(merged, name).all().delete()
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {Profile._meta.db_table} WHERE id = %s",  # noqa: S608
            [merged.pk],
        )


def _tags_move(*, kept: Profile, merged: Profile) -> int:
    names = list(merged.tags.values_list("name", flat=True))
    ProfileTag.objects.bulk_create(
        [ProfileTag(profile=kept, name=name) for name in names], ignore_conflicts=True
    )
    merged.tags.all().delete()
    return len(names)


def _stays_move(*, kept: Profile, merged: Profile) -> int:
    # A stay in a segment is the person's: moved, a merge starts no new stay (an
    # "entered the segment" flow would start again for someone already in it) and
    # loses no history. An open stay where the kept profile is in the segment
    # already goes with the merged row (one open stay a segment).
    kept_in = kept.segment_memberships.filter(left_at__isnull=True).values("segment_id")
    return merged.segment_memberships.exclude(
        left_at__isnull=True, segment_id__in=kept_in
    ).update(profile=kept)


def _messages_move(*, kept: Profile, merged: Profile) -> tuple[int, int]:
    # campaigns.Message allows one row per (campaign, profile): where both profiles
    # got the same campaign, the kept profile's row is the record that stays.
    kept_campaigns = kept.messages.values("campaign_id")
    clashing = merged.messages.filter(campaign_id__in=kept_campaigns)
    dropped = clashing.count()
    moved = merged.messages.exclude(campaign_id__in=kept_campaigns).update(profile=kept)
    return moved, dropped


def merge_values_taken(*, kept: Profile, merged: Profile) -> set[str]:
    """Return the fields and traits the kept profile takes from the merged one.

    Each is weighed by when it was said (profiles/value_times.py): the newest word
    wins, whichever profile the merge keeps, an empty field included (a move to a
    city with no state). A value no source dated yields to one that was, and an
    empty field is filled unless it was said empty later.
    """
    kept_times, merged_times = kept.value_times, merged.value_times

    def newer(name: str) -> bool:
        theirs = value_time(merged_times, name)
        return bool(theirs) and theirs > value_time(kept_times, name)

    taken = set()
    for name in PROFILE_FIELDS_FILLED_ON_MERGE:
        mine, theirs = getattr(kept, name), getattr(merged, name)
        if theirs == mine:
            continue
        # A field never given is empty with no time: only one said empty has one.
        blank_filled = bool(theirs) and not mine and name not in kept_times
        if newer(name) or blank_filled:
            taken.add(name)
    _place_whole(kept=kept, merged=merged, taken=taken)
    for key, value in merged.traits.items():
        if key not in kept.traits or (kept.traits[key] != value and newer(key)):
            taken.add(key)
    return taken


PLACE_FIELDS = ("city", "region", "country_code")


def _place_whole(*, kept: Profile, merged: Profile, taken: set[str]) -> None:
    # A place is one whole, as an identify's address is: the merged profile's city
    # comes with its region and country (Besançon is not in Québec, Canada), and the
    # kept profile's city keeps its own, filled from the other only for one city.
    if "city" in taken:
        taken.update(
            name
            for name in PLACE_FIELDS
            if getattr(merged, name) != getattr(kept, name)
        )
    elif kept.city and kept.city.casefold() != merged.city.casefold():
        taken.difference_update(PLACE_FIELDS)


def _blanks_fill(*, kept: Profile, merged: Profile, taken: set[str]) -> None:
    times = _times_merged(kept=kept, merged=merged, taken=taken)
    for name in PROFILE_FIELDS_FILLED_ON_MERGE:
        if name in taken:
            setattr(kept, name, getattr(merged, name))
    kept.traits = {
        **kept.traits,
        **{key: value for key, value in merged.traits.items() if key in taken},
    }
    kept.value_times = times
    changed = [*PROFILE_FIELDS_FILLED_ON_MERGE, "traits", "value_times"]
    changed.append("updated_at")
    if kept.suppressed_at is None and merged.suppressed_at is not None:
        # Suppressed by hand, or under an address the merged profile had: the
        # person is not to be emailed, whichever profile is kept.
        kept.suppressed_at = merged.suppressed_at
        changed.append("suppressed_at")
    if merge_withdrawal_carried(kept=kept, merged=merged):
        kept.subscription_status = merged.subscription_status
        kept.subscription_changed_at = merged.subscription_changed_at
        changed += ["subscription_status", "subscription_changed_at"]
    kept.save(update_fields=changed)


def _times_merged(*, kept: Profile, merged: Profile, taken: set[str]) -> dict[str, str]:
    """Return the kept profile's value times once it holds what it takes."""
    # Each value keeps the time it was said, on whichever profile it was; one taken
    # with no time of its own takes the merged profile's floor, as its own time.
    # Done before the values move: equal values are compared as they were.
    kept_times, merged_times = kept.value_times, merged.value_times
    times = {n: t for n, t in kept_times.items() if n not in taken}
    for name in taken:
        said = value_time(merged_times, name)
        if said:
            times[name] = said
    for name, said in merged_times.items():
        same = name != FLOOR and _value(kept, name) == _value(merged, name)
        if same and said > value_time(times, name):
            times[name] = said
    return times


def _value(profile: Profile, name: str) -> Any:
    # A field's or a custom trait's value: no custom trait is named like a field.
    if name in PROFILE_FIELDS_FILLED_ON_MERGE:
        return getattr(profile, name)
    return profile.traits.get(name, _ABSENT)


_ABSENT = object()


def merge_withdrawal_carried(*, kept: Profile, merged: Profile) -> bool:
    """Tell whether the kept profile takes the merged one's unsubscribe.

    So when the person unsubscribed on the profile merged away, later than the kept
    profile's status was set, as its newest consent record then says. Neither a
    subscription nor a bounce is carried over: both are about an address, and the
    kept profile's is another. The merge page says it before the merge.
    """
    if merged.subscription_status != SubscriptionStatus.UNSUBSCRIBED:
        return False
    since = kept.subscription_changed_at
    left = merged.subscription_changed_at
    return since is None or (left is not None and left > since)
