"""Marketer pages: profiles, their history, and contact imports."""

import csv
from collections.abc import Callable
from functools import wraps

from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import UploadedFile
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from profiles.forms import ContactImportForm, ProfileSearchForm
from profiles.importing import contact_import_create
from profiles.models import ContactImport, ImportStatus, Profile
from profiles.tasks import contact_import_task

PROFILES_PER_PAGE = 50
IMPORTS_PER_PAGE = 25
EVENTS_SHOWN = 100
# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

View = Callable[..., HttpResponse]


def staff_required(view: View) -> View:
    """Let only signed-in staff in; send others to sign in, or refuse them."""

    @login_required
    @wraps(view)
    def checked(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_staff:
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return checked


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


@staff_required
def import_list(request: HttpRequest) -> HttpResponse:
    form = ContactImportForm()
    if request.method == "POST":
        form = ContactImportForm(request.POST, request.FILES)
        if form.is_valid():
            return _import_start(request, form.cleaned_data["file"])

    imports = ContactImport.objects.order_by("-created_at", "-pk")
    page = Paginator(imports, IMPORTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "profiles/import_list.html", {"form": form, "page": page})


def _import_start(request: HttpRequest, upload: UploadedFile) -> HttpResponse:
    with transaction.atomic():
        contact_import = contact_import_create(filename=upload.name, data=upload.read())
        # Enqueue only once the import row is committed, so the worker finds it.
        transaction.on_commit(lambda: contact_import_task.delay(contact_import.pk))

    flash.success(request, f"{contact_import.filename} is uploaded and queued.")
    return redirect("import_detail", pk=contact_import.pk)


@staff_required
def import_detail(request: HttpRequest, pk: int) -> HttpResponse:
    contact_import = get_object_or_404(ContactImport, pk=pk)
    waiting = contact_import.status in (ImportStatus.PENDING, ImportStatus.RUNNING)
    context = {"contact_import": contact_import, "waiting": waiting}
    return render(request, "profiles/import_detail.html", context)


@staff_required
def import_rejections_csv(request: HttpRequest, pk: int) -> HttpResponse:
    contact_import = get_object_or_404(ContactImport, pk=pk)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    filename = f"import-{contact_import.pk}-rejections.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'

    columns = ["record", "line", "email", "reason", "message"]
    writer = csv.writer(response)
    writer.writerow(columns)
    for rejection in contact_import.rejections:
        writer.writerow([_cell_safe(rejection.get(name, "")) for name in columns])
    return response


def _cell_safe(value: object) -> object:
    """Keep a spreadsheet from running an imported value as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return f"'{value}"
    return value
