"""Marketer pages about contact imports: upload, mapping, progress and the report."""

import csv
import re
from collections.abc import Callable
from typing import Any

from django.contrib import messages as flash
from django.core.files.uploadedfile import UploadedFile
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from profiles.access import staff_required
from profiles.forms import ContactImportForm, ContactImportMappingForm
from profiles.importing import (
    IMPORT_STUCK_AFTER_SECONDS,
    ImportFormatError,
    contact_import_create,
    contact_import_discard,
    contact_import_discardable,
    contact_import_idle_seconds,
    contact_import_map,
    contact_import_preview,
    contact_import_retry,
    contact_import_retryable,
)
from profiles.importing.layouts import (
    TARGET_CHANGED_AT,
    TARGET_STATUS,
    TARGET_SUBSCRIBED,
    TARGET_UNSUBSCRIBED,
    TRAIT_PREFIX,
    StatusUnknown,
    blacklisted_read,
    change_time_named,
    contacts_time_parse,
    layout_time_keys,
    newsletter_named,
    opted_in_read,
    status_read,
)
from profiles.importing.mapping import (
    NO_CONSENT_YET,
    ContactsPreview,
    column_declared_twice_sentence,
    column_reserved_sentence,
    number_written_with_groups,
)
from profiles.importing.reading import ENCODINGS, EncodingUnknown, column_key
from profiles.importing.runs import ENCODING_READS_ANY_BYTE
from profiles.models import ContactImport, ImportStatus, TraitDefinition
from profiles.tasks import contact_import_task
from profiles.traits import trait_name_is_reserved

IMPORTS_PER_PAGE = 25
# A big file can refuse hundreds of thousands of fields: the page shows the first
# ones, and the CSV download has them all, with every note.
REPORT_ITEMS_SHOWN = 200
# The report download's header: what each line is, where it came from, and why.
REPORT_COLUMNS = ["kind", "record", "line", "column", "email", "reason", "message"]
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
    contact_import = contact_import_create(filename=upload.name, data=upload.read())
    # Read it now: a file that cannot be read fails here, not after the mapping.
    try:
        contact_import_preview(contact_import=contact_import)
    except EncodingUnknown:
        flash.success(
            request,
            f"{contact_import.filename} is uploaded; choose the encoding it was "
            "saved in, then map its columns.",
        )
        return redirect("import_mapping", pk=contact_import.pk)
    except ImportFormatError as exc:
        flash.error(request, f"{contact_import.filename} cannot be imported: {exc}")
        return redirect("import_detail", pk=contact_import.pk)

    flash.success(request, f"{contact_import.filename} is uploaded; map its columns.")
    return redirect("import_mapping", pk=contact_import.pk)


def _is_mapped(contact_import: ContactImport) -> bool:
    """Tell whether the marketer started the import (or a worker already runs it)."""
    if contact_import.status != ImportStatus.PENDING:
        return True
    return bool(contact_import.column_map) or contact_import.started_at is not None


ENCODING_NOT_FOUND = "not found"


@staff_required
def import_mapping(request: HttpRequest, pk: int) -> HttpResponse:
    contact_import = get_object_or_404(ContactImport, pk=pk)
    if contact_import.status != ImportStatus.PENDING or _is_mapped(contact_import):
        return redirect("import_detail", pk=pk)
    # The encoding chosen above the form (a GET), or carried by the form's post;
    # else the one chosen last time the page was open.
    asked = request.POST if request.method == "POST" else request.GET
    chosen = asked.get("encoding", contact_import.encoding)
    if chosen and chosen not in ENCODINGS:
        # Not one Bespoke reads (a link edited by hand): the last choice stands.
        chosen = contact_import.encoding
    encoding = chosen if chosen in ENCODINGS else ""
    encoding_error, unknown, unknown_hint = "", False, None
    try:
        preview = contact_import_preview(
            contact_import=contact_import, encoding=encoding
        )
    except EncodingUnknown as exc:
        # Found in no encoding (none was chosen): the samples are shown in a code
        # page that reads every byte, for the columns' sake, until one is chosen.
        encoding_error, unknown, unknown_hint = str(exc), True, exc.hint
        preview = _any_byte_preview(contact_import)
    except ImportFormatError as exc:
        if not encoding:
            # The import is failed with the reason, which its page shows.
            return redirect("import_detail", pk=pk)
        # The file is not in the chosen encoding: shown as found, with the reason.
        encoding, encoding_error = "", str(exc)
        try:
            preview = contact_import_preview(contact_import=contact_import)
        except EncodingUnknown as exc:
            unknown, unknown_hint = True, exc.hint
            preview = _any_byte_preview(contact_import)
        except ImportFormatError:
            return redirect("import_detail", pk=pk)

    if encoding != contact_import.encoding and not encoding_error:
        # Kept, so that the page opened again reads the file as it was last read.
        contact_import.encoding = encoding
        contact_import.save(update_fields=["encoding"])
    options = {"names": preview.names, "column_map": preview.column_map}
    initial = {"encoding": encoding}
    if not encoding and not unknown:
        initial["found_encoding"] = preview.encoding_label
        initial["encoding_guessed"] = preview.encoding_guessed
    posted = request.POST.copy() if request.method == "POST" else None
    traits = _traits()
    form = ContactImportMappingForm(posted, initial=initial, traits=traits, **options)
    if unknown:
        form.fields["encoding"].choices = [
            ("", "none found in the file: choose one"),
            *ENCODINGS.items(),
        ]
    # "Read it again" shows the samples in the encoding chosen, and starts nothing;
    # nor is a file started in an encoding it is not in: the page says why.
    rereading = posted is not None and "reread" in posted
    if rereading:
        _columns_offered_keep(form, posted)
    if (
        request.method == "POST"
        and not rereading
        and form.is_valid()
        and not encoding_error
    ):
        mapped = _form_mapped(form)
        unread = _unread_statuses(preview, mapped)
        unread_times = _unread_change_times(
            preview, mapped, form.cleaned_data["date_format"]
        )
        if (unread or unread_times) and "unread_confirmed" not in posted:
            # A consent column holding no consent word, or a change time the date
            # format does not read, perhaps chosen just now: said before anything
            # is imported (its consent records cannot be taken back), and started
            # only when confirmed.
            form.add_error(
                None, UNREAD_STATUS_CONFIRM if unread else UNREAD_TIME_CONFIRM
            )
        else:
            try:
                return _import_queue(request, contact_import, form)
            except ImportFormatError as exc:
                # Two columns sent to one trait, or a trait named like a profile
                # field.
                form.add_error(None, str(exc))

    # A layout reads its consent times by name, whatever the column is mapped to.
    # Its change time too (Brevo's MODIFIED_TIME), which dates a row's consent.
    consent_keys = layout_time_keys(preview.layout)
    consent_times = [column_key(name) in consent_keys for name in form.names]
    # A few of each column's values, so that a consent column shows its words.
    shown = [" · ".join(values[:SAMPLES_SHOWN]) for values in preview.values]
    rows = zip(form.names, shown, _column_fields(form), consent_times, strict=True)
    context = {"contact_import": contact_import, "form": form, "rows": rows}
    context["layout"] = preview.layout
    context["reserved"] = [column_reserved_sentence(name) for name in preview.reserved]
    context["declared_twice"] = [
        column_declared_twice_sentence(*names) for names in preview.declared_twice
    ]
    context["undeclared_dates"] = _undeclared_dates(preview, traits)
    context["undeclared_numbers"] = _undeclared_numbers(preview, traits)
    # As the page now maps them: a column remapped and read again is checked anew.
    mapped = _form_mapped(form)
    context["unread_statuses"] = _unread_statuses(preview, mapped)
    date_format = form["date_format"].value() or ""
    context["unread_change_times"] = _unread_change_times(preview, mapped, date_format)
    context["change_time"] = [
        name
        for name in preview.names
        if preview.column_map.get(name) == TARGET_CHANGED_AT and change_time_named(name)
    ]
    context["newsletter_consent"] = [
        (name, ", ".join(values))
        for name, values in zip(preview.names, preview.values, strict=True)
        if preview.column_map.get(name) == TARGET_SUBSCRIBED and newsletter_named(name)
    ]
    context["no_records"] = not preview.has_records
    context["no_consent_column"] = (
        preview.has_records
        and preview.layout.status is None
        and not (
            set(mapped.values())
            & {TARGET_STATUS, TARGET_UNSUBSCRIBED, TARGET_SUBSCRIBED}
        )
    )
    found = ENCODING_NOT_FOUND if unknown else preview.encoding_label
    # The code page the file's words read right in, while none is chosen.
    hint = unknown_hint if unknown else (None if encoding else preview.encoding_hint)
    context["encoding"] = {"found": found, "error": encoding_error, "hint": hint}
    return render(request, "profiles/import_mapping.html", context)


# How many of a column's distinct values the page shows beside it.
SAMPLES_SHOWN = 3


# A sample that looks like a date: 07/14, 14.07.1990, 14-07-1990, 1990-07-14; not a
# decimal number such as 10.5.
DATE_LIKE = re.compile(
    r"\d{1,2}/\d{1,2}(/\d{2,4})?|\d{1,2}([.-])\d{1,2}\2\d{2,4}|\d{4}-\d{2}-\d{2}"
)


def _undeclared_dates(
    preview: ContactsPreview, traits: list[tuple[str, str]]
) -> list[tuple[str, str, str]]:
    """Each new trait whose sample looks like a date: kept as text, which date rules
    cannot read."""
    return _undeclared_like(preview, traits, DATE_LIKE.fullmatch)


def _undeclared_numbers(
    preview: ContactsPreview, traits: list[tuple[str, str]]
) -> list[tuple[str, str, str]]:
    """Each new trait whose sample is a number written with thousands or a decimal
    comma: kept as text, which number rules read with a decimal point."""
    return _undeclared_like(preview, traits, number_written_with_groups)


def _undeclared_like(
    preview: ContactsPreview,
    traits: list[tuple[str, str]],
    fits: Callable[[str], Any],
) -> list[tuple[str, str, str]]:
    """Return (column, sample, trait) for each new trait whose sample `fits`."""
    declared = {name for name, _ in traits}
    found = []
    for name, sample in zip(preview.names, preview.samples, strict=True):
        target = preview.column_map.get(name, "")
        trait = target.removeprefix(TRAIT_PREFIX)
        new = target.startswith(TRAIT_PREFIX) and trait not in declared
        if new and fits(sample.strip()):
            found.append((name, sample.strip(), trait))
    return found


def _unread_statuses(
    preview: ContactsPreview, mapped: dict[str, str]
) -> list[tuple[str, str]]:
    """Return (column, value) for each consent column a sampled value of which is no
    status word: the first such value.

    A CRM's "Active" or "Lead" is no consent: each such row is imported without
    one, and the marketer may rather keep the column as a trait.
    """
    readers = {
        TARGET_STATUS: status_read,
        TARGET_UNSUBSCRIBED: blacklisted_read,
        TARGET_SUBSCRIBED: opted_in_read,
    }
    found = []
    for name, values in zip(preview.names, preview.values, strict=True):
        read = readers.get(mapped.get(name, ""))
        if read is None:
            continue
        for value in values:
            if column_key(value) in NO_CONSENT_YET:
                continue
            try:
                read(value)
            except StatusUnknown:
                found.append((name, value))
                break
    return found


def _unread_change_times(
    preview: ContactsPreview, mapped: dict[str, str], date_format: str
) -> list[tuple[str, str]]:
    """Return (column, value) for the first column of times, the change time or the
    export's own (Brevo's MODIFIED_TIME, Mailchimp's OPTIN_TIME), a sampled value of
    which is no time in the chosen date format: its rows' consent would be dated by
    the import, and their order among an address's rows lost."""
    export_times = layout_time_keys(preview.layout)
    for name, values in zip(preview.names, preview.values, strict=True):
        if mapped.get(name) != TARGET_CHANGED_AT and (
            column_key(name) not in export_times
        ):
            continue
        for value in values:
            try:
                contacts_time_parse(value, date_format)
            except ValueError:
                return [(name, value)]
    return []


UNREAD_TIME_CONFIRM = (
    "The column read as each row's change time holds values the date format "
    "chosen does not read (below): choose the order its dates are written in, or "
    "start anyway to date those rows' consent by the import."
)
UNREAD_STATUS_CONFIRM = (
    "A column read as email consent holds values that are no consent (below): "
    "map it to a trait, or start anyway to import those rows without consent."
)


def _form_mapped(form: ContactImportMappingForm) -> dict[str, str]:
    """Each column's target as the page now maps it."""
    fields = zip(form.names, _column_fields(form), strict=True)
    return {name: field.value() or "" for name, field in fields}


def _any_byte_preview(contact_import: ContactImport) -> ContactsPreview:
    return contact_import_preview(
        contact_import=contact_import, encoding=ENCODING_READS_ANY_BYTE
    )


def _columns_offered_keep(form: ContactImportMappingForm, posted: QueryDict) -> None:
    """Keep each column's choice if it is still offered, else its new default.

    Read in another encoding, a column's name, and the new trait named after it,
    change ("Imiê" becomes "Imię"): the choice made for the old one is no option.
    """
    for name, field in form.fields.items():
        if not name.startswith("column_"):
            continue
        if posted.get(name) not in {value for value, _ in field.choices}:
            posted[name] = field.initial


def _traits() -> list[tuple[str, str]]:
    """Return the declared traits a column may be imported as."""
    # One declared before reserved names were compared whatever the case ('Email')
    # cannot take a column: the import would refuse the map.
    declared = TraitDefinition.objects.order_by("name").values_list("name", "type")
    return [(name, kind) for name, kind in declared if not trait_name_is_reserved(name)]


def _column_fields(form: ContactImportMappingForm) -> list:
    return [form[f"column_{position}"] for position in range(len(form.names))]


def _import_queue(
    request: HttpRequest,
    contact_import: ContactImport,
    form: ContactImportMappingForm,
) -> HttpResponse:
    with transaction.atomic():
        saved = contact_import_map(
            contact_import_id=contact_import.pk,
            column_map=form.column_map(),
            date_format=form.cleaned_data["date_format"],
            encoding=form.cleaned_data["encoding"],
            decimal_comma=form.cleaned_data["decimal_comma"],
        )
        # Enqueue only once the map is committed, so the worker runs with it.
        if saved:
            transaction.on_commit(lambda: contact_import_task.delay(contact_import.pk))

    if saved:
        flash.success(request, f"{contact_import.filename} is queued for import.")
    return redirect("import_detail", pk=contact_import.pk)


@staff_required
def import_detail(request: HttpRequest, pk: int) -> HttpResponse:
    contact_import = get_object_or_404(ContactImport, pk=pk)
    waiting = contact_import.status in (ImportStatus.PENDING, ImportStatus.RUNNING)
    rejections, notes = contact_import.rejections, contact_import.notes
    context = {
        "contact_import": contact_import,
        "waiting": waiting,
        "unmapped": waiting and not _is_mapped(contact_import),
        "discardable": contact_import_discardable(contact_import=contact_import),
        "retryable": contact_import_retryable(contact_import=contact_import),
        "percent": _percent(contact_import),
        "idle_seconds": contact_import_idle_seconds(contact_import),
        "stuck_after_minutes": IMPORT_STUCK_AFTER_SECONDS // 60,
        "fields_refused": len(rejections) - contact_import.rejected,
        "rejections_shown": rejections[:REPORT_ITEMS_SHOWN],
        "rejections_total": len(rejections),
        "notes_shown": notes[:REPORT_ITEMS_SHOWN],
        "notes_total": len(notes),
    }
    return render(request, "profiles/import_detail.html", context)


def _percent(contact_import: ContactImport) -> int:
    if contact_import.status == ImportStatus.DONE:
        return 100
    if not contact_import.rows_total:
        return 0
    return contact_import.rows_done * 100 // contact_import.rows_total


@staff_required
def import_progress(request: HttpRequest, pk: int) -> JsonResponse:
    contact_import = get_object_or_404(ContactImport, pk=pk)
    return JsonResponse(
        {
            "status": contact_import.status,
            "status_label": contact_import.get_status_display(),
            "rows_done": contact_import.rows_done,
            "rows_total": contact_import.rows_total,
            "percent": _percent(contact_import),
            "idle_seconds": contact_import_idle_seconds(contact_import),
            "records": contact_import.records,
            "rejected": contact_import.rejected,
            "error": contact_import.error,
        }
    )


@staff_required
@require_POST
def import_retry(request: HttpRequest, pk: int) -> HttpResponse:
    contact_import = get_object_or_404(ContactImport, pk=pk)
    with transaction.atomic():
        requeued = contact_import_retry(contact_import_id=contact_import.pk)
        if requeued:
            transaction.on_commit(lambda: contact_import_task.delay(contact_import.pk))

    if requeued:
        flash.success(
            request, "The import is queued again; it continues where it stopped."
        )
    elif contact_import.status in (ImportStatus.PENDING, ImportStatus.RUNNING):
        flash.info(request, "The import is already queued or running.")
    else:
        flash.error(request, "This import cannot run again; upload the file again.")
    return redirect("import_detail", pk=pk)


@staff_required
@require_POST
def import_discard(request: HttpRequest, pk: int) -> HttpResponse:
    contact_import = get_object_or_404(ContactImport, pk=pk)
    if not contact_import_discard(contact_import_id=contact_import.pk):
        flash.error(
            request,
            "This import is queued, running, done or has written rows, so it is kept.",
        )
        return redirect("import_detail", pk=pk)

    flash.success(
        request, f"{contact_import.filename} is discarded; none of it was imported."
    )
    return redirect("import_list")


@staff_required
def import_rejections_csv(request: HttpRequest, pk: int) -> HttpResponse:
    """Serve the whole report: refused rows, refused fields, then the notes."""
    contact_import = get_object_or_404(ContactImport, pk=pk)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    # The name predates the notes; the page and bookmarks link to it.
    filename = f"import-{contact_import.pk}-rejections.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'

    # A byte-order mark, or Excel on Windows reads the UTF-8 as its code page and
    # garbles every accented name and address.
    response.write("\ufeff")
    writer = csv.writer(response)
    writer.writerow(REPORT_COLUMNS)
    for rejection in contact_import.rejections:
        writer.writerow([_cell_safe(value) for value in _rejection_line(rejection)])
    for note in contact_import.notes:
        writer.writerow([_cell_safe(value) for value in _note_line(note)])
    return response


def _rejection_line(rejection: dict[str, Any]) -> list[object]:
    # A rejection that names a column refused that field and kept the row.
    kind = "refused field" if rejection.get("column") else "refused row"
    return [
        kind,
        rejection["record"],
        rejection["line"],
        rejection.get("column", ""),
        rejection["email"],
        rejection["reason"],
        rejection["message"],
    ]


def _note_line(note: dict[str, Any]) -> list[object]:
    # A merge note names all the records it merged; a note about a column, none.
    records = note.get("records") or [note.get("record", "")]
    return [
        "note",
        " ".join(str(record) for record in records),
        note.get("line", ""),
        note.get("column", ""),
        note.get("email", ""),
        note.get("kind", ""),
        note["message"],
    ]


def _cell_safe(value: object) -> object:
    """Keep a spreadsheet from running an imported value as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return f"'{value}"
    return value
