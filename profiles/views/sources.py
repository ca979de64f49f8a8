"""Marketer pages about data sources: tracking write keys and ingestion health."""

import logging

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from profiles.access import staff_required
from profiles.health import BACKLOG_WARNING_SECONDS, sources_health
from profiles.importing.runs import IMPORT_STUCK_AFTER_SECONDS
from profiles.keys import (
    write_key_create,
    write_key_masked,
    write_key_name_clean,
    write_key_name_refusal,
    write_key_revoke,
)
from profiles.models import WriteKey

logger = logging.getLogger(__name__)

# The id of a key created by this session, shown in full on the next page load only.
REVEAL_SESSION_KEY = "write_key_reveal_id"


class WriteKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        label="Name",
        help_text="Where the key will be used, e.g. “Shop website”.",
    )

    def clean_name(self) -> str:
        name = write_key_name_clean(self.cleaned_data["name"])
        if not name:
            raise forms.ValidationError("Give the key a name.")
        refusal = write_key_name_refusal(name)
        if refusal:
            raise forms.ValidationError(refusal)
        return name


@staff_required
@require_http_methods(["GET", "POST"])
def source_keys(request: HttpRequest) -> HttpResponse:
    form = WriteKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        write_key = write_key_create(name=form.cleaned_data["name"])
        logger.info(
            "Write key created from the UI",
            extra={"write_key_id": write_key.pk, "user_id": request.user.pk},
        )
        request.session[REVEAL_SESSION_KEY] = write_key.pk
        return redirect("source_keys")

    revealed_id = request.session.pop(REVEAL_SESSION_KEY, None)
    keys = WriteKey.objects.order_by("-created_at", "-pk")
    context = {
        "form": form,
        "revealed": next((k for k in keys if k.pk == revealed_id), None),
        "keys": [{"key": k, "masked": write_key_masked(k.key)} for k in keys],
        "track_url": request.build_absolute_uri("/v1/track"),
    }
    return render(request, "profiles/keys_list.html", context)


@staff_required
@require_http_methods(["GET", "POST"])
def source_key_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    write_key = get_object_or_404(WriteKey, pk=pk)
    if request.method == "GET":
        context = {"write_key": write_key, "masked": write_key_masked(write_key.key)}
        return render(request, "profiles/keys_revoke.html", context)

    if write_key_revoke(write_key_id=write_key.pk):
        logger.info(
            "Write key revoked from the UI",
            extra={"write_key_id": write_key.pk, "user_id": request.user.pk},
        )
        messages.success(request, f"The key “{write_key.name}” is revoked.")
    else:
        messages.info(request, f"The key “{write_key.name}” was revoked already.")
    return redirect("source_keys")


@staff_required
def sources_health_page(request: HttpRequest) -> HttpResponse:
    context = {
        "sources": sources_health(),
        "backlog_warning_minutes": BACKLOG_WARNING_SECONDS // 60,
        "stuck_after_minutes": IMPORT_STUCK_AFTER_SECONDS // 60,
    }
    return render(request, "profiles/sources_health.html", context)
