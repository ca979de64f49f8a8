"""Webhook endpoints: the shop's deliveries in, verified before anything is read."""

import json
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from profiles.ingestion import json_read_exact
from profiles.models import WebhookDelivery
from profiles.refusals import request_refused_count
from profiles.shopify import (
    SOURCE as SHOPIFY_SOURCE,
)
from profiles.shopify import (
    shopify_delivery_process,
    shopify_delivery_store,
    shopify_signature_valid,
)
from profiles.tasks import events_process_enqueue, shopify_deliveries_retry_soon

logger = logging.getLogger(__name__)

# Shopify's largest payloads (orders with hundreds of lines) stay well under this.
SHOPIFY_MAX_BODY_BYTES = 5 * 1024 * 1024
# What WebhookDelivery.delivery_id holds.
WEBHOOK_ID_MAX_CHARS = 255


def _error(*, status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"code": code, "message": message}, status=status)


def _refused(*, status: int, code: str, message: str) -> JsonResponse:
    # A delivery refused here is stored nowhere: its count on the Sources page is
    # what shows a shop whose secret changed.
    request_refused_count(source=SHOPIFY_SOURCE, code=code, message=message)
    return _error(status=status, code=code, message=message)


@csrf_exempt
def shopify_webhook(request: HttpRequest) -> JsonResponse:
    """Verify, store once and apply one Shopify delivery, whatever its topic.

    Once a delivery is stored the answer is 200, even if applying it failed: the
    sweep finishes it, and Shopify would only send the same webhook id again.
    """
    if request.method != "POST":
        response = _error(status=405, code="method_not_allowed", message="Use POST.")
        response["Allow"] = "POST"
        return response

    body = _body_read(request)
    if body is None:
        return _refused(
            status=413, code="request_too_large", message="The body is too large."
        )
    if not settings.BESPOKE_SHOPIFY_WEBHOOK_SECRETS:
        logger.warning(
            "Shopify webhook refused: no secret is set (BESPOKE_SHOPIFY_WEBHOOK_SECRETS)"
        )
        return _refused(
            status=401,
            code="invalid_signature",
            message="No Shopify webhook secret is set here, so no signature can match.",
        )
    if not shopify_signature_valid(
        body=body, signature=request.headers.get("X-Shopify-Hmac-Sha256")
    ):
        logger.warning(
            "Shopify webhook refused: bad signature",
            extra={"shop_domain": request.headers.get("X-Shopify-Shop-Domain", "")},
        )
        return _refused(
            status=401,
            code="invalid_signature",
            message="X-Shopify-Hmac-Sha256 does not match the body.",
        )

    headers, refusal = _headers_read(request)
    if refusal is not None:
        return refusal
    payload = _payload_parse(body)
    if not isinstance(payload, dict):
        return _refused(
            status=400,
            code="invalid_json",
            message=(
                "The body is JSON, but not an object: Shopify sends each delivery as "
                "one JSON object."
                if payload is not None
                else "The body is not JSON that can be stored: it does not parse, or "
                "holds NaN, Infinity, a number past 1e308, or text with NUL or lone "
                "surrogate characters."
            ),
        )

    return _delivery_accept(headers=headers, payload=payload)


def _body_read(request: HttpRequest) -> bytes | None:
    # The exact bytes, unparsed: the signature is over them and nothing else.
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > SHOPIFY_MAX_BODY_BYTES:
        return None

    body = request.read(SHOPIFY_MAX_BODY_BYTES + 1)
    return None if len(body) > SHOPIFY_MAX_BODY_BYTES else body


def _headers_read(request: HttpRequest) -> tuple[dict[str, str], JsonResponse | None]:
    headers = {
        "delivery_id": request.headers.get("X-Shopify-Webhook-Id", "").strip(),
        "topic": request.headers.get("X-Shopify-Topic", "").strip(),
        "shop_domain": request.headers.get("X-Shopify-Shop-Domain", "").strip(),
        "api_version": request.headers.get("X-Shopify-API-Version", "").strip(),
    }
    if not headers["delivery_id"]:
        return headers, _refused(
            status=400,
            code="missing_webhook_id",
            message="X-Shopify-Webhook-Id is required.",
        )
    if len(headers["delivery_id"]) > WEBHOOK_ID_MAX_CHARS:
        # Cut short, two different ids could be taken for one delivery repeated.
        return headers, _refused(
            status=400,
            code="webhook_id_too_long",
            message=(
                f"X-Shopify-Webhook-Id is longer than {WEBHOOK_ID_MAX_CHARS} "
                "characters; Shopify's ids are far shorter."
            ),
        )
    if not headers["topic"]:
        return headers, _refused(
            status=400, code="missing_topic", message="X-Shopify-Topic is required."
        )
    return headers, None


def _payload_parse(body: bytes) -> Any:
    """Return the body's JSON value, or None if it is none the database can keep."""
    try:
        payload = json_read_exact(body)
        # Python keeps 1e999 (infinity), lone surrogates and NUL in strings: none
        # of them is JSON PostgreSQL's jsonb (or SQLite's) stores.
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (UnicodeError, ValueError, RecursionError):
        return None
    if "\\u0000" in text:
        return None
    return payload


def _delivery_accept(
    *, headers: dict[str, str], payload: dict[str, Any]
) -> JsonResponse:
    # Stored and committed on its own first, so a failure while applying it
    # cannot lose the delivery.
    with transaction.atomic():
        delivery, created = shopify_delivery_store(
            payload=payload, received_at=timezone.now(), **headers
        )
    if not created:
        logger.info(
            "Shopify delivery repeated; already stored",
            extra={"delivery": delivery.pk, "topic": delivery.topic},
        )
        return JsonResponse({"success": True, "duplicate": True})

    event_ids = shopify_delivery_process(delivery_id=delivery.pk)
    if event_ids:
        transaction.on_commit(events_process_enqueue)
    elif not WebhookDelivery.objects.filter(
        pk=delivery.pk, processed_at__isnull=False
    ).exists():
        # Not applied (most often a profile another worker held past the lock
        # timeout): try again in a few seconds rather than at the next sweep.
        shopify_deliveries_retry_soon()
    return JsonResponse({"success": True, "duplicate": False})
