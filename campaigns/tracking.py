"""ESP tracking webhooks: what the ESP saw happen to a message, applied to the person.

django-anymail's tracking views (`/anymail/<esp>/tracking/`) check the request (the
shared Basic-auth secret, and the ESP's own signature where it has one) and turn
each ESP's format into one AnymailTrackingEvent per event. Bespoke receives those
through anymail's `tracking` signal and keeps each one first, once per (ESP,
event id), committed before anything acts on it. A worker then applies them, a
batch's at once a second or two later, each in one transaction that also marks it
processed; a failure leaves one unprocessed with its error, for the beat sweep to
finish. Because a kept event id is never applied twice, a replayed request changes
nothing.

What each event type does to the person:

- delivered, opened, clicked: a track event (`Email Delivered`, `Email Opened`,
  `Email Link Clicked`, Segment's email names), processed like the site's, so the
  last open and click and the engagement score follow. A machine open (SendGrid's
  `sg_machine_open`) is kept with `machine_open: true`, which those figures skip.
- bounced (a permanent failure): the address goes on the suppression list as a hard
  bounce, and an `Email Bounced` event says why.
- complained: the address goes on the suppression list as a complaint, with an
  `Email Marked as Spam` event.
- unsubscribed: an unsubscribe consent record with the ESP as its source (an
  unsubscribe from one of the ESP's groups too: Bespoke has one marketing list).
- anything else (queued, deferred, rejected, ...): kept and noted; nothing changes.
  A message the ESP dropped (`rejected`) says nothing new about the address.

The person is the profile of the message Bespoke sent (its `message_id` metadata,
checked against the recipient), else the profile that has the recipient's address.
"""

import hashlib
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from anymail.exceptions import AnymailWebhookValidationFailure
from anymail.signals import AnymailTrackingEvent
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from campaigns.models import Campaign, Message
from profiles.emails import InvalidEmail, email_normalize
from profiles.models import (
    Event,
    EventType,
    Profile,
    SubscriptionStatus,
    SuppressionReason,
    WebhookDelivery,
)
from profiles.refusals import SOURCE_ESP
from profiles.services import (
    CLOCK_SKEW_ALLOWED,
    consent_record,
    event_store_once,
    profile_by_email_key,
    profile_hold,
    suppression_add,
)
from profiles.source_counts import delivery_counted

logger = logging.getLogger(__name__)

# The Sources page's name for ESP webhooks; each ESP's events and deliveries carry
# it with the ESP's name: "esp:sendgrid", "esp:mailgun".
SOURCE = SOURCE_ESP
SOURCE_PREFIX = f"{SOURCE}:"
EVENT_NAMES = {
    "delivered": "Email Delivered",
    "opened": "Email Opened",
    "clicked": "Email Link Clicked",
    "bounced": "Email Bounced",
    "complained": "Email Marked as Spam",
}
SUPPRESSING = {
    "bounced": SuppressionReason.HARD_BOUNCE,
    "complained": SuppressionReason.COMPLAINT,
}
# The Message field each event type dates, the first time it happens.
MESSAGE_FIELDS = {
    "delivered": "delivered_at",
    "opened": "opened_at",
    "clicked": "clicked_at",
    "bounced": "bounced_at",
    "complained": "complained_at",
    "unsubscribed": "unsubscribed_at",
}
UNSUBSCRIBE_WORDING = (
    "Unsubscribed through the ESP ({esp}): its own unsubscribe link or page, or a "
    "group unsubscribe; the wording the person saw is the ESP's."
)
TEXT_LIMIT = 1000
# WebhookDelivery.delivery_id's length.
DELIVERY_ID_CHARS = 255
# What no PostgreSQL text holds: NUL, and half a character.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Longer digits are no message's primary key (a bigint), whoever wrote them.
MESSAGE_PK_DIGITS = 18
# A batch's events are applied this long after its first arrived, by one sweep.
APPLY_AFTER_SECONDS = 2
APPLY_QUEUED_KEY = "bespoke:esp-events-sweep-queued"
# An event a worker could not apply is tried again by the sweep this long.
SWEEP_MAX_AGE = timedelta(days=7)


class EspWebhookUnconfigured(AnymailWebhookValidationFailure):
    """No shared webhook secret is set: anyone could post bounces and unsubscribes."""


@dataclass
class Outcome:
    event_id: int | None = None
    note: str = ""


def esp_tracking_receive(
    sender: Any, event: AnymailTrackingEvent, esp_name: str, **_: Any
) -> None:
    """Keep one tracking event from anymail's views for a worker to apply (the receiver)."""
    if not settings.ANYMAIL.get("WEBHOOK_SECRET"):
        # Anymail only warns; Bespoke refuses (400), as it refuses an unsigned shop.
        raise EspWebhookUnconfigured(
            "ANYMAIL_WEBHOOK_SECRET is not set, so ESP tracking webhooks are refused: "
            "set it to the user:password the ESP's webhook URL carries."
        )

    with transaction.atomic():
        delivery, created = esp_event_store(event=event, esp_name=esp_name)
    if not created:
        logger.info("ESP event repeated; already kept", extra={"delivery": delivery.pk})
        return

    # Applied by a worker: an ESP posts up to thousands of events in one request,
    # and must be answered in seconds. The first event of a batch queues one sweep.
    _apply_soon()


def _apply_soon() -> None:
    if not cache.add(APPLY_QUEUED_KEY, True, timeout=APPLY_AFTER_SECONDS):
        return
    from campaigns.tasks import esp_events_sweep_task

    try:
        esp_events_sweep_task.apply_async(countdown=APPLY_AFTER_SECONDS)
    except Exception:
        # The events are kept unapplied: the beat's sweep applies them.
        logger.warning("Could not queue the ESP events' sweep", exc_info=True)


def esp_event_store(
    *, event: AnymailTrackingEvent, esp_name: str
) -> tuple[WebhookDelivery, bool]:
    """Keep a tracking event once by its ESP's event id; return it and whether it is new."""
    payload = esp_event_payload(event)
    # An ESP that gives no event id (anymail says None: Brevo, Mailjet) is kept by
    # what it says, the clicked link included.
    event_id = _storable(str(event.event_id or "")) or "|".join(
        str(payload[name])
        for name in ("event_type", "message_id", "recipient", "timestamp", "click_url")
    )
    return WebhookDelivery.objects.get_or_create(
        source=f"{SOURCE_PREFIX}{esp_slug(esp_name)}"[:40],
        delivery_id=_key_fitted(event_id, DELIVERY_ID_CHARS),
        defaults={
            "topic": str(event.event_type)[:100],
            "payload": payload,
            "received_at": timezone.now(),
        },
    )


def esp_slug(esp_name: str) -> str:
    """Anymail's ESP name as a source word: "SendGrid" sendgrid, "Amazon SES" amazon_ses."""
    return re.sub(r"[^a-z0-9]+", "_", esp_name.lower()).strip("_")


def _storable(value: Any) -> Any:
    # PostgreSQL keeps no NUL in text or JSON, nor half a character: one such in
    # a user agent would otherwise refuse the whole batch on every retry.
    if isinstance(value, str):
        return UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        # NaN and infinity are no JSON PostgreSQL keeps: kept as their words.
        return str(value)
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(item) for item in value]
    return value


def esp_event_payload(event: AnymailTrackingEvent) -> dict[str, Any]:
    """What Bespoke keeps of a normalized event: JSON, and the ESP's own raw form."""
    esp_event = event.esp_event
    raw = esp_event if isinstance(esp_event, dict | list) else None
    if raw is None and hasattr(esp_event, "lists"):
        raw = dict(esp_event.lists())  # a Mailgun legacy form post
    tags = event.tags
    return _storable(
        {
            "event_type": event.event_type,
            "timestamp": event.timestamp.isoformat() if event.timestamp else None,
            "message_id": _text(event.message_id),
            "recipient": _text(event.recipient),
            "reject_reason": event.reject_reason,
            "description": _text(event.description),
            "mta_response": _text(event.mta_response),
            "click_url": _text(event.click_url),
            "user_agent": _text(event.user_agent),
            # A SendGrid category sent as one string arrives as a string.
            "tags": [tags] if isinstance(tags, str) else list(tags or []),
            "metadata": dict(event.metadata or {}),
            "esp_event": raw,
        }
    )


def esp_event_process(*, delivery_id: int) -> bool:
    """Apply a kept ESP event once; return whether it stored an event to process.

    An event already processed, or held by another worker, is left alone. If
    applying it raises, its writes are rolled back and the error is kept, for the
    sweep to try again.
    """
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .filter(pk=delivery_id, processed_at__isnull=True)
            .first()
        )
        if delivery is None:
            return False

        try:
            with transaction.atomic():
                outcome = _apply(delivery)
        except Exception as exc:
            logger.exception(
                "ESP event processing failed", extra={"delivery": delivery.pk}
            )
            WebhookDelivery.objects.filter(pk=delivery.pk).update(
                error=f"{type(exc).__name__}: {exc}"[:500]
            )
            return False

        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            processed_at=timezone.now(), error=outcome.note[:500]
        )
        delivery_counted(delivery=delivery, error=outcome.note[:500])
    return outcome.event_id is not None


def esp_events_process_pending(*, limit: int) -> tuple[int, int, int]:
    """Apply up to `limit` unfinished ESP events, oldest first.

    Return how many were tried, how many are now finished, and how many stored an
    event for event processing.
    """
    pending = WebhookDelivery.objects.filter(
        source__startswith=SOURCE_PREFIX,
        processed_at__isnull=True,
        received_at__gte=timezone.now() - SWEEP_MAX_AGE,
    ).order_by("received_at", "id")
    delivery_ids = list(pending.values_list("id", flat=True)[:limit])
    stored = sum(esp_event_process(delivery_id=pk) for pk in delivery_ids)
    finished = WebhookDelivery.objects.filter(
        pk__in=delivery_ids, processed_at__isnull=False
    ).count()
    return len(delivery_ids), finished, stored


def _apply(delivery: WebhookDelivery) -> Outcome:
    payload = delivery.payload
    kind = payload.get("event_type")
    esp = delivery.source.removeprefix(SOURCE_PREFIX)
    if kind not in (*EVENT_NAMES, "unsubscribed"):
        return Outcome(note=_untouched_note(kind, payload))
    if kind == "bounced" and _is_blocked(payload):
        return Outcome(note=BLOCKED_NOTE)

    message = _message_for(payload)
    if message is not None and not (kind == "opened" and _machine_open(payload)):
        _message_mark(message, kind=kind, at=_happened_at(delivery))
    profile = message.profile if message else _profile_for(payload.get("recipient"))
    if kind in SUPPRESSING:
        # The address is what bounced or complained, whether or not a profile has it.
        key = _address_key(payload.get("recipient"))
        if key is None:
            return Outcome(note="The event names no usable recipient address.")
        suppression_add(email_key=key, reason=SUPPRESSING[kind], source=delivery.source)
        if profile is None:
            return Outcome(note="The address is suppressed; no profile has it.")
    if profile is None:
        return Outcome(note="No profile has the recipient's address.")

    if kind == "unsubscribed":
        _unsubscribe(profile, delivery=delivery, esp=esp, message=message)
        return Outcome()

    event = _event_store(
        delivery=delivery, profile=profile, message=message, name=EVENT_NAMES[kind]
    )
    return Outcome(event_id=event.pk if event else None)


BLOCKED_NOTE = (
    "The receiving server blocked the message for now (SendGrid's 'blocked': a "
    "reputation or content refusal, not a bad address): nothing changes, as for a "
    "deferral."
)


def _is_blocked(payload: dict[str, Any]) -> bool:
    esp_event = payload.get("esp_event")
    return isinstance(esp_event, dict) and esp_event.get("type") == "blocked"


def _untouched_note(kind: Any, payload: dict[str, Any]) -> str:
    if kind == "rejected":
        return (
            "The ESP dropped the message "
            f"({payload.get('reject_reason') or 'no reason given'}): it says nothing "
            "new about the address, so nothing changes."
        )
    return f"The ESP's {kind!s} event changes nothing in Bespoke; it is kept."


def _message_for(payload: dict[str, Any]) -> Message | None:
    """The message Bespoke sent that the event is about, if it is one of Bespoke's."""
    messages = Message.objects.select_related("profile", "campaign")
    ours = str(payload.get("metadata", {}).get("message_id", ""))
    message = None
    if ours.isascii() and ours.isdigit() and len(ours) <= MESSAGE_PK_DIGITS:
        message = messages.filter(pk=int(ours)).first()
    if message is None and payload.get("message_id"):
        message = messages.filter(esp_message_id=payload["message_id"]).first()
    # Metadata is the sender's to write; the recipient must be the message's, as
    # sent (the person may have another address since, or been merged).
    key = _address_key(payload.get("recipient"))
    if message is None or key is None:
        return None
    sent_to = message.to_email or message.profile.email
    return message if _address_key(sent_to) == key else None


def _message_mark(message: Message, *, kind: str, at: datetime) -> None:
    # The first time counts; a click says the message was opened, whatever the
    # pixel did (images off).
    fields = [MESSAGE_FIELDS[kind], *(["opened_at"] if kind == "clicked" else [])]
    for name in fields:
        Message.objects.filter(pk=message.pk, **{f"{name}__isnull": True}).update(
            **{name: at}
        )
        Message.objects.filter(pk=message.pk, **{f"{name}__gt": at}).update(
            **{name: at}
        )


def _profile_for(recipient: Any) -> Profile | None:
    key = _address_key(recipient)
    return profile_by_email_key(key) if key else None


def _address_key(raw: Any) -> str | None:
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return email_normalize(raw).key
    except InvalidEmail:
        return None


def _unsubscribe(
    profile: Profile, *, delivery: WebhookDelivery, esp: str, message: Message | None
) -> None:
    payload = delivery.payload
    esp_event = payload.get("esp_event") or {}
    group = esp_event.get("asm_group_id") if isinstance(esp_event, dict) else None
    evidence = {
        "esp": esp,
        "esp_event_id": delivery.delivery_id,
        "esp_message_id": payload.get("message_id", ""),
        "campaign_id": message.campaign_id if message else None,
        "message_id": message.pk if message else None,
    }
    if group is not None:
        evidence["esp_group_id"] = group
    consent_record(
        profile=profile,
        status=SubscriptionStatus.UNSUBSCRIBED,
        source=delivery.source,
        occurred_at=_happened_at(delivery),
        wording=UNSUBSCRIBE_WORDING.format(esp=esp),
        evidence=evidence,
    )


def _event_store(
    *,
    delivery: WebhookDelivery,
    profile: Profile,
    message: Message | None,
    name: str,
) -> Event | None:
    """Store one track event under a messageId made of the ESP's event id."""
    payload = delivery.payload
    metadata = payload.get("metadata") or {}
    properties = {
        "campaign_id": (
            message.campaign.slug if message else _campaign_named(metadata)
        ),
        "email_id": payload.get("message_id", ""),
        "esp": delivery.source.removeprefix(SOURCE_PREFIX),
    }
    if payload.get("click_url"):
        properties["link_url"] = payload["click_url"]
    if payload.get("event_type") == "opened" and _machine_open(payload):
        properties["machine_open"] = True
    if payload.get("event_type") == "bounced":
        properties["reason"] = payload.get("mta_response") or payload.get(
            "description", ""
        )
    if metadata.get("checkout_token"):
        properties["checkout_id"] = str(metadata["checkout_token"])
    profile_hold(profile)
    return event_store_once(
        message_id=_key_fitted(f"{delivery.source}:{delivery.delivery_id}", 100),
        type=EventType.TRACK,
        event=name,
        profile=profile,
        properties=properties,
        context=(
            {"user_agent": payload.get("user_agent", "")}
            if payload.get("user_agent")
            else {}
        ),
        source=delivery.source,
        timestamp=_happened_at(delivery),
        received_at=delivery.received_at,
    )


def _campaign_named(metadata: dict[str, Any]) -> str:
    # Bespoke's own sends name their campaign by its id: the timeline names it by
    # its slug, as for a matched message. Mail sent elsewhere keeps its own name.
    named = str(metadata.get("campaign_id", ""))
    if named.isascii() and named.isdigit() and len(named) <= MESSAGE_PK_DIGITS:
        slug = Campaign.objects.filter(pk=int(named)).values_list("slug", flat=True)
        return slug.first() or named
    return named


def _key_fitted(key: str, limit: int) -> str:
    # Cut, two long keys sharing their start (an id and a time) would be one.
    if len(key) <= limit:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _machine_open(payload: dict[str, Any]) -> bool:
    # Anymail passes SendGrid's flag through in metadata (it does not know it).
    esp_event = payload.get("esp_event")
    flags = [(payload.get("metadata") or {}).get("sg_machine_open")]
    if isinstance(esp_event, dict):
        flags.append(esp_event.get("sg_machine_open"))
    return any(flag is True or flag == "true" for flag in flags)


def _happened_at(delivery: WebhookDelivery) -> datetime:
    # The ESP's clock, no later than the event arrived.
    raw = delivery.payload.get("timestamp")
    at = datetime.fromisoformat(raw) if raw else None
    if at is None or at > delivery.received_at + CLOCK_SKEW_ALLOWED:
        return delivery.received_at
    return at


def _text(value: Any) -> str:
    return "" if value is None else str(value)[:TEXT_LIMIT]
