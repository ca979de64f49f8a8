"""Every note of an import's report about one record names its address as written."""

import csv
import io

import pytest
from django.urls import reverse

from profiles.importing import contact_import_file
from profiles.models import (
    Profile,
    SubscriptionStatus,
    TraitDefinition,
    TraitType,
)
from tests.profiles.test_import_reading_files import xlsx_bytes

pytestmark = pytest.mark.django_db

# As a file writes it: the profile keeps ann@example.com.
WRITTEN = "Ann@Example.COM"


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def declared_points() -> None:
    TraitDefinition.objects.create(name="loyalty_points", type=TraitType.NUMBER)


def unsubscribed_ann() -> None:
    Profile.objects.create(
        email="ann@example.com",
        email_display="ann@example.com",
        subscription_status=SubscriptionStatus.UNSUBSCRIBED,
    )


def ann_with_an_address_in_parts() -> None:
    Profile.objects.create(
        email="ann@example.com",
        email_display="ann@example.com",
        traits={"address": {"street": "Storgata 1", "city": "Oslo"}},
    )


NOTED = [
    # a status that is no consent yet, and a control character: ignored values
    ("ignored_value", f"Email,Status\n{WRITTEN},pending\n", None),
    ("ignored_value", f"Email,Note\n{WRITTEN},bad\x1bnote\n", None),
    ("country_as_trait", f"Email,Country\n{WRITTEN},Atlantis\n", None),
    ("decimal_point", f"Email,Loyalty Points\n{WRITTEN},1.000\n", declared_points),
    (
        "number_as_text",
        "Email Address,First Name,LATITUDE,MEMBER_RATING,LAST_CHANGED,LEID,EUID\n"
        f"{WRITTEN},Ann,12345678901234567,4,,,\n",
        None,
    ),
    (
        "suppressed_as_cleaned",
        "Email,Email Marketing Consent,Email Marketing Consent Timestamp\n"
        f"{WRITTEN},SUPPRESSED,2025-02-03T08:00:00+00:00\n",
        None,
    ),
    (
        "consent_time_future",
        "Email,Email Marketing Consent,Email Marketing Consent Timestamp\n"
        f"{WRITTEN},SUBSCRIBED,2099-02-03T08:00:00+00:00\n",
        None,
    ),
    ("kept_status", f"Email,Status\n{WRITTEN},subscribed\n", unsubscribed_ann),
    (
        "structured_trait_kept",
        f"Email,Address\n{WRITTEN},Main Street 3\n",
        ann_with_an_address_in_parts,
    ),
]


@pytest.mark.parametrize(
    ("kind", "text", "given"),
    NOTED,
    ids=[f"{case[0]}-{n}" for n, case in enumerate(NOTED)],
)
def test_a_note_about_one_record_names_its_address_as_written(kind, text, given):
    if given:
        given()

    done = contact_import_file(filename="contacts.csv", data=text.encode())

    (note,) = [note for note in done.notes if note["kind"] == kind]
    assert (note["record"], note["email"]) == (1, WRITTEN)


def test_an_excel_error_note_names_the_address_even_of_a_refused_record():
    data = xlsx_bytes([["Email", "Score"], [WRITTEN, "#N/A"], ["nobody", "#REF!"]])

    done = contact_import_file(filename="errors.xlsx", data=data)

    notes = [n for n in done.notes if n["kind"] == "sheet_error"]
    assert [(n["record"], n["email"], n["message"]) for n in notes] == [
        (
            1,
            WRITTEN,
            "Record 1: Score holds the Excel error #N/A, so it was read as empty.",
        ),
        (
            2,
            "nobody",
            "Record 2: Score holds the Excel error #REF!, so it was read as empty.",
        ),
    ]
    assert [(r["record"], r["email"]) for r in done.rejections] == [(2, "nobody")]


def test_each_record_of_one_mailbox_is_named_as_it_wrote_the_address():
    # given one person written two ways, each record with a note of its own
    ann_with_an_address_in_parts()
    data = (
        f"Email,Note,Address\n{WRITTEN},bad\x1bone,Main Street 3\n"
        "ann@example.com,bad\x1btwo,\n"
    ).encode()

    done = contact_import_file(filename="twice.csv", data=data)

    # then each note names the record's own spelling, not the merged row's
    named = [
        (n["kind"], n.get("record", n.get("records")), n["email"])
        for n in done.notes
        if n["kind"] != "no_consent_column"
    ]
    assert named == [
        ("merged", [1, 2], "ann@example.com"),
        ("ignored_value", 1, WRITTEN),
        ("ignored_value", 2, "ann@example.com"),
        ("structured_trait_kept", 1, WRITTEN),
    ]


def test_the_report_and_the_page_name_the_address_of_a_note(signed_in):
    data = f"Email,Note\n{WRITTEN},bad\x1bnote\n".encode()
    done = contact_import_file(filename="notes.csv", data=data)

    report = signed_in.get(reverse("import_rejections_csv", kwargs={"pk": done.pk}))
    page = signed_in.get(reverse("import_detail", kwargs={"pk": done.pk}))

    rows = list(csv.reader(io.StringIO(report.content.decode("utf-8-sig"))))
    assert [row[:6] for row in rows[1:]] == [
        ["note", "1", "", "Note", WRITTEN, "ignored_value"],
        ["note", "", "", "", "", "no_consent_column"],
    ]
    assert (
        "Record 1: Note &#x27;bad\\x1bnote&#x27; was not imported (it holds the "
        "control character U+001B). "
        f'<span class="muted" data-note-email>({WRITTEN})</span></li>'
    ) in page.content.decode()
