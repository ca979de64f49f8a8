"""The Segment-compatible tracking API: one view per call type, plus batch."""

import base64
import logging
from typing import Any

import psycopg
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from profiles.ingestion import (
    MAX_BATCH_BYTES,
    MAX_CALL_BYTES,
    RequestRefused,
    body_read,
    events_ingest,
    payload_parse,
    write_key_revoked,
    write_key_source,
)
from profiles.refusals import SOURCE_NO_KEY, request_refused_count

logger = logging.getLogger(__name__)


def _error(*, status_code: int, code: str, message: str) -> Response:
    # segment-analytics-python reads exactly these two keys; without them it retries.
    return Response({"code": code, "message": message}, status=status_code)


def _basic_auth_key(request: Request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "basic" or not credentials:
        return None

    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except ValueError:
        # Not base64 (binascii.Error), not ASCII to begin with, or not UTF-8 once
        # decoded: no key, which gets the JSON 401.
        return None
    # The key is the username; the password is empty and the colon may be missing.
    return decoded.partition(":")[0] or None


class TrackingApi(APIView):
    """Accept one Segment call (or a batch), authenticated by a write key.

    The body is read by hand rather than through DRF's parsers, so that the size
    limits hold before anything is decompressed or parsed in full.
    """

    authentication_classes: list = []
    permission_classes: list = []
    parser_classes: list = []
    call_type: str | None = None

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        received_at = timezone.now()
        # Whose feed a refusal is counted against: known once the key is read.
        self.refused_source = SOURCE_NO_KEY
        try:
            payload, source = self._authenticated_payload(request)
            result = events_ingest(
                payload=payload,
                path_type=self.call_type,
                source=source,
                received_at=received_at,
            )
        except RequestRefused as exc:
            logger.info(
                "Tracking request refused: %s",
                exc.code,
                extra={"path": request.path, "status": exc.status},
            )
            request_refused_count(
                source=self.refused_source,
                code=exc.code,
                message=exc.message,
                at=received_at,
            )
            return _error(status_code=exc.status, code=exc.code, message=exc.message)

        return Response(result.as_dict(), status=status.HTTP_200_OK)

    def handle_exception(self, exc: Exception) -> Response:
        # Clients read JSON with code and message on every answer; a database that is
        # briefly unavailable (a lock, a restart) is a 503 they retry, not HTML. The
        # insert's own cursor raises the driver's errors, not Django's.
        if isinstance(exc, DatabaseError | psycopg.Error):
            logger.error("Tracking request failed on the database", exc_info=exc)
            response = _error(
                status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                code="unavailable",
                message="The event store is briefly unavailable; retry the request.",
            )
            response["Retry-After"] = "5"
            return response
        return super().handle_exception(exc)

    def http_method_not_allowed(
        self, request: Request, *args: Any, **kwargs: Any
    ) -> Response:
        return _error(
            status_code=status.HTTP_405_METHOD_NOT_ALLOWED,
            code="method_not_allowed",
            message="The tracking API accepts POST only.",
        )

    def _authenticated_payload(self, request: Request) -> tuple[dict[str, Any], str]:
        # A Basic key is checked before the body is read; a body key only after.
        header_key = _basic_auth_key(request)
        if header_key is not None:
            source = self._source_for(header_key)

        limit = MAX_CALL_BYTES if self.call_type else MAX_BATCH_BYTES
        body = body_read(
            stream=request,
            content_encoding=request.META.get("HTTP_CONTENT_ENCODING", ""),
            limit=limit,
        )
        payload = payload_parse(body=body, limit=limit)

        if header_key is None:
            body_key = payload.get("writeKey")
            source = self._source_for(body_key if isinstance(body_key, str) else None)
        return payload, source

    def _source_for(self, key: str | None) -> str:
        source = write_key_source(key=key)
        if source is not None:
            self.refused_source = source
            return source

        message = "A valid write key is required (HTTP Basic or 'writeKey')."
        revoked = write_key_revoked(key=key)
        if revoked is not None:
            name, revoked_at = revoked
            # Counted against the key's own feed, which then shows why it stopped.
            self.refused_source = f"segment:{name}"[:100]
            # The sender holds the key already; saying it was revoked tells
            # whoever runs the feed what to fix.
            message = (
                f"This write key was revoked on {revoked_at:%Y-%m-%d %H:%M} UTC; "
                "make a new one on the Sources page."
            )
        raise RequestRefused(
            status=status.HTTP_401_UNAUTHORIZED,
            code="invalid_write_key",
            message=message,
        )


class IdentifyApi(TrackingApi):
    call_type = "identify"


class TrackApi(TrackingApi):
    call_type = "track"


class PageApi(TrackingApi):
    call_type = "page"


class ScreenApi(TrackingApi):
    call_type = "screen"


class GroupApi(TrackingApi):
    call_type = "group"


class AliasApi(TrackingApi):
    call_type = "alias"


class BatchApi(TrackingApi):
    call_type = None


@csrf_exempt  # any method, so a client's POST to a wrong path gets JSON, not a 403
def unknown_path(request: HttpRequest, path: str) -> JsonResponse:
    """Answer a path the tracking API does not have in JSON, as clients expect."""
    return JsonResponse(
        {
            "code": "not_found",
            "message": (
                f"There is no /v1/{path}: use /v1/identify, track, page, screen, "
                "group, alias or batch."
            ),
        },
        status=404,
    )
