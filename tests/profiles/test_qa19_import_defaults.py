"""QA pass qa19: faults found in the contact import's new defaults (consent columns
in other languages, a newsletter's yes/no, the change time, the encoding hint).

Each test says what happens now in its docstring; each fails until it is fixed.
"""

import csv
from datetime import UTC, datetime

import pytest

from profiles.forms import DATE_FORMATS
from profiles.importing import (
    contact_import_create,
    contact_import_file,
    contact_import_map,
    contact_import_run_stored,
    contacts_preview,
)
from profiles.importing.layouts import layout_column_map, layout_detect
from profiles.importing.mapping import contacts_parse
from profiles.importing.reading import contacts_decoded, encoding_hint
from profiles.models import ConsentRecord, ContactImport, Profile, SubscriptionStatus
from profiles.services import consent_record
from tests.factories import ProfileFactory
from tests.profiles.test_import_consent_columns import upload

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


def start_with_defaults(client, url: str):
    """Press "Start the import" on the mapping page as it is pre-filled."""
    form = client.get(url).context["form"]
    return client.post(url, {name: form[name].initial or "" for name in form.fields})


def western(text: str) -> bytes:
    data = text.encode("cp1252")
    assert contacts_decoded(data).encoding == "cp1252"
    return data


# Consent ---------------------------------------------------------------------------


def test_a_pending_status_keeps_a_withdrawal_its_opt_in_column_states():
    """Pia signed up but never confirmed (Status "pending"), then unsubscribed from
    the confirmation mail, which the CRM's Subscribed column records as
    "unsubscribed" (an opt-in column reads status words, see opted_in_read).
    The row is imported with no consent at all: mapping.py's _consents_read
    returns as soon as the status is "pending" and is not UNSUBSCRIBED, before it
    reads the opt-in column, so the withdrawal is lost, while Bo's row, the same
    but for a blank Status, records his unsubscribe. "Pending gives no consent
    whatever another column says, unless a withdrawal" (CHANGELOG)."""
    data = (
        b"Email,Status,Subscribed\n"
        b"pia@example.com,pending,unsubscribed\n"
        b"bo@example.com,,unsubscribed\n"
    )

    contact_import_file(filename="crm.csv", data=data)

    bo = Profile.objects.get(email="bo@example.com")
    assert bo.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    pia = Profile.objects.get(email="pia@example.com")
    assert pia.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    (record,) = pia.consent_records.all()
    assert record.evidence["consent_column"] == "Subscribed"


def test_last_changed_mapped_by_hand_does_not_date_a_mailchimp_exports_opt_out(
    load_fixture,
):
    """Kenji subscribed in the shop in January 2025. The marketer adds an "Opted
    out" column to a Mailchimp subscribed export (Kenji: yes) and, on the mapping
    page, maps it to "Unsubscribed?" and LAST_CHANGED to "Last changed", the
    option named like it. The opt-out is recorded as of 2024-11-11 (LAST_CHANGED,
    when Mailchimp last changed the *subscription*), under the shop's later
    subscription, and Kenji stays subscribed: contacts_parse stops the change
    time dating a mapped status only when column_plan_build took the layout's
    own column by default (changed_at_of_layout), not when the same column was
    mapped by hand. The export's times belong to its status, whichever way its
    LAST_CHANGED column is mapped."""
    kenji = ProfileFactory(email="kenji.sato@example.net")
    consent_record(
        profile=kenji,
        status=SubscriptionStatus.SUBSCRIBED,
        source="shopify",
        occurred_at=datetime(2025, 1, 15, tzinfo=UTC),
    )
    lines = load_fixture("mailchimp/subscribed_members_export.csv").decode("utf-8-sig")
    header_line, *rows = [line for line in lines.splitlines() if line]
    text = "\n".join([f"{header_line},Opted out", *(f"{row},yes" for row in rows)])
    header = next(csv.reader([f"{header_line},Opted out"]))
    column_map = layout_column_map(layout_detect(header), header) | {
        "Opted out": "unsubscribed",
        "LAST_CHANGED": "changed_at",
    }
    contact_import = contact_import_create(filename="flag.csv", data=text.encode())
    contact_import_map(
        contact_import_id=contact_import.pk, column_map=column_map, date_format=""
    )

    contact_import_run_stored(contact_import_id=contact_import.pk)

    kenji.refresh_from_db()
    assert kenji.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    opt_out = kenji.consent_records.get(status=SubscriptionStatus.UNSUBSCRIBED)
    assert opt_out.evidence.get("occurred_at_is_import_time") is True


# A newsletter's yes/no -------------------------------------------------------------


def test_a_newsletter_column_whose_header_says_yes_or_no_is_read_as_consent():
    """A hand-made sheet names its column "Newsletter (yes/no)" and holds yes and
    no. It becomes the trait newsletter_yes_no and the list's consent is lost
    (the page says no column is read as consent), while "Subscribed (yes/no)"
    and "Unsubscribed (yes/no)" are read as consent: _default_target drops the
    "yesno" ending of a header, but layouts.py _is_newsletter_yes_no compares the
    whole column_key with NEWSLETTER_COLUMNS."""
    data = b"Email,Newsletter (yes/no)\nann@example.com,yes\nbo@example.com,no\n"

    assert contacts_preview(data).column_map["Newsletter (yes/no)"] == "subscribed"
    contact_import_file(filename="sheet.csv", data=data)

    ann = Profile.objects.get(email="ann@example.com")
    assert ann.subscription_status == SubscriptionStatus.SUBSCRIBED


# The change time -------------------------------------------------------------------


def test_a_change_time_no_date_format_reads_is_not_taken_by_default():
    """A CRM export re-saved by Excel writes its "Last Modified" with a two-digit
    year (31/03/25 14:05). TIME_LIKE takes \\d{2,4} as a year, so the column is
    mapped as "Last changed" by default, but none of the page's date formats
    (nor --date-format) reads a two-digit year: every row's change time is
    unread, their consent is dated by the import, the column is kept nowhere
    (not even as the trait it was before), and both the page ("choose the order
    its dates are written in below") and the report ("Choose the date format the
    file writes") send the marketer to a choice that cannot help. A column should
    be taken as the change time by default only if some date format reads it."""
    data = (
        b"Email,Status,Last Modified\n"
        b"ann@example.com,subscribed,31/03/25 14:05\n"
        b"ANN@example.com,unsubscribed,02/01/24 09:00\n"
    )

    column_map = contacts_preview(data).column_map
    readable = [
        date_format
        for date_format, _ in DATE_FORMATS
        if contacts_parse(data, date_format=date_format).rows[0].changed_at
    ]

    assert column_map["Last Modified"] != "changed_at" or readable


# Records 1 to 10 ISO, 11 to 20 day-first: a list merged from two CRMs.
TWO_WRITINGS = (
    "Email,Status,Last Modified\n"
    + "".join(
        f"iso{n}@example.com,unsubscribed,2025-01-{n + 1:02d} 09:00\n"
        for n in range(10)
    )
    + "".join(
        f"dmy{n}@example.com,unsubscribed,{n + 1:02d}/02/2025 09:00\n"
        for n in range(10)
    )
)


def test_a_change_time_past_the_tenth_distinct_value_is_checked_before_starting(
    signed_in,
):
    """The page asks to "Start anyway" when the change-time column holds values
    the date format does not read, "the first 20 records" being the sample. Here
    the last ten of them write 01/02/2025 09:00, which ISO 8601 (the default
    format) does not read, but the import starts at once and their unsubscribes
    are dated by the import: mapping.py column_values keeps 10 distinct values of
    a column (SAMPLE_VALUES), and a change time's every value is distinct, so
    _unread_change_times never sees records 11 to 20. The same cap lets the
    default map take a "Last Modified" column as the change time when its 12th
    record says "never"."""
    url = upload(signed_in, "crm.csv", TWO_WRITINGS.encode())

    started = start_with_defaults(signed_in, url)

    assert started.status_code == 200
    assert "01/02/2025 09:00" in started.content.decode()
    assert ContactImport.objects.get().queued_at is None


def test_brevos_modified_time_the_date_format_cannot_read_is_said_before_starting(
    signed_in,
):
    """A Brevo export opened and saved again in Excel writes MODIFIED_TIME as
    31/03/2025 09:00. The page marks the column "also read as the time of the
    consent the export states", and it dates each row's consent now, yet with the
    default date format (ISO 8601) the import starts at once: views/imports.py
    _unread_change_times looks only at a column mapped to changed_at, not at the
    layout's own change time. Anna's unsubscribe is recorded as of the import,
    which no later import can take back, the very case the "Start anyway"
    question was added for."""
    data = (
        b"EMAIL;EMAIL_BLACKLISTED;MODIFIED_TIME\nanna@example.de;Yes;31/03/2025 09:00\n"
    )
    url = upload(signed_in, "brevo.csv", data)

    started = start_with_defaults(signed_in, url)

    assert started.status_code == 200
    assert "31/03/2025 09:00" in started.content.decode()
    assert ContactImport.objects.get().queued_at is None
    assert not ConsentRecord.objects.exists()


# The encoding suggestion -----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "E-Mail;Vorname;Nachname;Straße;Ort;Wasserverbrauch\n"
        "anna.mueller@example.de;Anna;Müller;Hauptstraße 12;München;85 m³\n"
        "jens.gross@example.de;Jens;Groß;Schloßallee 3;Köln;120 m³\n",
        "email;prénom;nom;ville;volume\n"
        "chloe@example.fr;Chloé;Lefèvre;Besançon;20 m³\n"
        "remi@example.fr;Rémi;Gauthier;Orléans;35 m³\n",
        "email,nombre,ciudad,consumo\n"
        "jose@example.es,José Peña,Logroño,14 m³\n"
        "maria@example.es,María Gómez,Cádiz,9 m³\n",
    ],
    ids=["german-water", "french-removals", "spanish-water"],
)
def test_a_western_list_with_cubic_metres_is_told_no_other_code_page(text):
    """A German utility's, a French removals firm's or a Spanish water company's
    Windows-1252 list with a volume column (85 m³): the page and the report say
    "m³ reads mł in Windows-1250, import it again in that encoding", which would
    turn every ñ into ń, è into č and à into ŕ. reading.py _word_odd takes a
    superscript digit against a letter for a letter of another code page
    (letter_like), and Windows-1250 has ł where Windows-1252 has ³. A unit says
    nothing of the code page, as a price does not."""
    assert encoding_hint(western(text)) is None


@pytest.mark.parametrize(
    "cell",
    ["95 m²", "CO² neutral"],
)
def test_an_english_list_with_a_superscript_two_is_told_no_mac_os_roman(cell):
    """An Irish estate agent's list with a floor area (95 m²), or a UK list whose
    note says "CO² neutral": the page suggests Mac OS Roman ("m² reads m≤"), in
    which every é of a later row becomes È and every ’ an í. As with m³, the
    superscript beside a letter counts as a wrong code page's letter."""
    data = western(
        "email,name,town,note\n"
        f"sean@example.ie,Seán Murphy,Galway,{cell}\n"
        "maire@example.ie,Máire Byrne,Cork,\n"
    )

    assert encoding_hint(data) is None


def test_a_faroese_address_list_is_told_no_baltic_code_page():
    """A Danish shop's Windows-1252 list with customers on the Faroe Islands: the
    page says "Fuglafjørður reads Fuglafjųršur in Windows-1257 (Baltic)". Faroese
    writes ø beside á, ó and ð in one word (Sørvágur, Gøtugjógv, Norðragøta),
    which _LETTER_COMPANIONS allows ø only beside å, æ and é: read as Windows-1252
    every such place is odd, and read as Baltic none is."""
    data = western(
        "email,navn,bygd\n"
        "jon@example.fo,Jón Hansen,Fuglafjørður\n"
        "anna@example.fo,Anna Joensen,Klaksvík\n"
        "roi@example.fo,Rói Patursson,Tórshavn\n"
        "sigrid@example.fo,Sigrid Olsen,Norðragøta\n"
    )

    assert encoding_hint(data) is None
