"""Marketer pages about profiles: the list with search, and one person's history."""

from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from profiles.access import staff_required
from profiles.forms import ProfileSearchForm
from profiles.models import Profile

PROFILES_PER_PAGE = 50
EVENTS_SHOWN = 100


@staff_required
def profile_list(request: HttpRequest) -> HttpResponse:
    form = ProfileSearchForm(request.GET)
    profiles = Profile.objects.prefetch_related("tags").order_by("-created_at", "-pk")
    if form.is_valid():
        profiles = _profiles_filter(profiles, **form.cleaned_data)

    page = Paginator(profiles, PROFILES_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "page": page, "query": query.urlencode()}
    return render(request, "profiles/profile_list.html", context)


def _profiles_filter(
    profiles: QuerySet[Profile], *, q: str, status: str
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
    return profiles


@staff_required
def profile_detail(request: HttpRequest, pk: int) -> HttpResponse:
    profile = get_object_or_404(Profile, pk=pk)
    context = {
        "profile": profile,
        "traits": sorted(profile.traits.items()),
        "tags": profile.tags.order_by("name"),
        "consents": profile.consent_records.order_by("-occurred_at", "-pk"),
        "events": profile.events.order_by("-timestamp", "-pk")[:EVENTS_SHOWN],
        "events_total": profile.events.count(),
    }
    return render(request, "profiles/profile_detail.html", context)
