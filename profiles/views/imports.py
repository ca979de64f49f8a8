"""Marketer pages about contact imports: upload, progress and the rejection report."""

import csv

from django.contrib import messages as flash
from django.core.files.uploadedfile import UploadedFile
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from profiles.access import staff_required
from profiles.forms import ContactImportForm
from profiles.importing import contact_import_create
from profiles.models import ContactImport, ImportStatus
from profiles.tasks import contact_import_task

IMPORTS_PER_PAGE = 25
# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


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
