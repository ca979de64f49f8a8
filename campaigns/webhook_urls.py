"""The ESPs' tracking webhooks: anymail's views, each refusal counted for the Sources page.

Anymail checks each request (the shared secret, the ESP's signature) and answers a
failed check itself, before Bespoke sees an event. Wrapping its views counts those
refusals against the "esp" source, as a refused Shopify delivery is counted, so a
secret changed on one side only shows on the Sources page at once.
"""

import json
from functools import wraps
from typing import Any

from anymail import urls as anymail_urls
from anymail.exceptions import AnymailWebhookValidationFailure
from django.core.exceptions import ImproperlyConfigured, RequestDataTooBig
from django.db import DataError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern

from campaigns.tracking import SOURCE, EspWebhookUnconfigured
from profiles.refusals import request_refused_count

app_name = anymail_urls.app_name


def _refusals_counted(view: Any) -> Any:
    @wraps(view)
    def counted(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except EspWebhookUnconfigured as exc:
            _count(request, "unconfigured", exc)
            raise
        except RequestDataTooBig as exc:
            _count(request, "request_too_large", exc)
            return JsonResponse(
                {"code": "request_too_large", "message": str(exc)}, status=413
            )
        except AnymailWebhookValidationFailure as exc:
            _count(request, "validation_failed", exc)
            raise
        except ImproperlyConfigured as exc:
            # A setting the ESP's check needs is missing (Mailgun's signing key).
            _count(request, "esp_setting_missing", exc)
            raise
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            # A signed body that is not JSON: anymail parses it and fails.
            _count(request, "invalid_json", exc)
            return JsonResponse(
                {"code": "invalid_json", "message": f"The body is not JSON: {exc}"},
                status=400,
            )
        except (
            TypeError,
            KeyError,
            AttributeError,
            IndexError,
            ValueError,
            OverflowError,
            RecursionError,
            UnicodeError,
            DataError,
        ) as exc:
            # JSON, but not in the ESP's shape (an object where SendGrid posts a
            # list, a time past the calendar, nesting deeper than Python reads):
            # anymail's parser trips on it, or the database refuses a value.
            # Bespoke's own receiver only stores, so what fails here is the body.
            _count(request, "invalid_payload", exc)
            return JsonResponse(
                {
                    "code": "invalid_payload",
                    "message": "The body is not in this ESP's event format: "
                    f"{type(exc).__name__}: {exc}",
                },
                status=400,
            )

    return counted


def _count(request: HttpRequest, code: str, exc: Exception) -> None:
    # By ESP too, as the path names it: a secret wrong at one ESP shows as its own.
    esp = request.path.rstrip("/").split("/")[-2] if request.path.count("/") > 2 else ""
    request_refused_count(
        source=SOURCE,
        code=f"{code}:{esp}" if esp else code,
        message=f"{request.path}: {exc}"[:500],
    )


urlpatterns = [
    URLPattern(
        pattern.pattern,
        _refusals_counted(pattern.callback),
        pattern.default_args,
        pattern.name,
    )
    for pattern in anymail_urls.urlpatterns
]
