"""Walkthrough 22: what a newcomer marketer and engineer ran into on a fresh clone.

Each test is a bug found by hand, which failed before its fix:

* A CSV saved as Windows-1252 behind a UTF-8 byte-order mark (as a tool that writes
  the mark and then the system code page does): the mark is read as the three
  letters "ï»¿" in front of the first header, so its email column is not found. The
  mapping page offers "New trait ï_e_mail" for it, and `import_contacts` refuses the
  file ("The header has no email column"), even with `--encoding cp1252`.
* An identify with `name` and a blank `firstName` or `lastName` (a sign-up form
  whose first-name box was left empty): the blank field counts as "named apart",
  so `name` is not split, and the blank is no value: the profile gets no name at
  all, and the answer names nothing (README: "a blank firstName ... changes
  nothing"; `name` is split as an import splits a "Full name" column).
"""

import pytest
from django.core.management import CommandError, call_command

from profiles.importing import contact_import_file, contacts_preview
from profiles.models import Profile
from tests.profiles.conftest import tracking_processed

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


# A semicolon-separated Windows-1252 file that starts with a UTF-8 byte-order mark.
BOM_CP1252 = b"\xef\xbb\xbf" + (
    "E-Mail;Vorname;Nachname\r\n"
    "joerg.mueller@example.com;J\u00f6rg;M\u00fcller\r\n"
    "zoe.qa@example.com;Zo\u00eb;\u0152uvre\r\n"
).encode("cp1252")


def test_a_bom_before_windows_1252_text_leaves_the_email_column_recognised():
    preview = contacts_preview(BOM_CP1252)

    assert preview.column_map.get("E-Mail") == "email", preview.column_map


def test_a_bom_before_windows_1252_text_imports_its_rows():
    contact_import_file(filename="kontakte.csv", data=BOM_CP1252)

    joerg = Profile.objects.get(email="joerg.mueller@example.com")
    assert (joerg.first_name, joerg.last_name) == ("J\u00f6rg", "M\u00fcller")
    assert Profile.objects.get(email="zoe.qa@example.com").last_name == "\u0152uvre"


def test_import_contacts_with_the_encoding_named_reads_the_file(tmp_path):
    path = tmp_path / "kontakte.csv"
    path.write_bytes(BOM_CP1252)

    try:
        call_command("import_contacts", "--encoding", "cp1252", str(path))
    except CommandError as exc:
        pytest.fail(f"import_contacts refused the file: {exc}")

    assert Profile.objects.filter(email="joerg.mueller@example.com").exists()


def identify(client, user_id: str, traits: dict) -> dict:
    body = {"userId": user_id, "traits": traits, "messageId": f"qa22-{user_id}"}
    return tracking_processed(client, "/v1/identify", body)


def test_a_name_alone_is_split_as_a_full_name_column_is(client):
    # The baseline, which passes: "Lee, Ann" is Ann Lee.
    identify(client, "u0", {"email": "ann0@example.com", "name": "Lee, Ann"})

    ann = Profile.objects.get(email="ann0@example.com")
    assert (ann.first_name, ann.last_name) == ("Ann", "Lee")


@pytest.mark.parametrize(
    "blank",
    [{"firstName": ""}, {"firstName": "  "}, {"lastName": " "}, {"first_name": ""}],
)
def test_a_blank_first_or_last_name_beside_a_name_leaves_the_name_used(client, blank):
    identify(client, "u1", {"email": "ann@example.com", "name": "Lee, Ann", **blank})

    ann = Profile.objects.get(email="ann@example.com")
    assert (ann.first_name, ann.last_name) == ("Ann", "Lee")
