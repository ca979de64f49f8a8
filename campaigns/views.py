"""Marketer pages (dashboard, campaigns, outbox) and the public unsubscribe page."""

from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from campaigns.models import Campaign, CampaignStatus, Message, OutboxEmail
from campaigns.selectors import campaign_message_counts, dashboard_counts
from campaigns.sending import (
    CampaignNotStartable,
    campaign_preview,
    campaign_render_problem,
    campaign_start,
)
from campaigns.unsubscribe import (
    UnsubscribeLinkInvalid,
    message_from_token,
    message_unsubscribe,
)


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    context = {
        "counts": dashboard_counts(),
        "campaigns": Campaign.objects.select_related("segment").order_by("-created_at")[
            :5
        ],
    }
    return render(request, "campaigns/dashboard.html", context)


@login_required
def campaign_list(request: HttpRequest) -> HttpResponse:
    campaigns = Campaign.objects.select_related("segment", "template").order_by(
        "-created_at"
    )
    rows = [{"campaign": c, "counts": campaign_message_counts(c)} for c in campaigns]
    return render(request, "campaigns/campaign_list.html", {"rows": rows})


@login_required
def campaign_detail(request: HttpRequest, slug: str) -> HttpResponse:
    campaign = get_object_or_404(
        Campaign.objects.select_related("segment", "template"), slug=slug
    )
    messages = campaign.messages.select_related("profile").order_by("status", "pk")
    page = Paginator(messages, 100).get_page(request.GET.get("page"))
    context = {
        "campaign": campaign,
        "counts": campaign_message_counts(campaign),
        "page": page,
        "preview": None,
    }
    if campaign.status in (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED):
        context["preview"] = campaign_preview(
            campaign=campaign, profile_id=_int_or_none(request.GET.get("preview"))
        )
    return render(request, "campaigns/campaign_detail.html", context)


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text and text.isascii() and text.isdigit() else None


@login_required
@require_POST
def campaign_send(request: HttpRequest, slug: str) -> HttpResponse:
    campaign = get_object_or_404(Campaign, slug=slug)
    problem = campaign_render_problem(campaign)
    if problem:
        # Each recipient it fails for would be skipped, and never sent it later.
        flash.error(
            request,
            f"Not sent: the email cannot be rendered for {problem}. Fix the template, "
            "then send.",
        )
        return redirect("campaign_detail", slug=slug)
    try:
        created = campaign_start(campaign_id=campaign.pk)
    except CampaignNotStartable:
        flash.error(request, "This campaign has already been started.")
    else:
        flash.success(request, f"Sending started: {created} messages queued.")
    return redirect("campaign_detail", slug=slug)


@login_required
def outbox_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(OutboxEmail.objects.all(), 50).get_page(request.GET.get("page"))
    return render(request, "campaigns/outbox_list.html", {"page": page})


@login_required
def outbox_detail(request: HttpRequest, pk: int) -> HttpResponse:
    email = get_object_or_404(OutboxEmail, pk=pk)
    return render(request, "campaigns/outbox_detail.html", {"email": email})


@csrf_exempt
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows a confirmation (link scanners must not unsubscribe); POST unsubscribes.

    The POST is RFC 8058's one-click request: no cookies, no CSRF token, no redirect.
    """
    try:
        message = message_from_token(token)
    except (UnsubscribeLinkInvalid, signing.BadSignature, Message.DoesNotExist) as exc:
        raise Http404("This unsubscribe link is not valid.") from exc

    # The address the message went to, partly hidden: the person sees which of
    # their addresses this is; whoever else holds the link learns little.
    sent_to = message.to_email or message.profile.email or ""
    context = {"token": token, "address": address_masked(sent_to)}
    if request.method == "POST":
        message_unsubscribe(message=message, ip_address=request.META.get("REMOTE_ADDR"))
        return render(request, "public/unsubscribed.html", context)
    return render(request, "public/unsubscribe_confirm.html", context)


def address_masked(address: str) -> str:
    """Return an address with its local part hidden after the first character."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return ""
    return f"{local[0]}{'•' * 3}@{domain}"
