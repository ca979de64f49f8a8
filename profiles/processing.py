"""Event processing: identity resolution, profile upserts, merges, computed traits.

Each stored event is processed once: it is claimed under a row lock (skipping rows
another worker holds), attached to the profile it belongs to, and marked processed
in the same transaction. An identify never changes consent or subscription status.
"""

import logging
import zoneinfo
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import Max, QuerySet
from django.utils import timezone

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
)
from profiles.services import profile_get_or_create_by_email

logger = logging.getLogger(__name__)

EVENT_CHUNK_SIZE = 200
ORDER_COMPLETED = "Order Completed"

# Identify traits that become profile fields (or identities) rather than traits.
RESERVED_TRAITS = {
    "email",
    "firstName",
    "first_name",
    "lastName",
    "last_name",
    "name",
    "phone",
}
PROFILE_FIELDS_FILLED_ON_MERGE = (
    "first_name",
    "last_name",
    "phone",
    "city",
    "region",
    "country_code",
    "timezone",
)


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
    done = 0
    while limit is None or done < limit:
        size = (
            EVENT_CHUNK_SIZE if limit is None else min(EVENT_CHUNK_SIZE, limit - done)
        )
        processed = _chunk_process(pending, size=size)
        if processed == 0:
            break
        done += processed

    if done:
        logger.info("Events processed: %s", done, extra={"events": done})
    return done


@transaction.atomic
def _chunk_process(pending: QuerySet[Event], *, size: int) -> int:
    # skip_locked lets two workers share the backlog without taking the same rows;
    # the locks last until this transaction marks the rows processed.
    events = list(
        pending.select_for_update(skip_locked=True, of=("self",)).order_by(
            "timestamp", "id"
        )[:size]
    )
    touched: set[int] = set()
    failed: dict[int, str] = {}
    for event in events:
        try:
            with transaction.atomic():
                touched.add(_event_apply(event).pk)
        except OperationalError:
            # Transient (a deadlock, a lost connection): roll the chunk back whole
            # and let the task's retry or the next sweep do it again.
            raise
        except Exception as exc:
            logger.exception("Event processing failed", extra={"event": event.pk})
            failed[event.pk] = f"{type(exc).__name__}: {exc}"[:500]

    _events_mark(events=events, failed=failed)
    for profile in Profile.objects.filter(pk__in=touched):
        profile_traits_compute(profile=profile)
    return len(events)


def _events_mark(*, events: list[Event], failed: dict[int, str]) -> None:
    now = timezone.now()
    Event.objects.filter(pk__in=[event.pk for event in events]).update(
        processed_at=now, processing_error=""
    )
    for event_id, error in failed.items():
        Event.objects.filter(pk=event_id).update(processing_error=error)


def _event_apply(event: Event) -> Profile:
    if event.user_id or event.anonymous_id:
        profile = _profile_resolve(event)
    elif event.profile_id is not None:
        # Written by another source (a webhook) that already knew the profile.
        # Read afresh: an earlier event of this chunk may have merged it away.
        profile = Profile.objects.get(events=event)
    else:
        raise EventUnresolvable("The event has no userId, anonymousId or profile.")

    if event.type == EventType.IDENTIFY:
        _traits_apply(profile=profile, traits=event.traits, context=event.context)

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
        return email_normalize(raw)
    except InvalidEmail:
        logger.info("Identify email trait is not an address", extra={"event": event.pk})
        return None


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


def _traits_apply(
    *, profile: Profile, traits: dict[str, Any], context: dict[str, Any]
) -> None:
    """Copy identify traits onto the profile; consent fields are never touched."""
    fields = _trait_fields(traits)
    zone = context.get("timezone")
    if not profile.timezone and isinstance(zone, str) and _is_time_zone(zone):
        fields["timezone"] = zone

    # The address stays whole in traits too: street and postal code have no field.
    extra = {key: value for key, value in traits.items() if key not in RESERVED_TRAITS}

    for name, value in fields.items():
        setattr(profile, name, value)
    profile.traits = {**profile.traits, **extra}
    profile.save(update_fields=[*fields, "traits", "updated_at"])


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
        "country_code": country.upper() if len(country) == 2 else "",
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


def profile_traits_compute(*, profile: Profile) -> None:
    """Recompute lifetime value, order count and dates from the profile's events."""
    # The row lock orders concurrent recomputes, so the last one sees every event.
    locked = Profile.objects.select_for_update().filter(pk=profile.pk)
    if not list(locked.values_list("pk", flat=True)):
        return

    orders = Event.objects.filter(
        profile=profile, type=EventType.TRACK, event=ORDER_COMPLETED
    ).order_by("timestamp", "id")
    totals = _orders_total(orders.values_list("id", "timestamp", "properties"))
    last_seen = Event.objects.filter(profile=profile).aggregate(at=Max("timestamp"))

    profile.lifetime_value = totals["value"]
    profile.order_count = totals["count"]
    profile.first_order_at = totals["first_at"]
    profile.last_order_at = totals["last_at"]
    profile.last_seen_at = _latest(profile.last_seen_at, last_seen["at"])
    profile.save(
        update_fields=[
            "lifetime_value",
            "order_count",
            "first_order_at",
            "last_order_at",
            "last_seen_at",
            "updated_at",
        ]
    )


def _orders_total(
    rows: Iterable[tuple[int, datetime, dict[str, Any]]],
) -> dict[str, Any]:
    currency = settings.BESPOKE_CURRENCY.upper()
    seen_orders: set[str] = set()
    totals: dict[str, Any] = {
        "value": Decimal("0"),
        "count": 0,
        "first_at": None,
        "last_at": None,
    }
    skipped = 0
    for event_id, at, properties in rows:
        # The same order may arrive from the site and from the shop's webhook.
        order_id = str(properties.get("order_id") or f"event:{event_id}")
        if order_id in seen_orders:
            continue
        seen_orders.add(order_id)

        totals["count"] += 1
        totals["first_at"] = totals["first_at"] or at
        totals["last_at"] = at
        amount, counted = _order_amount(properties, currency=currency)
        totals["value"] += amount
        skipped += not counted

    if skipped:
        logger.warning(
            "Orders left out of lifetime value: other currency or no amount",
            extra={"orders": skipped, "currency": currency},
        )
    return totals


def _order_amount(properties: dict[str, Any], *, currency: str) -> tuple[Decimal, bool]:
    order_currency = properties.get("currency")
    if order_currency and str(order_currency).upper() != currency:
        return Decimal("0"), False

    raw = properties.get("total")
    if raw is None:
        raw = properties.get("revenue")
    amount = number_coerce(raw)
    if amount is None:
        return Decimal("0"), False
    return amount, True


def number_coerce(value: Any) -> Decimal | None:
    """Return a property as a Decimal ("29.50" and 29.5 alike), or None if not one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None

    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)
