"""Contact files in, profiles out: Mailchimp, Klaviyo and Brevo exports, any CSV or XLSX.

The package reads in three steps, one module each: `reading` turns bytes (CSV in
any usual encoding and delimiter, or XLSX) into records of text cells; `mapping`
applies the column map (the marketer's choice, pre-filled from the recognised
layout in `layouts`) and merges the rows of one mailbox; `writing` stores a batch
of merged rows with a few queries through the ORM, and `copying` does the same on
PostgreSQL with COPY for big files; `runs` claims an import, commits it batch by
batch with its progress and keeps the report.

Importing the same file again changes nothing but what is newer: blanks never
erase, a consent fact already on record is not appended twice, and an export never
subscribes again someone who unsubscribed or whose address was cleaned.
"""

from profiles.importing.layouts import (
    LAYOUT_BREVO,
    LAYOUT_GENERIC,
    LAYOUT_KLAVIYO,
    LAYOUTS,
    contacts_time_parse,
    layout_column_map,
    layout_detect,
)
from profiles.importing.mapping import (
    ContactRow,
    ParsedContacts,
    Rejection,
    column_target_check,
    contacts_parse,
    contacts_preview,
)
from profiles.importing.reading import (
    EncodingUnknown,
    ImportFormatError,
    contacts_decode,
    contacts_header,
    contacts_records,
    contacts_tags_split,
    header_names,
)
from profiles.importing.runs import (
    IMPORT_BATCH_SIZE,
    IMPORT_STUCK_AFTER_SECONDS,
    contact_import_create,
    contact_import_discard,
    contact_import_discardable,
    contact_import_file,
    contact_import_idle_seconds,
    contact_import_map,
    contact_import_preview,
    contact_import_refuse,
    contact_import_retry,
    contact_import_retryable,
    contact_import_run,
    contact_import_run_stored,
    contact_import_summary,
    contact_import_upload_path,
    contact_import_uploads_purge,
    contact_imports_requeue,
    contact_imports_sweep,
)

__all__ = [
    "IMPORT_BATCH_SIZE",
    "IMPORT_STUCK_AFTER_SECONDS",
    "LAYOUTS",
    "LAYOUT_BREVO",
    "LAYOUT_GENERIC",
    "LAYOUT_KLAVIYO",
    "ContactRow",
    "EncodingUnknown",
    "ImportFormatError",
    "ParsedContacts",
    "Rejection",
    "column_target_check",
    "contact_import_create",
    "contact_import_discard",
    "contact_import_discardable",
    "contact_import_file",
    "contact_import_idle_seconds",
    "contact_import_map",
    "contact_import_preview",
    "contact_import_refuse",
    "contact_import_retry",
    "contact_import_retryable",
    "contact_import_run",
    "contact_import_run_stored",
    "contact_import_summary",
    "contact_import_upload_path",
    "contact_import_uploads_purge",
    "contact_imports_requeue",
    "contact_imports_sweep",
    "contacts_decode",
    "contacts_header",
    "contacts_parse",
    "contacts_preview",
    "contacts_records",
    "contacts_tags_split",
    "contacts_time_parse",
    "header_names",
    "layout_column_map",
    "layout_detect",
]
