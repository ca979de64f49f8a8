"""Marketer pages about profiles: the list with search, and one person's whole story."""

from typing import Any

from django import forms
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from profiles.access import staff_required
from profiles.forms import ProfileSearchForm
from profiles.models import Event, Profile, ProfileTag, TraitType
from profiles.selectors import profile_is_suppressed
from profiles.traits import trait_schema_load
from segments.selectors import segments_containing

PROFILES_PER_PAGE = 50
EVENTS_PER_PAGE = 50
PRODUCT_NAMES_SHOWN = 3


class ProfileFilterForm(ProfileSearchForm):
    tag = forms.ChoiceField(required=False, choices=[])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = ProfileTag.objects.order_by("name").values_list("name", flat=True)
        choices = [("", "Any tag"), *((name, name) for name in names.distinct())]
        self.fields["tag"].choices = choices


@staff_required
def profile_list(request: HttpRequest) -> HttpResponse:
    form = ProfileFilterForm(request.GET)
    profiles = Profile.objects.prefetch_related("tags").order_by("-created_at", "-pk")
    if form.is_valid():
        profiles = _profiles_filter(profiles, **form.cleaned_data)

    page = Paginator(profiles, PROFILES_PER_PAGE).get_page(request.GET.get("page"))
    context = {"form": form, "page": page, "query": _query_without_page(request)}
    return render(request, "profiles/profile_list.html", context)


def _query_without_page(request: HttpRequest) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


def _profiles_filter(
    profiles: QuerySet[Profile], *, q: str, status: str, tag: str
) -> QuerySet[Profile]:
    if q:
        profiles = profiles.filter(
            Q(email__icontains=q)
            | Q(first_name__icontains=q)
            | Q(last_name__icontains=q)
            | Q(tags__name__iexact=q)
        ).distinct()
    if status:
        profiles = profiles.filter(subscription_status=status)
    if tag:
        profiles = profiles.filter(tags__name=tag).distinct()
    return profiles


@staff_required
def profile_detail(request: HttpRequest, pk: int) -> HttpResponse:
    profile = get_object_or_404(Profile, pk=pk)

    events = profile.events.order_by("-timestamp", "-pk")
    page = Paginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "profile": profile,
        "computed": _computed_traits(profile),
        "traits": _custom_traits(profile),
        "tags": profile.tags.order_by("name"),
        "identities": profile.identities.order_by("kind", "created_at", "pk"),
        "consents": profile.consent_records.order_by("-occurred_at", "-pk"),
        "suppressed": bool(profile.email) and profile_is_suppressed(profile.email),
        "merges": profile.merges.order_by("-merged_at", "-pk"),
        "segments": segments_containing(profile.pk),
        "page": page,
        "timeline": [_timeline_row(event) for event in page],
    }
    return render(request, "profiles/profile_detail.html", context)


def _computed_traits(profile: Profile) -> list[tuple[str, Any]]:
    return [
        ("Lifetime value", profile.lifetime_value),
        ("Orders", profile.order_count),
        ("Average order", profile.average_order_value),
        ("First order", profile.first_order_at),
        ("Last order", profile.last_order_at),
        ("Last seen", profile.last_seen_at),
        ("Last open", profile.last_opened_at),
        ("Last click", profile.last_clicked_at),
        ("Engagement score", profile.engagement_score),
        ("Favourite category", profile.favourite_category),
    ]


def _custom_traits(profile: Profile) -> list[dict[str, Any]]:
    schema = trait_schema_load()
    labels = dict(TraitType.choices)
    rows = []
    for name, value in sorted(profile.traits.items()):
        rule = schema.get(name)
        declared = labels.get(rule.type, rule.type) if rule else ""
        rows.append({"name": name, "value": value, "type": declared})
    return rows


def _timeline_row(event: Event) -> dict[str, Any]:
    return {
        "event": event,
        "title": event.event or event.name or event.get_type_display(),
        "details": _event_details(event),
    }


def _event_details(event: Event) -> list[tuple[str, str]]:
    """Return the few properties a marketer reads an event by, as label and text."""
    properties = event.properties if isinstance(event.properties, dict) else {}
    details = []

    products = _product_names(properties)
    if products:
        details.append(("product", products))

    total = next(
        (properties[k] for k in ("total", "revenue", "value") if k in properties), None
    )
    if total is not None:
        currency = properties.get("currency", "")
        details.append(("total", f"{total} {currency}".strip()))

    path = properties.get("path") or _page_path(event.context)
    if path:
        details.append(("page", str(path)))
    if properties.get("query"):
        details.append(("search", str(properties["query"])))
    return details


def _product_names(properties: dict[str, Any]) -> str:
    if "product_id" in properties and properties.get("name"):
        return str(properties["name"])

    products = properties.get("products")
    if not isinstance(products, list):
        return ""

    names = [str(p["name"]) for p in products if isinstance(p, dict) and p.get("name")]
    shown = ", ".join(names[:PRODUCT_NAMES_SHOWN])
    more = len(names) - PRODUCT_NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _page_path(context: Any) -> str:
    page = context.get("page") if isinstance(context, dict) else None
    return str(page.get("path") or "") if isinstance(page, dict) else ""
