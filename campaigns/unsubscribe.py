"""Unsubscribe through the signed link in a campaign email."""

import logging

from django.core import signing
from django.utils import timezone

from campaigns.models import Message
from campaigns.sending import UNSUBSCRIBE_SALT
from profiles.models import SubscriptionStatus
from profiles.services import consent_record

logger = logging.getLogger(__name__)


class UnsubscribeLinkInvalid(ValueError):
    """The token is not one Bespoke signed."""


def message_from_token(token: str) -> Message:
    """Return the message a signed unsubscribe token names; raise if it is forged."""
    data = signing.loads(token, salt=UNSUBSCRIBE_SALT)
    if not isinstance(data, dict) or "m" not in data:
        raise UnsubscribeLinkInvalid(token)
    return Message.objects.select_related("profile", "campaign").get(pk=data["m"])


def message_unsubscribe(*, message: Message, ip_address: str | None) -> bool:
    """Unsubscribe the message's recipient; return False if they already were."""
    profile = message.profile
    if profile.subscription_status == SubscriptionStatus.UNSUBSCRIBED:
        return False

    consent_record(
        profile=profile,
        status=SubscriptionStatus.UNSUBSCRIBED,
        source="unsubscribe_link",
        occurred_at=timezone.now(),
        ip_address=ip_address,
        wording=f"Unsubscribed through the link in '{message.campaign.name}'.",
        evidence={"campaign_id": message.campaign_id, "message_id": message.pk},
    )
    logger.info(
        "Profile unsubscribed by link",
        extra={"profile_id": profile.pk, "campaign_id": message.campaign_id},
    )
    return True
