"""Shopify webhooks: signature check, delivery storage and what each topic does.

A delivery is verified on its exact bytes, stored once per X-Shopify-Webhook-Id and
committed before anything acts on it. Processing claims the stored delivery under a
row lock, applies its topic inside one transaction and marks it processed in that
same transaction, so its effects happen once; a failure leaves processed_at empty
with the error kept, for the sweep to finish later.

Shop behaviour also enters the event log under the Segment e-commerce names
(`Order Completed`, `Order Updated`, `Order Refunded`, `Order Cancelled`,
`Checkout Started`),
unprocessed, so that event processing
computes the profile's traits and segments and flows see it like site tracking.
"""

import base64
import copy
import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from profiles.emails import InvalidEmail, NormalizedEmail, email_normalize
from profiles.models import (
    AWAITS_ORDER,
    PAYLOAD_REFUSED,
    SHOP_SOURCE,
    ConsentRecord,
    Event,
    EventType,
    IdentityKind,
    Profile,
    ProfileIdentity,
    ShopCheckout,
    ShopOrder,
    SubscriptionStatus,
    WebhookDelivery,
)
from profiles.names import field_text_clean
from profiles.processing import events_process_again, profile_traits_compute
from profiles.processing_identify import FIELD_LENGTHS
from profiles.selectors import profile_suppressed
from profiles.services import (
    CLOCK_SKEW_ALLOWED,
    WITHDRAWN_STATUSES,
    consent_record,
    event_store_once,
    profile_by_email_key,
    profile_get_or_create_by_email,
    profile_hold,
    profile_tags_add,
    profiles_suppression_mark,
)
from profiles.signals import profiles_changed
from profiles.source_counts import delivery_counted
from profiles.traits import (
    TraitInvalid,
    country_code_read,
    trait_coerce,
    trait_rule_find,
    trait_schema_load,
)
from profiles.value_times import (
    place_names_said,
    said_at,
    values_newer,
    values_stamp,
)

logger = logging.getLogger(__name__)

SOURCE = SHOP_SOURCE
ORDER_COMPLETED = "Order Completed"
ORDER_UPDATED = "Order Updated"
ORDER_REFUNDED = "Order Refunded"
ORDER_CANCELLED = "Order Cancelled"
# The shop's events of an order, which go where the order goes.
ORDER_EVENTS = (ORDER_COMPLETED, ORDER_UPDATED, ORDER_CANCELLED, ORDER_REFUNDED)
CHECKOUT_STARTED = "Checkout Started"

# A webhook request should answer within Shopify's few seconds: processing that
# waits this long on a row another worker holds gives up and leaves it to the sweep.
PROCESS_LOCK_TIMEOUT_MS = 2000
# Deliveries older than this are no longer retried by the sweep; they keep their
# error for a person to read.
SWEEP_MAX_AGE = timedelta(days=7)

CONSENT_STATES = {
    "subscribed": SubscriptionStatus.SUBSCRIBED,
    "unsubscribed": SubscriptionStatus.UNSUBSCRIBED,
}
CONSENT_WORDING = (
    "Email marketing consent as recorded by the Shopify shop; the wording the "
    "customer saw is the shop's own and is not sent with the webhook."
)
CHECKOUT_CONSENT_WORDING = (
    "Ticked 'accept email marketing' at the Shopify checkout; the wording of the "
    "checkbox is the shop's own and is not sent with the webhook."
)


AMOUNT_LIMIT = Decimal(10**12)
CENT = Decimal("0.01")


class RefundAwaitsOrder(RuntimeError):
    """A refund of an order not received yet: applied when the order arrives."""


class ShopifyPayloadError(ValueError):
    """A signed payload holds a value Bespoke cannot read (money, a time)."""


@dataclass
class Outcome:
    event_ids: list[int] = field(default_factory=list)
    note: str = ""


def shopify_signature_valid(*, body: bytes, signature: str | None) -> bool:
    """Return whether the header is the HMAC of these exact bytes under a secret."""
    if not signature:
        return False

    given = signature.strip().encode()
    matches = [
        hmac.compare_digest(_signature(secret=secret, body=body), given)
        for secret in settings.BESPOKE_SHOPIFY_WEBHOOK_SECRETS
    ]
    return any(matches)


def _signature(*, secret: str, body: bytes) -> bytes:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest)


def shopify_delivery_store(
    *,
    delivery_id: str,
    topic: str,
    shop_domain: str,
    api_version: str,
    payload: dict[str, Any],
    received_at: datetime,
) -> tuple[WebhookDelivery, bool]:
    """Store a delivery once by its webhook id; return it and whether it is new."""
    delivery, created = WebhookDelivery.objects.get_or_create(
        source=SOURCE,
        delivery_id=delivery_id[:255],
        defaults={
            "topic": topic[:100],
            "shop_domain": shop_domain[:255],
            "api_version": api_version[:20],
            "payload": payload,
            "received_at": received_at,
        },
    )
    return delivery, created


def shopify_delivery_process(*, delivery_id: int) -> list[int]:
    """Apply a stored delivery's topic once; return the ids of events it stored.

    A delivery already processed, or held by another worker, is left alone. If
    applying it raises, its writes are rolled back, the error is kept on the
    delivery and processed_at stays empty so that the sweep tries again; a payload
    that cannot be read (ShopifyPayloadError) is finished with its error instead.
    """
    with transaction.atomic():
        delivery = _delivery_claim(delivery_id)
        if delivery is None:
            return []

        try:
            with transaction.atomic():
                _lock_timeout_set()
                outcome = _delivery_apply(delivery)
                # Counted with the rest: a count that waits past the lock timeout
                # (a recount of the Sources page's hours) is tried again as any is.
                _delivery_finish(delivery, error=outcome.note[:500])
        except RefundAwaitsOrder as exc:
            # Expected: deliveries come in any order. No traceback.
            logger.info(
                "Shopify refund waits for its order", extra={"delivery": delivery.pk}
            )
            WebhookDelivery.objects.filter(pk=delivery.pk).update(error=str(exc)[:500])
            return []
        except ShopifyPayloadError as exc:
            # Trying again cannot help a payload that cannot be read: finish it,
            # with the reason, instead of retrying it for a week.
            logger.warning(
                "Shopify delivery refused",
                extra={"delivery": delivery.pk, "topic": delivery.topic},
            )
            _delivery_finish(delivery, error=f"{PAYLOAD_REFUSED}{exc}"[:500])
            return []
        except Exception as exc:
            if _is_lock_timeout(exc):
                # Expected under load, and tried again in seconds: no traceback.
                logger.warning(
                    "Shopify delivery not applied yet: a row it changes was held "
                    "by another worker past the lock timeout; it is tried again",
                    extra={"delivery": delivery.pk, "topic": delivery.topic},
                )
            else:
                logger.exception(
                    "Shopify delivery processing failed",
                    extra={"delivery": delivery.pk, "topic": delivery.topic},
                )
            error = f"{type(exc).__name__}: {exc}"[:500]
            WebhookDelivery.objects.filter(pk=delivery.pk).update(error=error)
            return []

    logger.info(
        "Shopify delivery processed",
        extra={
            "delivery": delivery.pk,
            "topic": delivery.topic,
            "events": len(outcome.event_ids),
        },
    )
    return outcome.event_ids


def _delivery_finish(delivery: WebhookDelivery, *, error: str) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        processed_at=timezone.now(), error=error
    )
    delivery_counted(delivery=delivery, error=error)


def shopify_deliveries_pending(*, limit: int) -> list[int]:
    """Return the ids of recent deliveries still to process, oldest first."""
    since = timezone.now() - SWEEP_MAX_AGE
    pending = WebhookDelivery.objects.filter(
        source=SOURCE, processed_at__isnull=True, received_at__gte=since
    ).order_by("received_at", "id")
    return list(pending.values_list("id", flat=True)[:limit])


def shopify_deliveries_process_pending(*, limit: int) -> tuple[int, int]:
    """Process up to `limit` unfinished deliveries; return (tried, finished)."""
    delivery_ids = shopify_deliveries_pending(limit=limit)
    for delivery_id in delivery_ids:
        shopify_delivery_process(delivery_id=delivery_id)

    finished = WebhookDelivery.objects.filter(
        pk__in=delivery_ids, processed_at__isnull=False
    ).count()
    if delivery_ids:
        logger.info(
            "Shopify deliveries swept: %s of %s finished",
            finished,
            len(delivery_ids),
            extra={"tried": len(delivery_ids), "finished": finished},
        )
    return len(delivery_ids), finished


def _delivery_claim(delivery_id: int) -> WebhookDelivery | None:
    # skip_locked: a delivery another request or worker is applying right now is
    # theirs; the processed_at filter makes a finished one a no-op.
    return (
        WebhookDelivery.objects.select_for_update(skip_locked=True)
        .filter(pk=delivery_id, processed_at__isnull=True)
        .first()
    )


def _is_lock_timeout(exc: Exception) -> bool:
    # PostgreSQL's lock_not_available, as Django wraps psycopg's error.
    return isinstance(exc, OperationalError) and (
        getattr(exc.__cause__, "sqlstate", None) == LOCK_NOT_AVAILABLE
    )


LOCK_NOT_AVAILABLE = "55P03"


def _lock_timeout_set() -> None:
    if connection.vendor != "postgresql":
        return

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('lock_timeout', %s, true)",
            [f"{PROCESS_LOCK_TIMEOUT_MS}ms"],
        )


# Shopify's mandatory privacy topics: Bespoke has no access or erasure requests yet
# (docs/limitations.md), so the note says what a privacy admin must do by hand.
PRIVACY_TOPICS = {
    "customers/data_request": (
        "PRIVACY REQUEST: the customer asked the shop for their data. Bespoke does "
        "not answer access requests yet: export this customer's profile by hand."
    ),
    "customers/redact": (
        "PRIVACY REQUEST: the shop asked for this customer's data to be erased. "
        "Bespoke does not erase on request yet: erase the profile by hand."
    ),
    "shop/redact": (
        "PRIVACY REQUEST: the shop asked for all its customers' data to be erased. "
        "Bespoke does not erase on request yet: do it by hand."
    ),
}


def _delivery_apply(delivery: WebhookDelivery) -> Outcome:
    handler = TOPIC_HANDLERS.get(delivery.topic)
    if delivery.topic in PRIVACY_TOPICS:
        return Outcome(note=PRIVACY_TOPICS[delivery.topic])
    if handler is None:
        # Shopify disables an endpoint that keeps failing, so a topic Bespoke does
        # not use is accepted and noted, not refused.
        return Outcome(note=f"Topic {delivery.topic!r} is not used by Bespoke.")
    return handler(delivery)


# Customers ----------------------------------------------------------------------


def _customer_apply(delivery: WebhookDelivery) -> Outcome:
    payload, unread_note = _payload_readable(delivery.payload, what="customer")
    if _customer_stale(payload):
        # Deliveries come in any order: an older version would undo the newer.
        return Outcome(note=STALE_NOTE.format(what="customer"))
    profile, found_note = _customer_profile(
        payload.get("email"), customer=payload, account=True
    )
    if profile is None:
        return Outcome(note="The customer has no usable email address.")
    found_note = found_note or _address_unusable_note(payload.get("email"), profile)

    refused = _profile_fill(profile=profile, customer=payload)
    # API versions before 2025-01 put tags and email consent in the customer
    # payload; later ones send consent on its own topic. Branching on the keys
    # present reads both shapes whatever version the subscription names.
    if isinstance(payload.get("tags"), str):
        profile_tags_add(profile=profile, names=_tags_split(payload["tags"]))
    consent = payload.get("email_marketing_consent")
    note = ""
    if isinstance(consent, dict):
        note = _consent_apply(profile=profile, consent=consent, delivery=delivery)
    # Names, place and tags may have changed: segments re-check this profile.
    _profile_changed_on_commit(profile.pk)
    joined = _orders_waiting_join(customer=payload, profile=profile)
    notes = (found_note, refused, note, unread_note, joined.note)
    return Outcome(
        event_ids=joined.event_ids, note="; ".join(part for part in notes if part)
    )


def _profile_changed_on_commit(profile_id: int) -> None:
    # Segments and flows look at the profile again once the delivery is committed.
    transaction.on_commit(
        lambda: profiles_changed.send(
            sender=WebhookDelivery, profile_ids=[profile_id], changed=None
        )
    )


def _consent_update_apply(delivery: WebhookDelivery) -> Outcome:
    payload, unread_note = _payload_readable(delivery.payload, what="consent")
    consent = payload.get("email_marketing_consent")
    if not isinstance(consent, dict):
        # customers_marketing_consent/update carries SMS consent only.
        return Outcome(note="The delivery holds no email marketing consent.")

    profile, found_note = _customer_profile(
        payload.get("email_address") or payload.get("email"),
        customer={"id": payload.get("customer_id")},
    )
    if profile is None:
        return Outcome(note="The customer has no usable email address.")

    note = _consent_apply(profile=profile, consent=consent, delivery=delivery)
    joined = _orders_waiting_join(
        customer={"id": payload.get("customer_id")}, profile=profile
    )
    notes = (found_note, note, unread_note, joined.note)
    return Outcome(
        event_ids=joined.event_ids, note="; ".join(part for part in notes if part)
    )


def _orders_waiting_join(*, customer: dict[str, Any], profile: Profile) -> Outcome:
    """Apply the shop customer's orders kept without a profile, now she has one.

    An order placed before the customer had an address was kept without one; once
    her account has an address, and with it a profile, the order is applied as its
    delivery would have been, and its events go on that profile.
    """
    customer_id = _customer_id(customer)
    identity = _customer_identity(customer_id)
    if identity is None or identity.profile_id != profile.pk:
        return Outcome()
    waiting = (
        ShopOrder.objects.filter(customer_id=customer_id, profile=None, is_test=False)
        .exclude(delivery=None)
        .select_related("delivery")
        .order_by("placed_at", "pk")
    )
    event_ids, names = [], []
    for order in waiting:
        event_ids += _order_apply(order.delivery).event_ids
        names.append(order.name or order.shop_id)
    if not names:
        return Outcome()
    orders = "1 order" if len(names) == 1 else f"{len(names)} orders"
    return Outcome(
        event_ids=event_ids,
        note=(
            f"{orders} placed before the customer had an address joined the "
            f"profile: {', '.join(names)}."
        ),
    )


def _customer_profile(
    raw_email: Any, *, customer: dict[str, Any], account: bool = False
) -> tuple[Profile | None, str]:
    """Return the customer's profile, by the shop's customer id first, and a note.

    The id is the shop's account. Only the account itself (`account`: a customers/
    topic) changes the address: a customer who changes it in the shop keeps her
    profile, which takes the new address, unless another profile has it already
    (two people's profiles are never merged on a shop's word). An order's or a
    checkout's contact address, or an older order updated later, changes nothing.
    """
    customer_id = _customer_id(customer)
    identity = _customer_identity(customer_id)
    email = _email_or_none(raw_email)
    if identity is None:
        if email is None:
            return None, ""
        found, _ = profile_get_or_create_by_email(email)
        profile = _profile_latest(found.pk)
        account_email = _email_or_none(customer.get("email"))
        # Tied to the account's own address, not an order's contact address.
        if customer_id and (account_email is None or account_email.key == email.key):
            _customer_id_attach(profile, customer_id, customer if account else None)
        return profile, ""

    owner = _profile_latest(identity.profile_id)
    if account:
        _customer_seen(identity, customer)
    if not account or email is None or (owner.email or "").lower() == email.key:
        return owner, ""
    if _shop_customers_held(owner) > 1:
        # Two shop accounts merged into one person: each would set its own address
        # in turn at its every update, and bring back one the marketer cleared.
        return owner, (
            f"The shop's customer {customer_id} has the address {email.display}, "
            "but this profile holds more than one shop customer (merged): it keeps "
            f"{owner.email_display or owner.email or 'no address'}."
        )
    holder = profile_by_email_key(email.key)
    if holder is not None:
        return owner, (
            f"The shop's customer {customer_id} now has the address {email.display}, "
            "which another profile has: this profile keeps "
            f"{owner.email_display or owner.email}."
        )
    was = owner.email_display or owner.email
    owner.email, owner.email_display = email.key, email.display
    owner.save(update_fields=["email", "email_display", "updated_at"])
    profiles_suppression_mark({owner.pk: email.key})
    return owner, f"The customer's address changed in the shop from {was}."


def _profile_latest(pk: int) -> Profile:
    """Return the profile as it is now, locked until the delivery commits.

    A delivery writes back what it read of the profile (its traits and value times
    whole): read before an identify or another delivery committed, it would undo
    theirs. Locked, it waits for them (up to the lock timeout, then tried again)
    and reads what they wrote.
    """
    return Profile.objects.select_for_update().get(pk=pk)


def _shop_customers_held(profile: Profile) -> int:
    return ProfileIdentity.objects.filter(
        profile=profile, kind=IdentityKind.SHOPIFY_CUSTOMER
    ).count()


def _customer_identity(customer_id: str) -> ProfileIdentity | None:
    if not customer_id:
        return None
    return (
        ProfileIdentity.objects.select_for_update()
        .filter(kind=IdentityKind.SHOPIFY_CUSTOMER, value=customer_id)
        .first()
    )


def _customer_stale(customer: dict[str, Any]) -> bool:
    """Whether a customers/ delivery is older than the customer's version applied."""
    identity = _customer_identity(_customer_id(customer))
    updated_at = _time(customer.get("updated_at"))
    return bool(
        identity is not None
        and identity.source_updated_at is not None
        and updated_at is not None
        and updated_at < identity.source_updated_at
    )


def _customer_seen(identity: ProfileIdentity, customer: dict[str, Any]) -> None:
    updated_at = _time(customer.get("updated_at"))
    if updated_at is None or (
        identity.source_updated_at and updated_at <= identity.source_updated_at
    ):
        return
    identity.source_updated_at = updated_at
    identity.save(update_fields=["source_updated_at"])


def _customer_id(customer: dict[str, Any]) -> str:
    value = customer.get("id")
    if isinstance(value, bool) or not isinstance(value, int | str):
        return ""
    return str(value).strip()[:255]


def _customer_id_attach(
    profile: Profile, customer_id: str, account: dict[str, Any] | None
) -> None:
    # Another delivery of the same customer may attach it first: theirs stands.
    updated_at = _time(account.get("updated_at")) if account else None
    with transaction.atomic():
        ProfileIdentity.objects.get_or_create(
            kind=IdentityKind.SHOPIFY_CUSTOMER,
            value=customer_id,
            defaults={"profile": profile, "source_updated_at": updated_at},
        )


def _address_unusable_note(raw: Any, profile: Profile) -> str:
    # An account's address Bespoke cannot use changes nothing; the delivery says so.
    if raw in (None, "") or _email_or_none(raw) is not None:
        return ""
    kept = profile.email_display or profile.email or "no address"
    return (
        f"The customer's email {str(raw)[:100]!r} is not an address: the profile "
        f"keeps {kept}."
    )


def _email_or_none(raw: Any) -> NormalizedEmail | None:
    if not isinstance(raw, str):
        return None
    try:
        return email_normalize(raw)
    except InvalidEmail:
        return None


def _profile_fill(*, profile: Profile, customer: dict[str, Any]) -> str:
    """Copy the customer's names, phone, place and Shopify facts onto the profile.

    Return a note naming the values not used, as an identify's warnings do.
    """
    # The customer record's own time weighs its values against an identify's
    # (profiles/value_times.py): an older record leaves what was said since. One
    # with no time Bespoke can read is taken as said now, and costs nothing else.
    now = timezone.now()
    try:
        updated_at = _time(customer.get("updated_at")) or now
    except ShopifyPayloadError:
        updated_at = now
    said = said_at(updated_at, now)
    newer = values_newer(profile, said)
    fields, refused = _customer_fields(customer)
    fields = {name: value for name, value in fields.items() if name not in newer}
    country_was = profile.country_code
    moved = any(
        name in fields and fields[name].casefold() != getattr(profile, name).casefold()
        for name in ("city", "country_code")
    )
    region_refused = any(
        note.startswith("default_address.province") for note in refused
    )
    if (
        moved
        and "region" not in fields
        and not region_refused
        and "region" not in newer
    ):
        # A new address is one whole: the old one's region is not the new one's.
        fields["region"] = ""
    changed = [
        name for name, value in fields.items() if getattr(profile, name) != value
    ]
    traits = _traits_checked(_customer_traits(customer), refused)
    traits = {name: value for name, value in traits.items() if name not in newer}
    for name in changed:
        setattr(profile, name, fields[name])

    times = profile.value_times
    said_for = place_names_said(fields, country_was=country_was) + list(traits)
    values_stamp(profile, [n for n in said_for if n not in newer], said)
    note = "; ".join(refused)
    unchanged = all(profile.traits.get(k) == v for k, v in traits.items())
    if not changed and unchanged and profile.value_times == times:
        return note
    profile.traits = {**profile.traits, **traits}
    profile.save(update_fields=[*changed, "traits", "value_times", "updated_at"])
    return note


def _customer_fields(customer: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Return the profile fields the customer fills, and why any value was not used."""
    address = _object(customer.get("default_address"))
    country = country_code_read(_text(address.get("country_code"), 100))
    # Each field's values, in the order they are tried: the first usable one fills it.
    sent = {
        "first_name": [("first_name", customer.get("first_name"))],
        "last_name": [("last_name", customer.get("last_name"))],
        "phone": [
            ("phone", customer.get("phone")),
            ("default_address.phone", address.get("phone")),
        ],
        "city": [("default_address.city", address.get("city"))],
        "region": [
            ("default_address.province_code", address.get("province_code")),
            ("default_address.province", address.get("province")),
        ],
    }
    fields: dict[str, str] = {}
    refused: list[str] = []
    for name, candidates in sent.items():
        label = name.replace("_", " ")
        notes = []
        taken = ""
        for key, raw in candidates:
            value, why = _customer_text(raw, limit=FIELD_LENGTHS[name])
            if why:
                notes.append(f"{key}: {why}")
            elif value:
                # What Shopify leaves empty keeps what the profile already knows.
                fields[name], taken = value, key
                break
        if notes:
            instead = (
                f"so the {label} is taken from {taken}"
                if taken
                else f"so the profile keeps the {label} it had"
            )
            refused.append(f"{', '.join(notes)}, {instead}")
    if len(country) == 2:
        fields["country_code"] = country
    return fields, refused


def _customer_text(raw: Any, *, limit: int) -> tuple[str, str]:
    """Return a customer's text for a profile field, or why it cannot be one."""
    if raw is None:
        return "", ""
    if isinstance(raw, bool | dict | list):
        return "", "is not text"
    try:
        value = field_text_clean(str(raw))
    except ValueError as exc:
        return "", str(exc)
    if len(value) > limit:
        return "", f"is {len(value)} characters, more than the {limit} it may have"
    return value, ""


def _customer_traits(customer: dict[str, Any]) -> dict[str, Any]:
    traits: dict[str, Any] = {}
    if customer.get("id") is not None:
        traits["shopify_customer_id"] = str(customer["id"])
    if isinstance(customer.get("orders_count"), int):
        traits["shopify_orders_count"] = customer["orders_count"]
    spent = _money(customer.get("total_spent"))
    if spent is not None:
        traits["shopify_total_spent"] = float(spent)
    return traits


def _traits_checked(traits: dict[str, Any], refused: list[str]) -> dict[str, Any]:
    # A trait the marketer declared keeps its declared type; a value that breaks
    # the rule is left out rather than stored wrong, and the delivery's note says so.
    schema = trait_schema_load()
    checked: dict[str, Any] = {}
    for name, value in traits.items():
        rule = trait_rule_find(schema, name)
        try:
            if rule is None:
                checked[name] = value
            else:
                checked[rule.name] = trait_coerce(rule, value)
        except TraitInvalid as exc:
            refused.append(f"{name} {value!r} not stored: {exc.message}")
    return checked


def _tags_split(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _consent_apply(
    *, profile: Profile, consent: dict[str, Any], delivery: WebhookDelivery
) -> str:
    """Record the shop's email consent; return a note when it is not recorded."""
    status = CONSENT_STATES.get(str(consent.get("state")))
    if status is None:
        # not_subscribed, pending (double opt-in not confirmed yet), invalid and
        # redacted state no consent given or withdrawn: nothing to record.
        return ""

    consent_updated_at = _time(consent.get("consent_updated_at"))
    dated = consent_updated_at is not None
    occurred_at = consent_updated_at or delivery.received_at
    evidence = {
        "state": consent.get("state"),
        "opt_in_level": consent.get("opt_in_level"),
        "consent_updated_at": consent.get("consent_updated_at"),
        "topic": delivery.topic,
        "webhook_id": delivery.delivery_id,
        "shop_domain": delivery.shop_domain,
    }
    if not dated:
        # Shopify does not say when: as for an undated row of an imported list, the
        # time it reached Bespoke is only an upper bound, and a dated fact outranks it.
        evidence["occurred_at_is_import_time"] = True
    if _consent_known(profile=profile, status=status, occurred_at=occurred_at):
        return ""
    # A fact dated in the future is recorded as of its arrival (consent_record): the
    # shop's own words for its time then tell a repeat of it.
    if dated and _consent_known(
        profile=profile,
        status=status,
        occurred_at=occurred_at,
        consent_updated_at=consent.get("consent_updated_at"),
    ):
        return ""
    # The shop's own consent state is the person's choice, made in the shop, so it
    # moves the status like any first-hand fact when it is the newest one.
    recorded = consent_record(
        profile=profile,
        status=status,
        source=SOURCE,
        occurred_at=occurred_at,
        dated=dated,
        wording=CONSENT_WORDING,
        evidence=evidence,
    )
    if recorded is None:
        return (
            f"The email consent '{consent.get('state')}' has no date "
            f"(consent_updated_at), so it does not replace the profile's status "
            f"'{profile.subscription_status}' and is not recorded."
        )
    return ""


def _consent_known(
    *, profile: Profile, status: str, occurred_at: datetime, **evidence: str
) -> bool:
    # customers/update repeats the same consent with every other change; the same
    # fact is recorded once.
    known = ConsentRecord.objects.filter(profile=profile, source=SOURCE, status=status)
    if evidence:
        # One lookup per key rather than JSON containment, which SQLite lacks.
        return known.filter(
            **{f"evidence__{key}": value for key, value in evidence.items()}
        ).exists()
    return known.filter(occurred_at=occurred_at).exists()


def _accepts_marketing_apply(
    *, profile: Profile, delivery: WebhookDelivery, at: datetime, **keys: str
) -> None:
    """Record `buyer_accepts_marketing: true` as consent that never lifts a withdrawal.

    The box is often pre-ticked or ticked in passing while buying, so it is taken
    like a subscribed row of an imported list (from_import): it may give consent to
    someone who has none but never overrides an unsubscribe or a cleaned address,
    however much newer the order is.
    """
    # Nor is a record written that the status would not follow: next to an
    # unsubscribe it would only mislead whoever reads the consent history.
    if profile.subscription_status in WITHDRAWN_STATUSES:
        return
    if profile_suppressed(profile):
        return
    if _consent_known(
        profile=profile, status=SubscriptionStatus.SUBSCRIBED, occurred_at=at, **keys
    ):
        return

    consent_record(
        profile=profile,
        status=SubscriptionStatus.SUBSCRIBED,
        source=SOURCE,
        occurred_at=at,
        from_import=True,
        wording=CHECKOUT_CONSENT_WORDING,
        evidence={
            **keys,
            "buyer_accepts_marketing": True,
            "topic": delivery.topic,
            "webhook_id": delivery.delivery_id,
            "shop_domain": delivery.shop_domain,
        },
    )


# Checkouts ----------------------------------------------------------------------


def _checkout_apply(delivery: WebhookDelivery) -> Outcome:
    payload, unread_note = _payload_readable(delivery.payload, what="checkout")
    token = _text(payload.get("token"), 100)
    if not token:
        return Outcome(note="The checkout has no token.")

    if _checkout_stale(token, payload):
        return Outcome(note=STALE_NOTE.format(what="checkout"))
    customer = _object(payload.get("customer"))
    profile, found_note = _customer_profile(
        payload.get("email") or customer.get("email"), customer=customer
    )
    refused = found_note
    if profile is not None:
        refused = " ".join(
            n
            for n in (found_note, _profile_fill(profile=profile, customer=customer))
            if n
        )
    checkout = _checkout_upsert(token=token, payload=payload, profile=profile)

    started_at, future_note = _arrival_bounded(
        checkout.started_at, delivery, "checkout"
    )
    refused = " ".join(n for n in (refused, future_note, unread_note) if n)
    if profile is not None and payload.get("buyer_accepts_marketing") is True:
        _accepts_marketing_apply(
            profile=profile, delivery=delivery, at=started_at, checkout_token=token
        )
    # Written once per checkout, for the person it has: a guest's checkout gets its
    # address from a later update, and then its Checkout Started.
    buyer = checkout.profile
    if buyer is None:
        return Outcome(note=refused)

    event = _event_store(
        key=f"checkout:{token}",
        name=CHECKOUT_STARTED,
        profile=buyer,
        properties=_checkout_properties(payload, token=token),
        at=started_at,
        delivery=delivery,
    )
    return Outcome(event_ids=[event.pk] if event else [], note=refused)


def _checkout_stale(token: str, payload: dict[str, Any]) -> bool:
    kept = ShopCheckout.objects.filter(token=token)
    return _older_than_kept(payload, kept.values_list("updated_at", flat=True))


def _checkout_upsert(
    *, token: str, payload: dict[str, Any], profile: Profile | None
) -> ShopCheckout:
    values = _checkout_values(payload, profile=profile)
    checkout, created = ShopCheckout.objects.select_for_update().get_or_create(
        token=token, defaults=values
    )
    # Shopify does not promise order: an older update arriving late is ignored.
    stale = (
        checkout.updated_at is not None
        and values["updated_at"] is not None
        and values["updated_at"] < checkout.updated_at
    )
    if not created and not stale:
        # A checkout completed by an order stays completed, and an update that
        # names no address (it was cleared in the form) keeps the person it had.
        values["completed_at"] = values["completed_at"] or checkout.completed_at
        if values["profile"] is None:
            values["profile"] = checkout.profile
            values["email"] = values["email"] or checkout.email
        for name, value in values.items():
            setattr(checkout, name, value)
        checkout.save()

    _checkout_join_order(checkout)
    return checkout


def _checkout_values(
    payload: dict[str, Any], *, profile: Profile | None
) -> dict[str, Any]:
    shipping_lines = payload.get("shipping_lines") or []
    return {
        "shop_id": _text(payload.get("id"), 40),
        "profile": profile,
        "email": _text(
            payload.get("email") or _object(payload.get("customer")).get("email"), 254
        ),
        "currency": _text(payload.get("currency"), 3),
        "subtotal": _money(payload.get("subtotal_price")),
        # No shipping line yet means no shipping chosen, not free shipping.
        "shipping": _lines_total(shipping_lines) if shipping_lines else None,
        "tax": _money(payload.get("total_tax")),
        "total": _money(payload.get("total_price")),
        "line_items": [_line_item(line) for line in payload.get("line_items") or []],
        "shipping_address": _object(payload.get("shipping_address")),
        "recovery_url": _text(payload.get("abandoned_checkout_url"), 1000),
        "buyer_accepts_marketing": _flag(payload.get("buyer_accepts_marketing")),
        "started_at": _time(payload.get("created_at")),
        "updated_at": _time(payload.get("updated_at")),
        "completed_at": _time(payload.get("completed_at")),
    }


def _checkout_join_order(checkout: ShopCheckout) -> None:
    # The order may have arrived before the checkout's own webhook.
    if checkout.order_shop_id:
        return

    order = ShopOrder.objects.filter(checkout_token=checkout.token).first()
    if order is None:
        return
    checkout.order_shop_id = order.shop_id
    checkout.completed_at = checkout.completed_at or order.placed_at
    checkout.save(update_fields=["order_shop_id", "completed_at"])


def _checkout_properties(payload: dict[str, Any], *, token: str) -> dict[str, Any]:
    codes = _discount_codes(payload.get("discount_codes"))
    return {
        # Segment's Checkout Started names an order id; a checkout has none yet,
        # so the token stands in, as the site's own tracking does.
        "order_id": token,
        "checkout_id": token,
        "value": _number(payload.get("total_price")),
        "revenue": _number(payload.get("subtotal_price")),
        "shipping": _number(_lines_total(payload.get("shipping_lines") or [])),
        "tax": _number(payload.get("total_tax")),
        "discount": _number(payload.get("total_discounts")),
        "coupon": ",".join(code["code"] for code in codes),
        "currency": _text(payload.get("currency"), 3),
        "products": _products(payload.get("line_items")),
        "recovery_url": _text(payload.get("abandoned_checkout_url"), 1000),
    }


# Orders -------------------------------------------------------------------------


def _order_apply(delivery: WebhookDelivery) -> Outcome:
    payload, unread_note = _payload_readable(delivery.payload, what="order")
    if payload.get("id") is None:
        return Outcome(note="The order has no id.")

    customer = _object(payload.get("customer"))
    if _order_stale(payload):
        # Its profile is left alone too: the newer version kept named it already.
        return Outcome(note=STALE_NOTE.format(what="order"))
    if payload.get("test") is True:
        # The merchant trying the shop out: no one's profile is made or changed.
        order = _order_upsert(payload=payload, profile=None, delivery=delivery)
        _order_join_checkout(order)
        _waiting_refunds_apply(order=order, profile=None)
        _test_order_counted_again(order, customer=customer)
        return Outcome(note=" ".join(n for n in (TEST_ORDER_NOTE, unread_note) if n))
    profile, found_note = _customer_profile(
        payload.get("email") or payload.get("contact_email") or customer.get("email"),
        customer=customer,
    )
    refused = found_note
    if profile is not None:
        refused = " ".join(
            n
            for n in (found_note, _profile_fill(profile=profile, customer=customer))
            if n
        )
    held_by = ShopOrder.objects.filter(shop_id=str(payload["id"])[:40]).values_list(
        "profile_id", flat=True
    )
    was = held_by.first()
    order = _order_upsert(payload=payload, profile=profile, delivery=delivery)
    _order_join_checkout(order)
    if profile is None and order.profile_id is not None:
        # An update that names no address keeps the customer the order had.
        profile = order.profile
    moved: list[int] = []
    if was is not None and profile is not None and profile.pk != was:
        moved, moved_note = _order_events_move(order, old_id=was, new=profile)
        refused = " ".join(n for n in (refused, moved_note) if n)

    placed_at, future_note = _arrival_bounded(order.placed_at, delivery, "order")
    if profile is not None and order.buyer_accepts_marketing:
        _accepts_marketing_apply(
            profile=profile, delivery=delivery, at=placed_at, order_id=order.shop_id
        )
    if profile is None:
        return Outcome(note="The order has no usable email address.")

    # Keyed by the order, not the delivery: orders/create, orders/paid and
    # orders/updated of one order, and their retries, store one Order Completed.
    event = _event_store(
        key=f"order:{order.shop_id}",
        name=ORDER_COMPLETED,
        profile=profile,
        properties=_order_properties(payload, order=order),
        at=placed_at,
        delivery=delivery,
    )
    edit = _order_edit_store(payload, order=order, profile=profile, delivery=delivery)
    changes, change_notes = _order_changes_store(
        payload, order=order, profile=profile, delivery=delivery
    )
    changes += [edit, *_waiting_refunds_apply(order=order, profile=profile)]
    notes = [refused, unread_note, _order_currency_note(order), future_note]
    notes += change_notes
    return Outcome(
        event_ids=[event.pk for event in (event, *changes) if event] + moved,
        note=" ".join(n for n in notes if n),
    )


def _test_order_counted_again(order: ShopOrder, *, customer: dict[str, Any]) -> None:
    """Count again the profiles where the site's report of a test order counted.

    Figures leave out every report of a test order (processing_traits), but those
    counted before the shop said it was one are kept in what a profile keeps.
    """
    email = _email_or_none(order.email or customer.get("email"))
    identity = _customer_identity(_customer_id(customer))
    holders = {identity.profile_id} if identity is not None else set()
    holder = profile_by_email_key(email.key) if email is not None else None
    if holder is not None:
        holders.add(holder.pk)
    order_id = Q(properties__order_id=order.shop_id)
    if order.shop_id.isascii() and order.shop_id.isdigit():
        order_id |= Q(properties__order_id=int(order.shop_id))
    reported = Event.objects.filter(
        order_id,
        profile_id__in=holders,
        type=EventType.TRACK,
        event__in=ORDER_EVENTS,
        processed_at__isnull=False,
    )
    for profile in Profile.objects.filter(pk__in=reported.values("profile_id")):
        profile_traits_compute(profile=profile)
        _profile_changed_on_commit(profile.pk)


def _order_events_move(
    order: ShopOrder, *, old_id: int, new: Profile
) -> tuple[list[int], str]:
    """Move the shop's events of an order to the customer the shop now names.

    The merchant gave the order to another customer: its Order Completed,
    cancellation and refunds go with it, and both profiles are counted again. Return
    the moved events, processed again, and a note.
    """
    # Both held, in id order as every writer takes them.
    held = Profile.objects.select_for_update().filter(pk__in=[old_id, new.pk])
    old = {p.pk: p for p in held.order_by("pk")}.get(old_id)
    events = Event.objects.filter(
        profile_id=old_id,
        source=SOURCE,
        event__in=ORDER_EVENTS,
        properties__order_id=order.shop_id,
    )
    moved = list(events.values_list("pk", flat=True))
    if not moved:
        return [], ""
    Event.objects.filter(pk__in=moved).update(profile_id=new.pk)
    # Counted again on the new profile when processed; the old one is counted now
    # from what it keeps.
    events_process_again(events=Event.objects.filter(pk__in=moved))
    if old is not None:
        profile_traits_compute(profile=old)
        _profile_changed_on_commit(old_id)
    shown = (old.email_display or old.email) if old is not None else ""
    return moved, (
        f"The shop gave order {order.name or order.shop_id} to another customer: "
        f"its events moved from {shown or f'profile #{old_id}'}."
    )


def _order_edit_store(
    payload: dict[str, Any],
    *,
    order: ShopOrder,
    profile: Profile,
    delivery: WebhookDelivery,
) -> Event | None:
    """Store `Order Updated` when an edit in the shop changed what the order is worth.

    What it is worth is what it comes to before refunds: Shopify's
    `current_total_price` (edits, returns and refunds applied, whether or not the
    money has gone back yet) plus what its refunds return, successful or pending;
    the `Order Refunded` events take the successful ones off. So an edit that
    removes an item and refunds it lowers the value once, when the money goes
    back. A cancelled order counts in no figure, and stores none. Compared with
    the amount of the order's latest event (its `Order Completed`, else its last
    `Order Updated`): a version that changes nothing stores nothing.
    """
    worth = _order_worth(payload)
    if worth is None or payload.get("cancelled_at"):
        # A cancelled order counts in no figure: what it is worth says nothing.
        return None
    # By the profile, which holds the order's events (moved with it above), so that
    # the (profile, event, timestamp) index finds them.
    reported = Event.objects.filter(
        profile=profile,
        source=SOURCE,
        type=EventType.TRACK,
        event__in=(ORDER_COMPLETED, ORDER_UPDATED),
        properties__order_id=order.shop_id,
    ).order_by("-timestamp", "-id")
    latest = reported.values_list("properties", flat=True).first()
    counted = _object(latest).get("total")
    if counted is None or _money_or_none(counted) == worth:
        return None

    at, _ = _arrival_bounded(_time(payload.get("updated_at")), delivery, "edit")
    # Shopify's updated_at is to the second: an edit and its refund may share one,
    # so the worth tells two versions of the same second apart.
    version = payload.get("updated_at") or delivery.delivery_id
    return _event_store(
        key=f"order-updated:{order.shop_id}:{version}:{worth}",
        name=ORDER_UPDATED,
        profile=profile,
        properties={
            "order_id": order.shop_id,
            "order_name": order.name,
            "total": _number(worth),
            "previous_total": _number(_money_or_none(counted)),
            "currency": order.currency,
        },
        at=at,
        delivery=delivery,
    )


def _order_worth(payload: dict[str, Any]) -> Decimal | None:
    """What an order comes to after its edits and before its refunds.

    None when that cannot be told: a refund paid back in another currency with no
    amount in the shop's (older versions of the payload) could not be added back.
    """
    current = _money(payload.get("current_total_price"))
    if current is None:
        # Versions before the current_* fields: the total, which edits change.
        return _money(payload.get("total_price"))
    returned = Decimal("0")
    shop_currency = _text(payload.get("currency"), 3)
    for refund in map(_object, payload.get("refunds") or []):
        for paid in map(_object, refund.get("transactions") or []):
            # A pending refund is in the current total already; a failed one is not.
            if paid.get("kind") != "refund" or paid.get("status") not in (
                "success",
                "pending",
            ):
                continue
            amount, currency = _shop_money(paid)
            if currency not in ("", shop_currency):
                return None
            returned += amount
    return current + returned


def _money_or_none(value: Any) -> Decimal | None:
    try:
        return _money(value)
    except ShopifyPayloadError:
        return None


def _order_changes_store(
    payload: dict[str, Any],
    *,
    order: ShopOrder,
    profile: Profile,
    delivery: WebhookDelivery,
) -> tuple[list[Event | None], list[str]]:
    """Store the order's cancellation and refunds, each once; return them and notes.

    Every version of an order carries its refunds so far, so a refund missed on its
    own topic is stored from the next update of its order.
    """
    events, notes = [], []
    cancelled_at = _time(payload.get("cancelled_at"))
    if cancelled_at is not None:
        at, note = _arrival_bounded(cancelled_at, delivery, "cancellation")
        properties = {
            "order_id": order.shop_id,
            "reason": _text(payload.get("cancel_reason"), 100),
            "total": _number(order.total),
            "currency": order.currency,
        }
        events.append(
            _event_store(
                key=f"order-cancelled:{order.shop_id}",
                name=ORDER_CANCELLED,
                profile=profile,
                properties=properties,
                at=at,
                delivery=delivery,
            )
        )
        notes.append(note)
    for refund in payload.get("refunds") or []:
        event, note = _refund_store(
            _object(refund), order=order, profile=profile, delivery=delivery
        )
        events.append(event)
        notes.append(note)
    return events, notes


TEST_ORDER_NOTE = (
    "A test order (Shopify's test mode): kept, and counted in no figure, segment "
    "or flow."
)
NO_ADDRESS_REFUND_NOTE = "The refunded order has no usable email address."


def _waiting_refunds_apply(
    *, order: ShopOrder, profile: Profile | None
) -> list[Event | None]:
    """Apply the refunds of this order that arrived before it (RefundAwaitsOrder).

    A test order's, or one with no profile, are finished without counting.
    """
    # Few: only the refunds still waiting, and nothing else, are read.
    waiting = WebhookDelivery.objects.select_for_update(skip_locked=True).filter(
        source=SOURCE, topic="refunds/create", processed_at__isnull=True
    )
    events = []
    for refund in waiting:
        if str(refund.payload.get("order_id"))[:40] != order.shop_id:
            continue
        if order.is_test or profile is None:
            note = TEST_ORDER_NOTE if order.is_test else NO_ADDRESS_REFUND_NOTE
        else:
            payload, unread_note = _payload_readable(refund.payload, what="refund")
            event, note = _refund_store(
                payload, order=order, profile=profile, delivery=refund
            )
            note = " ".join(part for part in (note, unread_note) if part)
            events.append(event)
        WebhookDelivery.objects.filter(pk=refund.pk).update(
            processed_at=timezone.now(), error=note[:500]
        )
        delivery_counted(delivery=refund, error=note[:500])
    return events


def _awaits_customer(order: ShopOrder) -> bool:
    # An order kept without a profile joins its customer's when she gets an address.
    return order.profile_id is None and bool(order.customer_id) and not order.is_test


def _refund_apply(delivery: WebhookDelivery) -> Outcome:
    payload, unread_note = _payload_readable(delivery.payload, what="refund")
    order_id = payload.get("order_id")
    order = None
    if order_id is not None:
        order = ShopOrder.objects.filter(shop_id=str(order_id)[:40]).first()
    if order is None:
        # Kept unfinished: the order's own delivery applies it (or the sweep, once
        # the order is here), for the seven days the sweep tries.
        raise RefundAwaitsOrder(
            f"{AWAITS_ORDER}the refund is of order {order_id}, which Bespoke has not "
            "received yet: it is applied when the order arrives."
        )
    if order.is_test:
        return Outcome(note=TEST_ORDER_NOTE)
    if _awaits_customer(order):
        # Applied with the order when its customer gets an address
        # (_orders_waiting_join), or by the sweep.
        raise RefundAwaitsOrder(
            f"{AWAITS_ORDER}the refund is of order {order_id}, whose customer has no "
            "address yet: it is applied when the shop gives her one."
        )
    if order.profile is None:
        return Outcome(note=NO_ADDRESS_REFUND_NOTE)

    event, note = _refund_store(
        payload, order=order, profile=order.profile, delivery=delivery
    )
    note = " ".join(part for part in (note, unread_note) if part)
    return Outcome(event_ids=[event.pk] if event else [], note=note)


def _refund_store(
    refund: dict[str, Any],
    *,
    order: ShopOrder,
    profile: Profile,
    delivery: WebhookDelivery,
) -> tuple[Event | None, str]:
    """Store one refund as `Order Refunded` with the money its transactions returned.

    Only successful refund transactions count: a pending one is stored by the update
    of its order that says it succeeded.
    """
    refund_id = refund.get("id")
    if refund_id is None:
        return None, "A refund has no id."

    paid_back = [
        transaction
        for transaction in map(_object, refund.get("transactions") or [])
        if transaction.get("kind") == "refund"
        and transaction.get("status") == "success"
    ]
    if not paid_back:
        return None, (
            f"Refund {refund_id} returned no money (no successful refund "
            "transaction): lifetime value is unchanged."
        )

    # In the shop's currency where the transaction says it (a multi-currency shop
    # refunds in the currency the customer paid in), as the order's totals are.
    money = [_shop_money(transaction) for transaction in paid_back]
    amount = sum((value for value, _ in money), Decimal("0"))
    currencies = {currency for _, currency in money}
    at, note = _arrival_bounded(_time(refund.get("created_at")), delivery, "refund")
    if currencies - {"", order.currency}:
        note = " ".join(
            part
            for part in (
                note,
                f"Refund {refund_id} is in {', '.join(sorted(currencies - {''}))}, "
                f"not the order's {order.currency or 'currency'}: it lowers "
                "lifetime value only in BESPOKE_CURRENCY.",
            )
            if part
        )
    event = _event_store(
        key=f"refund:{refund_id}",
        name=ORDER_REFUNDED,
        profile=profile,
        properties={
            "order_id": order.shop_id,
            "refund_id": str(refund_id),
            "total": _number(amount),
            "currency": currencies.pop() if len(currencies) == 1 else order.currency,
            "note": _text(refund.get("note"), 500),
        },
        at=at,
        delivery=delivery,
    )
    return event, note


def _arrival_bounded(
    at: datetime | None, delivery: WebhookDelivery, what: str
) -> tuple[datetime, str]:
    """Return when something happened, no later than its delivery arrived, and a note.

    A shop's clock, or a date typed by hand, may put it years ahead: as of then it
    would be the last order and last seen until that day came.
    """
    if at is None:
        return delivery.received_at, ""
    if at <= delivery.received_at + CLOCK_SKEW_ALLOWED:
        return at, ""
    note = (
        f"The {what} is dated {at.isoformat()}, after it arrived: it is placed at "
        "its arrival."
    )
    return delivery.received_at, note


def _shop_money(transaction: dict[str, Any]) -> tuple[Decimal, str]:
    shop_money = _object(_object(transaction.get("amount_set")).get("shop_money"))
    if shop_money.get("amount") is not None:
        amount, currency = shop_money["amount"], shop_money.get("currency_code")
    else:
        amount, currency = transaction.get("amount"), transaction.get("currency")
    return _money(amount) or Decimal("0"), _text(currency, 3)


def _order_currency_note(order: ShopOrder) -> str:
    ours = settings.BESPOKE_CURRENCY.upper()
    if not order.currency or order.currency.upper() == ours:
        return ""
    return (
        f"The order is in {order.currency}, not {ours}, the currency lifetime value "
        "is kept in (BESPOKE_CURRENCY): it counts as an order but adds nothing to "
        "lifetime value or the average order."
    )


STALE_NOTE = (
    "An older version of the {what} than the one kept (by its updated_at): not "
    "applied, as deliveries may arrive out of order."
)


def _order_stale(payload: dict[str, Any]) -> bool:
    kept = ShopOrder.objects.filter(shop_id=str(payload["id"])[:40])
    return _older_than_kept(payload, kept.values_list("shop_updated_at", flat=True))


def _older_than_kept(payload: dict[str, Any], kept_times: QuerySet) -> bool:
    """Whether a delivery is an older version than the one kept (locked until commit)."""
    updated_at = _time(payload.get("updated_at"))
    if updated_at is None:
        return False
    kept = kept_times.select_for_update().first()
    return kept is not None and updated_at < kept


def _order_upsert(
    *, payload: dict[str, Any], profile: Profile | None, delivery: WebhookDelivery
) -> ShopOrder:
    # An older version arriving late never gets here (_order_stale).
    shop_id = str(payload["id"])[:40]
    updated_at = _time(payload.get("updated_at"))
    stored = ShopOrder.objects.select_for_update().filter(shop_id=shop_id).first()
    email = payload.get("email") or payload.get("contact_email")
    customer_email = _object(payload.get("customer")).get("email")
    if stored is not None and profile is None:
        profile, email = stored.profile, email or stored.email
    order, _ = ShopOrder.objects.update_or_create(
        shop_id=shop_id,
        defaults={
            "name": _text(payload.get("name"), 40),
            "profile": profile,
            "email": _text(email or customer_email, 254),
            "shop_updated_at": updated_at,
            "checkout_token": _text(payload.get("checkout_token"), 100),
            "financial_status": _text(payload.get("financial_status"), 40),
            "currency": _text(payload.get("currency"), 3),
            "subtotal": _money(payload.get("subtotal_price")),
            "discount": _money(payload.get("total_discounts")),
            "shipping": _order_shipping(payload),
            "tax": _money(payload.get("total_tax")),
            "total": _money(payload.get("total_price")),
            "discount_codes": _discount_codes(payload.get("discount_codes")),
            "line_items": [
                _line_item(line) for line in payload.get("line_items") or []
            ],
            "buyer_accepts_marketing": _flag(payload.get("buyer_accepts_marketing")),
            "placed_at": _time(
                payload.get("processed_at") or payload.get("created_at")
            ),
            "is_test": payload.get("test") is True,
            "customer_id": _customer_id(_object(payload.get("customer"))),
            "delivery": delivery,
        },
    )
    return order


def _order_shipping(payload: dict[str, Any]) -> Decimal | None:
    shop_money = _object(
        _object(payload.get("total_shipping_price_set")).get("shop_money")
    )
    if shop_money.get("amount") is not None:
        return _money(shop_money["amount"])
    return _lines_total(payload.get("shipping_lines") or [])


def _order_join_checkout(order: ShopOrder) -> None:
    if not order.checkout_token:
        return

    checkout = (
        ShopCheckout.objects.select_for_update()
        .filter(token=order.checkout_token)
        .first()
    )
    if checkout is None:
        return
    checkout.order_shop_id = order.shop_id
    checkout.completed_at = checkout.completed_at or order.placed_at
    checkout.save(update_fields=["order_shop_id", "completed_at"])


def _order_properties(payload: dict[str, Any], *, order: ShopOrder) -> dict[str, Any]:
    # Segment's e-commerce v2 shape, numbers as JSON numbers as the site sends
    # them; the exact amounts stay as decimals on the ShopOrder.
    return {
        "order_id": order.shop_id,
        "checkout_id": order.checkout_token,
        "order_name": order.name,
        "total": _number(order.total),
        "subtotal": _number(order.subtotal),
        # Segment's revenue leaves out shipping and tax, like the subtotal.
        "revenue": _number(order.subtotal),
        "shipping": _number(order.shipping),
        "tax": _number(order.tax),
        "discount": _number(order.discount),
        "coupon": ",".join(code["code"] for code in order.discount_codes),
        "currency": order.currency,
        "products": _products(payload.get("line_items")),
    }


# Events -------------------------------------------------------------------------


def _event_store(
    *,
    key: str,
    name: str,
    profile: Profile,
    properties: dict[str, Any],
    at: datetime,
    delivery: WebhookDelivery,
) -> Event | None:
    """Store a track event once under a deterministic messageId; None if known."""
    profile_hold(profile)
    return event_store_once(
        message_id=f"{SOURCE}:{key}"[:100],
        type=EventType.TRACK,
        event=name,
        profile=profile,
        properties=properties,
        context={
            "shopify": {
                "topic": delivery.topic,
                "shop_domain": delivery.shop_domain,
                "webhook_id": delivery.delivery_id,
                "api_version": delivery.api_version,
            }
        },
        source=SOURCE,
        timestamp=at,
        received_at=delivery.received_at,
    )


# Reading Shopify values ---------------------------------------------------------


def _text(value: Any, max_length: int) -> str:
    if value is None or isinstance(value, bool | dict | list):
        return ""
    return str(value).strip()[:max_length]


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


# Where the payloads carry the amounts, times and quantities Bespoke reads ("*": each
# item of a list). A value there that cannot be read is left out, and the rest kept.
AMOUNT_PATHS = (
    ("total_price",),
    ("current_total_price",),
    ("subtotal_price",),
    ("total_tax",),
    ("total_discounts",),
    ("total_spent",),
    ("total_shipping_price_set", "shop_money", "amount"),
    ("line_items", "*", "price"),
    ("shipping_lines", "*", "price"),
    ("transactions", "*", "amount"),
    ("transactions", "*", "amount_set", "shop_money", "amount"),
    ("refunds", "*", "transactions", "*", "amount"),
    ("refunds", "*", "transactions", "*", "amount_set", "shop_money", "amount"),
)
TIME_PATHS = (
    ("created_at",),
    ("updated_at",),
    ("processed_at",),
    ("completed_at",),
    ("cancelled_at",),
    ("refunds", "*", "created_at"),
    ("email_marketing_consent", "consent_updated_at"),
)
QUANTITY_PATHS = (("line_items", "*", "quantity"),)


def _payload_readable(
    payload: dict[str, Any], *, what: str
) -> tuple[dict[str, Any], str]:
    """Return the payload without the values it cannot read, and a note naming them.

    A Shopify payload is kept whole when it can be read; otherwise each value that
    cannot is left out (a line without its price, an order without its time, which
    is then placed at its arrival, a line without its quantity), as the tracking
    API keeps an order whose total it cannot read, and the note names each one.
    """
    notes = [
        f"{label}: {exc}"
        for paths, reader in _READERS
        for _, _, label, exc in _unreadable(payload, paths, reader)
    ]
    if not notes:
        return payload, ""

    kept = copy.deepcopy(payload)
    for paths, reader in _READERS:
        for container, key, _, _ in _unreadable(kept, paths, reader):
            container[key] = None
    without = "it" if len(notes) == 1 else "them"
    return kept, f"{'; '.join(notes)}: the {what} is kept without {without}."


def _unreadable(
    payload: dict[str, Any],
    paths: tuple[tuple[str, ...], ...],
    reader: Callable[[Any], Any],
) -> list[tuple[dict[str, Any], str, str, ShopifyPayloadError]]:
    """Each value at `paths` that `reader` refuses: its object, key, label and why."""
    found = []
    for path in paths:
        for container, key, label in _places(payload, path, ""):
            try:
                reader(container[key])
            except ShopifyPayloadError as exc:
                found.append((container, key, label, exc))
    return found


def _places(
    value: Any, path: tuple[str, ...], label: str
) -> list[tuple[dict[str, Any], str, str]]:
    # The (object, key, label) of each value present at `path` under `value`.
    step, rest = path[0], path[1:]
    if step == "*":
        items = value if isinstance(value, list) else []
        return [
            place
            for number, item in enumerate(items)
            for place in _places(item, rest, f"{label}[{number}]")
        ]
    if not isinstance(value, dict) or step not in value:
        return []
    named = f"{label}.{step}" if label else step
    if not rest:
        return [(value, step, named)]
    return _places(value[step], rest, named)


def _money(value: Any) -> Decimal | None:
    """Read a Shopify amount ("152.29") as a Decimal; None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ShopifyPayloadError(f"{value!r} is not an amount")

    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ShopifyPayloadError(f"{value!r} is not an amount") from exc
    if not amount.is_finite():
        raise ShopifyPayloadError(f"{value!r} is not an amount")
    # Orders and checkouts keep amounts in 14 digits with 2 decimals, rounded as
    # Django rounds them on saving: 999999999999.999 is 1,000,000,000,000.00.
    if abs(amount) < AMOUNT_LIMIT:
        amount = amount.quantize(CENT, rounding=ROUND_HALF_EVEN)
    if abs(amount) >= AMOUNT_LIMIT:
        raise ShopifyPayloadError(
            f"{value!r} is too large an amount (at most {AMOUNT_LIMIT - 1:,})"
        )
    return amount


def _number(value: Any) -> float | None:
    amount = value if isinstance(value, Decimal) else _money(value)
    return None if amount is None else float(amount)


def _time(value: Any) -> datetime | None:
    """Read a Shopify time (with the shop's UTC offset) as an aware UTC datetime."""
    if value is None or value == "":
        return None

    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise ShopifyPayloadError(f"{value!r} is not an ISO-8601 time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:
        raise ShopifyPayloadError(
            f"{value!r} is outside the years 1 to 9999 in UTC"
        ) from exc


def _lines_total(lines: list[Any]) -> Decimal:
    amounts = [_money(_object(line).get("price")) for line in lines]
    return sum((amount for amount in amounts if amount is not None), Decimal("0"))


def _discount_codes(value: Any) -> list[dict[str, Any]]:
    codes = value if isinstance(value, list) else []
    return [
        {
            "code": _text(code.get("code"), 100),
            "amount": _text(code.get("amount"), 40),
            "type": _text(code.get("type"), 40),
        }
        for code in codes
        if isinstance(code, dict) and code.get("code")
    ]


def _line_item(line: Any) -> dict[str, Any]:
    line = _object(line)
    return {
        "product_id": _text(line.get("product_id"), 40),
        "variant_id": _text(line.get("variant_id"), 40),
        "sku": _text(line.get("sku"), 100),
        "title": _text(line.get("title"), 255),
        "variant_title": _text(line.get("variant_title"), 255),
        "price": _text(line.get("price"), 40),
        "quantity": _quantity(line.get("quantity")),
    }


# A line's quantity is kept as a whole number up to this (a PostgreSQL integer).
QUANTITY_MAX = 2_147_483_647


def _quantity(value: Any) -> int | None:
    """Read a line's quantity (2, or "2" as some apps send it); None when absent."""
    if value is None or value == "":
        return None
    text = value.strip() if isinstance(value, str) else None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif text and text.isascii() and text.isdigit():
        number = int(text)
    else:
        raise ShopifyPayloadError(f"{value!r} is not a whole number of items")
    if not 0 <= number <= QUANTITY_MAX:
        raise ShopifyPayloadError(
            f"{value!r} is not a number of items from 0 to {QUANTITY_MAX:,}"
        )
    return number


# What _payload_readable checks: the values at each group of paths, and their reader.
_READERS: tuple[tuple[tuple[tuple[str, ...], ...], Callable[[Any], Any]], ...] = (
    (AMOUNT_PATHS, _money),
    (TIME_PATHS, _time),
    (QUANTITY_PATHS, _quantity),
)


def _products(value: Any) -> list[dict[str, Any]]:
    lines = value if isinstance(value, list) else []
    products = []
    for line in map(_line_item, lines):
        products.append(
            {
                "product_id": line["product_id"],
                "sku": line["sku"],
                "name": line["title"],
                "variant": line["variant_title"],
                "price": _number(line["price"]),
                "quantity": line["quantity"],
            }
        )
    return products


Handler = Callable[[WebhookDelivery], Outcome]

TOPIC_HANDLERS: dict[str, Handler] = {
    "orders/create": _order_apply,
    "orders/updated": _order_apply,
    "orders/paid": _order_apply,
    "orders/cancelled": _order_apply,
    "refunds/create": _refund_apply,
    "checkouts/create": _checkout_apply,
    "checkouts/update": _checkout_apply,
    "customers/create": _customer_apply,
    "customers/update": _customer_apply,
    "customers_email_marketing_consent/update": _consent_update_apply,
    "customers_marketing_consent/update": _consent_update_apply,
}
