"""Writes on profiles: consent, suppressions, tags and profile upserts."""

import hashlib
import hmac
import logging
from datetime import datetime, timedelta
from typing import Any, Protocol

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.db.models.functions import Lower
from django.db.models.lookups import Exact
from django.utils import timezone

from profiles.emails import SMTPUTF8_TRAIT, NormalizedEmail, traits_flagged
from profiles.models import (
    ConsentRecord,
    Event,
    EventMessage,
    Profile,
    ProfileTag,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from profiles.names import TAG_MAX_CHARS, tags_distinct
from profiles.processing_writes import among
from profiles.signals import profiles_changed

logger = logging.getLogger(__name__)

# Statuses that only the person (or a bounce) can lift, never a re-imported list.
WITHDRAWN_STATUSES = {SubscriptionStatus.UNSUBSCRIBED, SubscriptionStatus.CLEANED}
# How far ahead of Bespoke's clock a source's clock may run before a time it gives is
# taken for one in the future: a real opt-in a few seconds "ahead" still counts.
CLOCK_SKEW_ALLOWED = timedelta(minutes=5)
# The evidence key keeping the time a source gave a consent dated after it arrived
# (recorded as of its arrival).
OCCURRED_AT_CLAIMED = "occurred_at_claimed"


class StatusHolder(Protocol):
    """What the consent rules read and move: a Profile, or a plain row of one."""

    pk: int | None
    email: str | None
    subscription_status: str
    subscription_changed_at: datetime | None


def suppression_hash(email_key: str) -> str:
    """Return the keyed hash under which an address is kept on the suppression list."""
    key = settings.BESPOKE_SUPPRESSION_KEY.encode()
    return hmac.new(key, email_key.encode(), hashlib.sha256).hexdigest()


SUPPRESSION_SOURCE_MAX = Suppression._meta.get_field("source").max_length


def suppression_add(*, email_key: str, reason: SuppressionReason, source: str) -> bool:
    """Put an address on the suppression list; return False if it was there already.

    A source longer than the list keeps (a long username, "by ...") is cut: the
    address goes on the list whatever its source's length.
    """
    _, created = Suppression.objects.get_or_create(
        email_hash=suppression_hash(email_key),
        defaults={"reason": reason, "source": source[:SUPPRESSION_SOURCE_MAX]},
    )
    suppressed = Profile.objects.filter(
        Exact(Lower("email"), email_key), suppressed_at=None
    )
    for profile_id in suppressed.values_list("pk", flat=True):
        _announce(profile_id, "suppressed")
    suppressed.update(suppressed_at=timezone.now())
    return created


def profiles_suppression_mark(addresses: dict[int, str]) -> None:
    """Mark suppressed the profiles (pk: address key) whose address is listed.

    For the paths that give a profile an address (an identify): segment rules and
    the builder's preview read the profile's mark, sending reads the list too.
    """
    hashes = {suppression_hash(key.lower()): pk for pk, key in addresses.items()}
    if not hashes:
        return
    # One array parameter: a chunk of events may give thousands an address.
    listed = Suppression.objects.filter(email_hash__in=among(hashes, of="text"))
    marked = [
        hashes[email_hash] for email_hash in listed.values_list("email_hash", flat=True)
    ]
    if not marked:
        return
    Profile.objects.filter(pk__in=marked, suppressed_at=None).update(
        suppressed_at=timezone.now()
    )
    for profile_id in marked:
        _announce(profile_id, "suppressed")


def _announce(profile_id: int, word: str) -> None:
    """After commit, tell listeners (segments) what changed about one profile."""
    transaction.on_commit(
        lambda: profiles_changed.send(
            sender=Profile, profile_ids=[profile_id], changed={word}
        )
    )


@transaction.atomic
def consent_record(
    *,
    profile: Profile,
    status: SubscriptionStatus,
    source: str,
    occurred_at: datetime,
    dated: bool = True,
    from_import: bool = False,
    ip_address: str | None = None,
    wording: str = "",
    evidence: dict | None = None,
) -> ConsentRecord | None:
    """Append a consent record and move the profile's status if this fact is the newest.

    A fact its source does not date (`dated=False`, occurred_at is then the time
    Bespoke took it in) is recorded only when it moves the status, and None is
    returned for one that does not. The rules of the move are consent_status_move's.
    The profile's status is read again under a row lock first: an import or a
    webhook may have moved it since `profile` was read.
    """
    _status_reread(profile)
    current = profile.subscription_status
    now = timezone.now()
    from_future = occurred_at > now + CLOCK_SKEW_ALLOWED
    if (
        from_future
        and status == SubscriptionStatus.SUBSCRIBED
        and current in WITHDRAWN_STATUSES
    ):
        # Refused below; recorded, it would head the history above the unsubscribe
        # it does not undo.
        return None
    if occurred_at > now:
        # Kept as the source said it, and recorded as of now (see consent_status_move).
        evidence = {**(evidence or {}), OCCURRED_AT_CLAIMED: occurred_at.isoformat()}
        occurred_at = now
    moved = consent_status_move(
        profile,
        from_future=from_future,
        status=status,
        occurred_at=occurred_at,
        dated=dated,
        from_import=from_import,
    )
    if not dated and not moved:
        return None

    record = ConsentRecord.objects.create(
        profile=profile,
        status=status,
        source=source,
        occurred_at=occurred_at,
        ip_address=ip_address or None,
        wording=wording,
        evidence=evidence or {},
        address=profile.email or "",
    )
    if moved:
        profile.save(update_fields=["subscription_status", "subscription_changed_at"])
        if status != current:
            _announce(profile.pk, "consent")

    return record


def _status_reread(profile: Profile) -> None:
    # Under a lock held until the transaction ends: a status moved since `profile`
    # was read is what the new fact is weighed against, and nothing moves it now.
    stored = (
        Profile.objects.select_for_update()
        .filter(pk=profile.pk)
        .values("subscription_status", "subscription_changed_at")
        .first()
    )
    if stored is not None:
        profile.subscription_status = stored["subscription_status"]
        profile.subscription_changed_at = stored["subscription_changed_at"]


def consent_status_move(
    profile: StatusHolder,
    *,
    status: SubscriptionStatus,
    occurred_at: datetime,
    dated: bool = True,
    from_import: bool = False,
    from_future: bool = False,
) -> bool:
    """Move the status (not saved) to a consent fact if it is the newest; say if it did.

    Only the person can resubscribe after an unsubscribe or a cleaned address: a
    subscription from an imported list, or one its source does not date, never lifts
    a withdrawal, nor does "never subscribed", from any source. An undated
    subscription leaves the status undated, so that any dated fact, such as an
    unsubscribe that arrives later but happened earlier, outranks it.
    An undated fact never re-dates the status it repeats; an undated withdrawal is
    dated by its arrival and applies like any other. A withdrawal older than the
    status still applies when nothing the person said first-hand came after it (only
    a list's or a ticked box's subscription), as it would have arrived first.
    """
    if not dated and status == profile.subscription_status:
        return False
    if from_import and status == SubscriptionStatus.NOT_SUBSCRIBED:
        # A list's "never subscribed" undoes no subscription and lifts no
        # withdrawal; nor does it date the status, or an older subscription that
        # arrives after it would be refused, which arriving first it would not.
        return False

    # Nothing has happened later than now: a fact dated in the future (a wrong
    # clock, a date typed wrong) counts as of now, or it would outrank every real
    # withdrawal until that date, the person's own unsubscribe link included.
    # `from_future`: the source dated it after now (a caller may have clamped it).
    from_future = from_future or occurred_at > timezone.now() + CLOCK_SKEW_ALLOWED
    occurred_at = min(occurred_at, timezone.now())
    is_newer = (
        profile.subscription_changed_at is None
        or occurred_at >= profile.subscription_changed_at
    )
    withdrawn = profile.subscription_status in WITHDRAWN_STATUSES
    if not is_newer and status in WITHDRAWN_STATUSES and not withdrawn:
        # A withdrawal that arrives after a list's or a checkbox's subscription
        # dated later would have stopped that subscription, had it come first: the
        # order facts arrive in must not decide. Only the person's own later word
        # outranks it.
        is_newer = not firsthand_consent_since(profile, occurred_at)
    lifts_withdrawal = withdrawn and (
        # "Never subscribed" is not true of someone who left, and would let the
        # next list's subscription through.
        status == SubscriptionStatus.NOT_SUBSCRIBED
        # A subscription dated after now is no opt-in anyone saw the person give.
        or (
            status == SubscriptionStatus.SUBSCRIBED
            and (from_import or not dated or from_future)
        )
    )
    if not is_newer or lifts_withdrawal:
        return False

    undated_subscribe = not dated and status == SubscriptionStatus.SUBSCRIBED
    profile.subscription_status = status
    profile.subscription_changed_at = None if undated_subscribe else occurred_at
    return True


# Facts that never lift a withdrawal, so none outranks an older one arriving late:
# a list's (import:...), a shop's "accepts marketing" box ticked while buying, one
# its source did not date (timed at its arrival), one dated after it arrived.
# (has_key first: without the key, the comparison is NULL, and NOT NULL excludes.)
SECONDHAND_CONSENT = (
    Q(source__startswith="import:")
    | Q(
        evidence__has_key="buyer_accepts_marketing",
        evidence__buyer_accepts_marketing=True,
    )
    | Q(evidence__has_key="occurred_at_is_import_time")
    | Q(evidence__has_key=OCCURRED_AT_CLAIMED)
)


def firsthand_consent_since(profile: StatusHolder, since: datetime) -> bool:
    """Whether the profile has a first-hand consent fact dated after `since`.

    About its own address: a fact a merge brought from another profile's address
    is that address's (the kept profile's status never took it either). A fact of
    this profile's own from before it changed address is still the person's.
    """
    if profile.pk is None:
        return False
    later = ConsentRecord.objects.filter(profile_id=profile.pk, occurred_at__gt=since)
    own = (
        Q(merged_from__isnull=True)
        | Q(address="")
        | Q(address__iexact=profile.email or "")
    )
    return later.exclude(SECONDHAND_CONSENT).filter(own).exists()


def profile_get_or_create_by_email(email: NormalizedEmail) -> tuple[Profile, bool]:
    """Return the profile that owns this mailbox, creating it if there is none."""
    profile, created = profile_by_email_key(email.key), False
    if profile is None:
        try:
            with transaction.atomic():
                profile = Profile.objects.create(
                    email=email.key, email_display=email.display
                )
            created = True
        except IntegrityError:
            # Another request created it between our look-up and our insert.
            profile = profile_by_email_key(email.key)
    if (
        created
        and Suppression.objects.filter(email_hash=suppression_hash(email.key)).exists()
    ):
        # The address was suppressed (a bounce, a complaint, an erasure) before this
        # profile existed: the new profile carries the flag from the start.
        profile.suppressed_at = timezone.now()
        profile.save(update_fields=["suppressed_at"])
    flagged = traits_flagged(profile.traits, email)
    if flagged is not profile.traits:
        profile.traits = flagged
        profile.save(update_fields=["traits"])
    return profile, created


def profile_email_flags_set(profile: Profile, email: NormalizedEmail | None) -> None:
    """Set what follows from a profile's address: suppressed, SMTPUTF8 needed.

    For an address set by hand (the admin); imports and events set the same flags
    when they create the profile. Saved by the caller.
    """
    if email is None:
        profile.traits.pop(SMTPUTF8_TRAIT, None)
        return
    suppressed = Suppression.objects.filter(email_hash=suppression_hash(email.key))
    if profile.suppressed_at is None and suppressed.exists():
        profile.suppressed_at = timezone.now()
    if email.ascii_only:
        profile.traits.pop(SMTPUTF8_TRAIT, None)
    else:
        profile.traits[SMTPUTF8_TRAIT] = True


def profile_by_email_key(key: str) -> Profile | None:
    """Return the profile whose address has this key (email_normalize's), if any."""
    # Lower(email) = key is the expression of the unique index, so this look-up uses
    # it, and still finds a row stored with capitals by hand or by an older import.
    return Profile.objects.filter(Exact(Lower("email"), key)).first()


def profile_tags_add(*, profile: Profile, names: list[str]) -> None:
    """Give the profile these tags, keeping the ones it has."""
    kept = tags_distinct(name[:TAG_MAX_CHARS] for name in names if name)
    tags = [ProfileTag(profile=profile, name=name) for name in kept]
    ProfileTag.objects.bulk_create(tags, ignore_conflicts=True)


class ProfileGone(RuntimeError):
    """The profile an event was to be stored for was deleted meanwhile."""


def profile_hold(profile: Profile) -> None:
    """Hold the profile against a delete until the transaction commits.

    The event table keeps no foreign key to profiles (profiles/models.py): a path
    that stores an event for a profile holds it as that key's check would have.
    """
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM profiles_profile WHERE id = %s FOR KEY SHARE", [profile.pk]
        )
        if cursor.fetchone() is None:
            raise ProfileGone(f"Profile {profile.pk} was deleted meanwhile.")


def event_store_once(*, message_id: str, **fields: Any) -> Event | None:
    """Store an event under a messageId no event holds; None if one does.

    For the events Bespoke writes itself (a shop's order, an ESP's open), under an
    id made of what they report: a delivery sent again stores nothing twice. A
    concurrent writer of the same id is waited for, and wins if it commits. An id
    whose event was deleted (with its profile, by hand) is stored again.
    """
    with transaction.atomic():
        try:
            with transaction.atomic():
                EventMessage.objects.create(message_id=message_id)
        except IntegrityError:
            claim = EventMessage.objects.select_for_update().get(pk=message_id)
            stored = claim.event_id is None or (
                Event.objects.filter(pk=claim.event_id).exists()
            )
            if stored:
                return None
        event = Event.objects.create(message_id=message_id, **fields)
        EventMessage.objects.filter(pk=message_id).update(event_id=event.pk)
        return event
