"""Running an import: claim it, parse the file, write it batch by batch, report.

Each batch of merged rows (IMPORT_BATCH_SIZE through the ORM, COPY_BATCH_SIZE on
PostgreSQL's COPY path for files of COPY_MIN_ROWS rows or more) commits in its own
transaction together with the import's progress (`rows_done`), so `rows_done`
always names exactly the rows that are written: the first `rows_done` merged rows of
the file, in the order their address first appears. An import that stops (an error,
a worker that died) is marked failed with that count in its error and keeps its
uploaded file; `contact_import_retry` puts it back in the queue and the re-run skips
the rows already written, so nothing is half-written that the import cannot name.
"""

import contextlib
import gc
import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.text import get_valid_filename
from django.utils.timezone import localtime
from psycopg.errors import DeadlockDetected, UniqueViolation

from profiles.importing.copying import contact_rows_copy
from profiles.importing.layouts import TARGET_EMAIL
from profiles.importing.mapping import (
    ContactsPreview,
    ParsedContacts,
    Rejection,
    column_map_check,
    column_map_declared,
    contacts_erased_keys,
    contacts_parse,
    contacts_preview,
)
from profiles.importing.reading import EncodingUnknown, ImportFormatError
from profiles.importing.writing import (
    BatchOutcome,
    contact_rows_write,
    report_erased_leave_out,
)
from profiles.models import PROFILE_EMAIL_UNIQUE, ContactImport, ImportStatus
from profiles.processing_writes import driver_error
from profiles.signals import profiles_changed
from profiles.traits import TraitRule, trait_schema_load

logger = logging.getLogger(__name__)

IMPORT_BATCH_SIZE = 2000
# How many times a batch is tried when another writer was first (see below).
BATCH_ATTEMPTS = 3
# Past this many rows, PostgreSQL takes the COPY path in batches of this size.
COPY_MIN_ROWS = 5000
COPY_BATCH_SIZE = 50_000
UPLOAD_NAME_MAX_CHARS = 100
# Every byte is a letter in Mac OS Roman: a file no encoding reads is shown in it,
# wrong letters and all, until the marketer chooses one.
ENCODING_READS_ANY_BYTE = "mac_roman"
NOT_TEXT = (
    "The file is neither CSV text in an encoding Bespoke reads nor an .xlsx "
    "workbook (a picture, a PDF or an old .xls?)."
)
# A running import whose worker wrote nothing for this long is taken for dead.
IMPORT_STUCK_AFTER_SECONDS = 15 * 60
# An import handed to the workers that none has begun after this long is queued
# again (at most once a period): its task was lost, by a broker that restarted or a
# worker that failed before it began. A second task for it finds it begun and ends.
IMPORT_REQUEUE_AFTER_SECONDS = 10 * 60


class ImportInterrupted(RuntimeError):
    """The import stopped being ours to write (marked failed by the sweep)."""


def contact_import_upload_path(contact_import: ContactImport) -> Path:
    """Return where the uploaded bytes of an import wait for the worker."""
    try:
        safe_name = get_valid_filename(Path(contact_import.filename).name)
    except SuspiciousFileOperation:
        safe_name = "upload.csv"
    name = f"{contact_import.pk}-{safe_name[-UPLOAD_NAME_MAX_CHARS:]}"
    return Path(settings.VAR_DIR) / "imports" / name


def contact_import_create(*, filename: str, data: bytes) -> ContactImport:
    """Record a pending import and keep its bytes on disk until it has run."""
    name = Path(filename).name[: ContactImport._meta.get_field("filename").max_length]
    contact_import = ContactImport.objects.create(filename=name)

    path = contact_import_upload_path(contact_import)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)

    logger.info(
        "Contact import %s created",
        contact_import.pk,
        extra={"contact_import_id": contact_import.pk, "bytes": len(data)},
    )
    return contact_import


def contact_import_map(
    *,
    contact_import_id: int,
    column_map: dict[str, str],
    date_format: str,
    encoding: str = "",
    decimal_comma: bool = False,
) -> bool:
    """Keep the marketer's column map for a pending import; False if it already ran.

    A trait named in another case than a declared one's is kept as the declared
    trait, so that two columns sent to it are refused here, naming both.
    """
    column_map = column_map_declared(column_map, trait_schema_load())
    column_map_check(column_map)
    if list(column_map.values()).count(TARGET_EMAIL) != 1:
        raise ImportFormatError("Choose exactly one column as the email address.")

    saved = ContactImport.objects.filter(
        pk=contact_import_id, status=ImportStatus.PENDING, started_at=None
    ).update(
        column_map=column_map,
        date_format=date_format,
        encoding=encoding,
        decimal_comma=decimal_comma,
        queued_at=timezone.now(),
    )
    return bool(saved)


def contact_import_preview(
    *, contact_import: ContactImport, encoding: str = ""
) -> ContactsPreview:
    """Return the header, samples and default map of a pending import's kept file.

    A file that cannot be read marks the import failed with the reason, at once
    (no worker will ever read it better), and raises ImportFormatError. A file
    that cannot be read in a chosen `encoding`, or whose encoding is not found
    (EncodingUnknown), raises it and stays pending: the marketer chooses one.
    """
    try:
        data = contact_import_upload_path(contact_import).read_bytes()
    except FileNotFoundError as exc:
        error = "The uploaded file is gone; upload it again."
        _unstarted_fail(contact_import, error)
        raise ImportFormatError(error) from exc
    if encoding:
        # A wrong choice is the marketer's to correct: the import stays pending.
        return contacts_preview(data, encoding=encoding, erased=contacts_erased_keys)
    try:
        return contacts_preview(data, erased=contacts_erased_keys)
    except EncodingUnknown as unknown:
        # Waits for the marketer's choice, unless no choice could read it: every
        # byte is a letter in Mac OS Roman, and a file that is no CSV even so is
        # no text (a picture, a PDF).
        try:
            contacts_preview(data, encoding=ENCODING_READS_ANY_BYTE)
        except ImportFormatError as exc:
            _unstarted_fail(contact_import, NOT_TEXT)
            raise ImportFormatError(NOT_TEXT) from exc
        raise unknown from None
    except ImportFormatError as exc:
        _unstarted_fail(contact_import, str(exc))
        raise


def contact_import_refuse(*, contact_import: ContactImport, error: str) -> None:
    """Mark failed, with the reason, a pending import that no worker has begun.

    For a caller with no one to choose what the mapping page waits for (an
    encoding): an import already failed or claimed keeps its own story.
    """
    _unstarted_fail(contact_import, error)


def _unstarted_fail(contact_import: ContactImport, error: str) -> None:
    # Only while no worker has claimed it: a running import keeps its own story.
    ContactImport.objects.filter(
        pk=contact_import.pk, status=ImportStatus.PENDING, started_at=None
    ).update(status=ImportStatus.FAILED, error=error, finished_at=timezone.now())
    contact_import.refresh_from_db()


def _discardable() -> Q:
    # Waiting for the marketer's column map (no worker was asked to run it), or
    # failed before writing a row. A queued import is the worker's, and one that
    # wrote rows is the only account of what they came from.
    waiting = Q(status=ImportStatus.PENDING, started_at=None, column_map={})
    return waiting | Q(status=ImportStatus.FAILED, rows_done=0)


def contact_import_discardable(*, contact_import: ContactImport) -> bool:
    """Tell whether the marketer may discard an import (see contact_import_discard)."""
    return ContactImport.objects.filter(_discardable(), pk=contact_import.pk).exists()


def contact_import_discard(*, contact_import_id: int) -> bool:
    """Delete an unmapped or failed import that wrote nothing, and its kept file.

    Says whether it was deleted: an import that was mapped meanwhile, is running,
    is done or wrote rows is kept.
    """
    contact_import = ContactImport.objects.filter(pk=contact_import_id).first()
    if contact_import is None:
        return False

    path = contact_import_upload_path(contact_import)
    deleted, _ = ContactImport.objects.filter(
        _discardable(), pk=contact_import_id
    ).delete()
    if not deleted:
        return False

    path.unlink(missing_ok=True)
    logger.info(
        "Contact import %s discarded",
        contact_import_id,
        extra={"contact_import_id": contact_import_id},
    )
    return True


def contact_import_run(*, contact_import_id: int, data: bytes) -> ContactImport:
    """Import a pending file's rows batch by batch and keep the report.

    Runs at most once per claim: a second call for the same import changes nothing.
    A file that cannot be read marks the import failed and writes no profile; an
    error midway marks it failed with the count of rows written.
    """
    if not _claim(contact_import_id):
        logger.warning("Contact import %s is not pending; skipped", contact_import_id)
        return ContactImport.objects.get(pk=contact_import_id)
    return _claimed_run(contact_import_id, data)


def _claim(contact_import_id: int) -> bool:
    """Take a pending import for this run; False if another run has it, or had it."""
    return bool(
        ContactImport.objects.filter(
            pk=contact_import_id, status=ImportStatus.PENDING
        ).update(status=ImportStatus.RUNNING, started_at=timezone.now())
    )


def _claimed_run(contact_import_id: int, data: bytes) -> ContactImport:
    contact_import = ContactImport.objects.get(pk=contact_import_id)
    try:
        _contacts_import(contact_import, data)
    except ImportFormatError as exc:
        _contact_import_fail(contact_import, str(exc))
        logger.warning("Contact import %s refused: %s", contact_import_id, exc)
        return contact_import
    except Exception as exc:
        _contact_import_fail(contact_import, _stopped_error(contact_import, exc))
        logger.exception("Contact import %s failed", contact_import_id)
        raise

    contact_import.refresh_from_db()
    logger.info(
        "Contact import %s done",
        contact_import_id,
        extra={
            "contact_import_id": contact_import_id,
            "records": contact_import.records,
            "rejected": contact_import.rejected,
            "profiles_created": contact_import.profiles_created,
        },
    )
    return contact_import


def contact_import_run_stored(*, contact_import_id: int) -> ContactImport:
    """Run an import from the bytes kept at upload; delete them unless it can resume.

    Claimed first: a second task for the same import (the sweep queues a lost one
    again) ends there, and leaves the file to the run that has it.
    """
    if not _claim(contact_import_id):
        logger.warning("Contact import %s is not pending; skipped", contact_import_id)
        return ContactImport.objects.get(pk=contact_import_id)

    contact_import = ContactImport.objects.get(pk=contact_import_id)
    path = contact_import_upload_path(contact_import)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        _contact_import_fail(contact_import, "The uploaded file is gone; upload again.")
        logger.error("Contact import %s lost its file", contact_import_id)
        return contact_import

    # On an unexpected error the bytes stay, so that a re-run can continue.
    contact_import = _claimed_run(contact_import_id, data)
    path.unlink(missing_ok=True)
    return contact_import


def contact_import_file(
    *,
    filename: str,
    data: bytes,
    encoding: str = "",
    date_format: str = "",
    decimal_comma: bool = False,
) -> ContactImport:
    """Import a file now, in this process, and return the finished import.

    `date_format` is the format its text dates are written in, as the mapping
    page declares it ("%d/%m/%Y"); ISO 8601 only when not given. `decimal_comma`
    says its numbers are written 1.234,5.
    """
    contact_import = contact_import_create(filename=filename, data=data)
    if encoding or date_format or decimal_comma:
        ContactImport.objects.filter(pk=contact_import.pk).update(
            encoding=encoding, date_format=date_format, decimal_comma=decimal_comma
        )
    return contact_import_run_stored(contact_import_id=contact_import.pk)


def contact_import_retryable(*, contact_import: ContactImport) -> bool:
    """Say whether a failed import can run again: it had started, and its file is kept.

    One refused before it started (its file cannot be read) would only fail again.
    """
    return (
        contact_import.status == ImportStatus.FAILED
        and contact_import.started_at is not None
        and contact_import_upload_path(contact_import).exists()
    )


def contact_import_retry(*, contact_import_id: int) -> bool:
    """Queue a failed import again if its file is still kept; say whether it was."""
    contact_import = ContactImport.objects.get(pk=contact_import_id)
    if not contact_import_retryable(contact_import=contact_import):
        return False

    now = timezone.now()
    requeued = ContactImport.objects.filter(
        pk=contact_import_id, status=ImportStatus.FAILED
    ).update(
        status=ImportStatus.PENDING,
        error="",
        finished_at=None,
        queued_at=now,
        # The report says so once done: its rows were written by two runs.
        notes=[*contact_import.notes, _run_again_note(contact_import, now)],
    )
    return bool(requeued)


RUN_AGAIN = "run_again"


def _run_again_note(contact_import: ContactImport, now: datetime) -> dict[str, str]:
    # Where the run goes on from is the next run's to say: from the first row
    # again if the declared traits changed meanwhile (RESTART_NOTE).
    when = date_format(localtime(now), "DATETIME_FORMAT")
    return {
        "kind": RUN_AGAIN,
        "message": (
            f"Run again on {when}, after it stopped with "
            f"{contact_import.rows_done:,} of {contact_import.rows_total:,} rows "
            f"written: {contact_import.error.replace(RUN_AGAIN_ADVICE, '.')}"
        ),
    }


def contact_imports_sweep(
    *, stuck_after_seconds: int = IMPORT_STUCK_AFTER_SECONDS
) -> int:
    """Mark failed the running imports whose worker wrote nothing for too long."""
    cutoff = timezone.now() - timedelta(seconds=stuck_after_seconds)
    failed = 0
    running = ContactImport.objects.filter(
        status=ImportStatus.RUNNING, started_at__lt=cutoff
    )
    for contact_import in running:
        if _last_progress_at(contact_import) >= cutoff:
            continue
        failed += _stuck_fail(contact_import, stuck_after_seconds)
    return failed


# An uploaded file holds people's data: kept this long for the marketer to map it
# or run it again, then deleted.
UPLOAD_KEPT_DAYS = 7
UPLOAD_PURGED = (
    "The uploaded file was deleted {days} days after it was last used, as it "
    "holds people's data. Upload it again to import it."
)


def contact_import_uploads_purge(*, now: datetime | None = None) -> int:
    """Delete the files of imports left unmapped, or failed, for UPLOAD_KEPT_DAYS.

    The import stays, failed, with its report and an error saying why; one still
    running or done has no file left to delete.
    """
    cutoff = (now or timezone.now()) - timedelta(days=UPLOAD_KEPT_DAYS)
    idle = ContactImport.objects.filter(
        Q(
            status=ImportStatus.PENDING,
            started_at=None,
            column_map={},
            created_at__lt=cutoff,
        )
        | Q(status=ImportStatus.FAILED, finished_at__lt=cutoff)
    )
    purged = 0
    for contact_import in idle.only("pk", "filename", "status", "error"):
        path = contact_import_upload_path(contact_import)
        if not path.exists():
            continue
        path.unlink(missing_ok=True)
        error = UPLOAD_PURGED.format(days=UPLOAD_KEPT_DAYS)
        if contact_import.error:
            error = f"{contact_import.error} {error}"
        ContactImport.objects.filter(pk=contact_import.pk).update(
            status=ImportStatus.FAILED,
            error=error,
            finished_at=Coalesce(F("finished_at"), Value(timezone.now())),
        )
        purged += 1
    if purged:
        logger.info("Contact import uploads deleted: %s", purged)
    return purged


def contact_imports_requeue(
    *, waited_seconds: int = IMPORT_REQUEUE_AFTER_SECONDS
) -> list[int]:
    """Return the imports handed over and not begun for too long, marked requeued.

    The caller queues their tasks again.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=waited_seconds)
    waiting = ContactImport.objects.filter(
        Q(requeued_at__isnull=True) | Q(requeued_at__lt=cutoff),
        status=ImportStatus.PENDING,
        queued_at__lt=cutoff,
    )
    # Locked, so that two sweeps at once (a backlog of them run side by side)
    # queue an import once: the other skips it, or finds it requeued just now.
    with transaction.atomic():
        ids = list(
            waiting.select_for_update(skip_locked=True).values_list("pk", flat=True)
        )
        ContactImport.objects.filter(pk__in=ids).update(requeued_at=now)
    if ids:
        logger.warning(
            "Contact imports queued again, no worker having begun them: %s", ids
        )
    return ids


def contact_import_idle_seconds(
    contact_import: ContactImport, *, now: datetime | None = None
) -> int | None:
    """Seconds since a running import last made progress; None if it is not running."""
    if contact_import.status != ImportStatus.RUNNING or not contact_import.started_at:
        return None
    idle = (now or timezone.now()) - _last_progress_at(contact_import)
    return max(0, int(idle.total_seconds()))


def _last_progress_at(contact_import: ContactImport) -> datetime:
    # The worker touches the kept upload after every batch (see _progress_save).
    path = contact_import_upload_path(contact_import)
    try:
        touched = os.stat(path).st_mtime
    except FileNotFoundError:
        return contact_import.started_at
    return max(contact_import.started_at, datetime.fromtimestamp(touched, tz=UTC))


def _stuck_fail(contact_import: ContactImport, stuck_after_seconds: int) -> int:
    error = (
        f"Import {contact_import.pk} ({contact_import.filename}) stopped: its worker "
        f"made no progress for {stuck_after_seconds // 60} minutes. "
        f"{_written_sentence(contact_import)}"
    )
    # Conditional on the progress seen: a worker that wrote meanwhile is alive.
    failed = ContactImport.objects.filter(
        pk=contact_import.pk,
        status=ImportStatus.RUNNING,
        rows_done=contact_import.rows_done,
    ).update(status=ImportStatus.FAILED, error=error, finished_at=timezone.now())
    if failed:
        logger.error(
            "Contact import %s was stuck; marked failed",
            contact_import.pk,
            extra={
                "contact_import_id": contact_import.pk,
                "rows_done": contact_import.rows_done,
            },
        )
    return failed


def _written_sentence(contact_import: ContactImport) -> str:
    return (
        f"{contact_import.rows_done} of {contact_import.rows_total} rows were "
        f"written{RUN_AGAIN_ADVICE}"
    )


# What a failed import's error advises, which its note once run again leaves out.
RUN_AGAIN_ADVICE = "; run it again to continue from there."


def _stopped_error(contact_import: ContactImport, exc: Exception) -> str:
    contact_import.refresh_from_db()
    return f"The import stopped on an error: {exc}. {_written_sentence(contact_import)}"


def _contact_import_fail(contact_import: ContactImport, error: str) -> None:
    ContactImport.objects.filter(pk=contact_import.pk).update(
        status=ImportStatus.FAILED, error=error, finished_at=timezone.now()
    )
    contact_import.refresh_from_db()


def _contacts_import(contact_import: ContactImport, data: bytes) -> None:
    """Parse the file, then write its rows batch by batch, each batch committed."""
    # A million parsed rows are long-lived objects the collector would walk again
    # and again while the rows are read and written; they hold no cycles.
    collecting = gc.isenabled()
    gc.disable()
    try:
        _contacts_parse_and_write(contact_import, data)
    finally:
        if collecting:
            gc.enable()


def _contacts_parse_and_write(contact_import: ContactImport, data: bytes) -> None:
    parsed = contacts_parse(
        data,
        column_map=contact_import.column_map or None,
        date_format=contact_import.date_format,
        encoding=contact_import.encoding,
        decimal_comma=contact_import.decimal_comma,
    )
    start = contact_import.rows_done
    rules = trait_rules_written(parsed.schema)
    if start and contact_import.rows_total != len(parsed.rows):
        raise ImportFormatError("The file changed since the first run; upload again.")
    # The rows before this were written, and their profiles counted, by an earlier
    # run: kept on the import, since a restarted run may stop again.
    counted_until = max(contact_import.rows_counted, start)
    if start and contact_import.trait_rules != rules:
        # The rows written so far were read under other rules than the rest would
        # be, and the report says what the first ones were: all of them again.
        start = _restart(contact_import)
        parsed.notes.insert(0, RESTART_NOTE)
    if start == 0:
        _parse_report_save(contact_import, parsed, rules)

    write, size = _batch_writer(len(parsed.rows))
    for first in range(start, len(parsed.rows), size):
        batch = parsed.rows[first : first + size]
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            try:
                with transaction.atomic():
                    outcome = write(
                        batch,
                        source=parsed.source,
                        filename=contact_import.filename,
                        import_id=contact_import.pk,
                    )
                    _progress_save(
                        contact_import,
                        first,
                        first + len(batch),
                        outcome,
                        counted=first < counted_until,
                    )
                break
            except (OperationalError, IntegrityError, *RACES) as exc:
                # Another writer was first: it created one of the batch's new
                # addresses (another import, an identify), or it and the batch
                # waited on each other's profile locks and the database stopped the
                # batch. The batch wrote nothing; it is read and written again.
                if not _is_race(exc) or attempt == BATCH_ATTEMPTS:
                    raise
                logger.warning(
                    "Contact import %s: a batch met another writer and is written "
                    "again",
                    contact_import.pk,
                )

    ContactImport.objects.filter(
        pk=contact_import.pk, status=ImportStatus.RUNNING
    ).update(status=ImportStatus.DONE, finished_at=timezone.now())
    # Too many profiles may have changed to name them: listeners refresh wholesale.
    transaction.on_commit(
        lambda: profiles_changed.send(
            sender=ContactImport, profile_ids=None, changed=None
        )
    )


# What a batch meets when another writer is first (see _contacts_parse_and_write).
RACES = (DeadlockDetected, UniqueViolation)


def _is_race(exc: Exception) -> bool:
    found = driver_error(exc)
    if isinstance(found, UniqueViolation):
        return found.diag.constraint_name == PROFILE_EMAIL_UNIQUE
    return isinstance(found, DeadlockDetected)


def _batch_writer(rows_total: int) -> tuple[Callable[..., BatchOutcome], int]:
    """Choose how batches are written: COPY on PostgreSQL for big files, else ORM."""
    # Both give the same rows (tests/profiles/test_importing_paths.py); the ORM path
    # is the reference, and the one SQLite runs.
    if connection.vendor == "postgresql" and rows_total >= COPY_MIN_ROWS:
        return contact_rows_copy, COPY_BATCH_SIZE
    return contact_rows_write, IMPORT_BATCH_SIZE


RESTART_NOTE = {
    "kind": "restarted",
    "message": (
        "The declared traits changed after this import stopped, so it was run "
        "again from the first row under the new rules. A value its first run "
        "stored that the new rules refuse stays on its profile (a refused value "
        "erases nothing): check those rows' profiles."
    ),
}


def trait_rules_written(schema: dict[str, TraitRule]) -> list[list[str]]:
    """The declared traits a file was read under, as JSON that compares exactly."""
    return [
        [
            rule.name,
            rule.type,
            json.dumps(list(rule.allowed_values)),
            str(rule.minimum),
            str(rule.maximum),
            rule.pattern,
        ]
        for rule in sorted(schema.values(), key=lambda rule: rule.name)
    ]


def _restart(contact_import: ContactImport) -> int:
    # The profiles counted stay: the first run's rows are written again uncounted,
    # or those it created would count as already known.
    restarted = ContactImport.objects.filter(
        pk=contact_import.pk, status=ImportStatus.RUNNING
    ).update(rows_done=0)
    if not restarted:
        raise ImportInterrupted(
            f"Contact import {contact_import.pk} is no longer running here."
        )
    contact_import.rows_done = 0
    return 0


def _parse_report_save(
    contact_import: ContactImport, parsed: ParsedContacts, rules: list[list[str]]
) -> None:
    report_erased_leave_out(parsed)
    rejections = sorted(
        parsed.rejections + parsed.field_rejections, key=lambda r: r.record
    )
    ContactImport.objects.filter(pk=contact_import.pk).update(
        layout=parsed.layout,
        records=parsed.records,
        rejected=len(parsed.rejections),
        accepted=parsed.records - len(parsed.rejections),
        duplicates_merged=sum(len(row.records) - 1 for row in parsed.rows),
        rejections=[rejection.as_dict() for rejection in rejections],
        # What the file says, after what became of the runs before (run again).
        notes=[*_run_notes(contact_import), *parsed.notes],
        rows_total=len(parsed.rows),
        trait_rules=rules,
    )


def _run_notes(contact_import: ContactImport) -> list[dict[str, Any]]:
    return [note for note in contact_import.notes if note.get("kind") == RUN_AGAIN]


def _progress_save(
    contact_import: ContactImport,
    first: int,
    done: int,
    outcome: BatchOutcome,
    *,
    counted: bool = False,
) -> None:
    """Record the batch as written, in its transaction; refuse if no longer ours.

    `counted`: a first run counted the batch's profiles, created or known, already.
    """
    erased = len(outcome.erased)
    running = ContactImport.objects.filter(
        pk=contact_import.pk, status=ImportStatus.RUNNING, rows_done=first
    )
    # One writer at a time (rows_done guards it): read, add, write.
    counts = Counter(running.values_list("status_counts", flat=True).first() or {})
    if not counted:
        counts.update(outcome.statuses)
    saved = running.update(
        status_counts=dict(counts),
        rows_done=done,
        rows_counted=Greatest(F("rows_counted"), done),
        profiles_created=F("profiles_created") + (0 if counted else outcome.created),
        profiles_updated=F("profiles_updated") + (0 if counted else outcome.updated),
        rejected=F("rejected") + erased,
        accepted=F("accepted") - erased,
        duplicates_merged=F("duplicates_merged") - outcome.duplicates_erased,
    )
    if not saved:
        raise ImportInterrupted(
            f"Contact import {contact_import.pk} is no longer running here."
        )
    if outcome.erased or outcome.notes:
        _report_extend(contact_import.pk, outcome.erased, outcome.notes)
    _heartbeat(contact_import)


def _report_extend(
    contact_import_id: int, rejections: list[Rejection], notes: list[dict]
) -> None:
    """Add a batch's erased rows and notes to the report, in the batch's transaction."""
    # A big file's report holds hundreds of thousands of entries: each part is read
    # and written only when the batch adds to it, and notes are only appended.
    if rejections:
        contact_import = (
            ContactImport.objects.select_for_update()
            .only("rejections")
            .get(pk=contact_import_id)
        )
        contact_import.rejections = sorted(
            contact_import.rejections + [r.as_dict() for r in rejections],
            key=lambda rejection: rejection["record"],
        )
        contact_import.save(update_fields=["rejections"])
    if notes:
        _notes_append(contact_import_id, notes)


def _notes_append(contact_import_id: int, notes: list[dict]) -> None:
    if connection.vendor == "postgresql":
        table = ContactImport._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET notes = notes || %s::jsonb WHERE id = %s",  # noqa: S608
                [orjson.dumps(notes).decode(), contact_import_id],
            )
        return

    contact_import = (
        ContactImport.objects.select_for_update()
        .only("notes")
        .get(pk=contact_import_id)
    )
    contact_import.notes = contact_import.notes + notes
    contact_import.save(update_fields=["notes"])


def _heartbeat(contact_import: ContactImport) -> None:
    path = contact_import_upload_path(contact_import)
    with contextlib.suppress(FileNotFoundError):
        os.utime(path)


def contact_import_summary(contact_import: ContactImport) -> str:
    """Return an import's counts on one line, as the commands print them."""

    def counted(n: int, one: str, many: str) -> str:
        return f"{n} {one if n == 1 else many}"

    return ", ".join(
        [
            counted(contact_import.records, "record", "records"),
            f"{contact_import.accepted} accepted",
            f"{contact_import.rejected} rejected",
            counted(
                contact_import.duplicates_merged,
                "duplicate merged",
                "duplicates merged",
            ),
            counted(
                contact_import.profiles_created, "profile created", "profiles created"
            ),
            f"{contact_import.profiles_updated} already known",
        ]
    )
