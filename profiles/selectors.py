"""Reads on profiles for other apps: plain values, never querysets to write through."""

from typing import Any

from django.db.models import Count, Min, Q, QuerySet

from profiles.emails import InvalidEmail, email_normalize
from profiles.models import (
    Event,
    IdentityKind,
    Profile,
    ProfileIdentity,
    ProfileMerge,
    SubscriptionStatus,
    Suppression,
)
from profiles.services import profile_by_email_key, suppression_hash


def profile_is_suppressed(email: str) -> bool:
    """Return whether the address is on the suppression list, however it is written.

    The list holds each address's key (email_normalize's): a profile's address
    stored with capitals, by hand or by an older import, is still found.
    """
    return _listed(email).exists()


def address_suppression(email: str) -> Suppression | None:
    """Return the suppression list's entry for the address, however it is written:
    why it is there, from where and since when."""
    return _listed(email).first()


def _listed(email: str) -> QuerySet[Suppression]:
    try:
        key = email_normalize(email).key
    except InvalidEmail:
        key = email.strip().lower()
    return Suppression.objects.filter(email_hash=suppression_hash(key))


def profile_suppressed(profile: Profile) -> bool:
    """Return whether Bespoke must never email this profile.

    Suppressed on the profile (by hand, or under an address it had before) or its
    address on the suppression list: segment rules and the builder's preview read
    the first, which every path that sets an address keeps in step with the list.
    """
    if profile.suppressed_at is not None:
        return True
    return bool(profile.email) and profile_is_suppressed(profile.email)


def profile_status_counts() -> dict[str, int]:
    """Return how many profiles have each subscription status, plus the totals."""
    counts = {status.value: 0 for status in SubscriptionStatus}
    rows = (
        Profile.objects.values("subscription_status").annotate(n=Count("id")).order_by()
    )
    for row in rows:
        counts[row["subscription_status"]] = row["n"]

    counts["total"] = sum(counts.values())
    counts["anonymous"] = Profile.objects.filter(email=None).count()
    counts["with_email"] = counts["total"] - counts["anonymous"]
    # Never emailed, whatever their status says (sending reads the list too).
    counts["suppressed"] = Profile.objects.filter(suppressed_at__isnull=False).count()
    return counts


# A profile id is a bigint: more digits than this cannot be one.
PROFILE_ID_MAX_DIGITS = 18


def profile_events_waiting(profile: Profile) -> dict[str, Any]:
    """Return how many of a person's events wait to be processed, and the oldest's arrival.

    Its own, and those sent by one of its userIds or anonymousIds, which are tied
    to it only when processed: until then its figures, timeline and segments do not
    count them. Read through the index of unprocessed events, which holds few.
    """
    ids = dict.fromkeys((IdentityKind.USER_ID, IdentityKind.ANONYMOUS_ID), ())
    for kind, value in profile.identities.filter(kind__in=ids).values_list(
        "kind", "value"
    ):
        ids[kind] += (value,)
    named = Q(profile=profile)
    if ids[IdentityKind.USER_ID]:
        named |= Q(user_id__in=ids[IdentityKind.USER_ID])
    if ids[IdentityKind.ANONYMOUS_ID]:
        named |= Q(anonymous_id__in=ids[IdentityKind.ANONYMOUS_ID])
    waiting = Event.objects.filter(named, processed_at__isnull=True)
    return waiting.aggregate(count=Count("id"), oldest=Min("received_at"))


def profile_merged_into(pk: int) -> ProfileMerge | None:
    """Return the latest merge that took the profile `pk` away, if one did."""
    merges = ProfileMerge.objects.filter(merged_profile_id=pk)
    return merges.order_by("-pk").first()


def profile_find(reference: str) -> Profile | None:
    """Return the profile a marketer names by id, email address, userId or anonymousId.

    "#42" is only a profile id. Digits are a profile id first, then a userId; an
    address is an email first. Whatever is not found so is looked up as a userId,
    then as an anonymousId, as a site sends them (case kept).
    """
    reference = reference.strip()
    number = reference.removeprefix("#")
    if reference.startswith("#"):
        return _profile_by_id(number)

    found = _profile_by_id(number)
    if found is None and "@" in reference:
        found = _profile_by_email(reference)
    if found is None:
        found = _profile_by_identity(reference)
    return found


def profile_by_user_id(value: str) -> Profile | None:
    """Return the profile holding `value` as a userId, as a site sends it."""
    return _profile_by_kind(IdentityKind.USER_ID, value)


def _profile_by_id(number: str) -> Profile | None:
    # ASCII only: '١٢' is digits to Python, not a profile id.
    if not (number.isascii() and number.isdigit()):
        return None
    if len(number) > PROFILE_ID_MAX_DIGITS:
        return None
    return Profile.objects.filter(pk=int(number)).first()


def _profile_by_email(written: str) -> Profile | None:
    try:
        email = email_normalize(written)
    except InvalidEmail:
        return None
    return profile_by_email_key(email.key)


def _profile_by_identity(value: str) -> Profile | None:
    if not value:
        return None
    for kind in (IdentityKind.USER_ID, IdentityKind.ANONYMOUS_ID):
        found = _profile_by_kind(kind, value)
        if found is not None:
            return found
    return None


def _profile_by_kind(kind: str, value: str) -> Profile | None:
    identity = ProfileIdentity.objects.filter(kind=kind, value=value)
    return Profile.objects.filter(pk__in=identity.values("profile_id")).first()
