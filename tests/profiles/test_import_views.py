"""The marketer pages for profiles and imports, driven as a signed-in user."""

import csv
import io
import re
import zipfile

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from openpyxl import Workbook

from config.celery import app as celery_app
from profiles.importing import (
    contact_import_create,
    contact_import_file,
    contact_import_map,
    contact_import_upload_path,
)
from profiles.models import (
    ContactImport,
    ImportStatus,
    Profile,
    TraitDefinition,
    TraitType,
)
from tests.factories import ProfileFactory, UserFactory

SUBSCRIBED = "mailchimp/subscribed_members_export.csv"
REPORT_HEADER = ["kind", "record", "line", "column", "email", "reason", "message"]


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


@pytest.fixture
def celery_eager():
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = before


@pytest.fixture
def subscribed_import(db, load_fixture):
    return contact_import_file(
        filename="subscribed_members_export.csv", data=load_fixture(SUBSCRIBED)
    )


def mapping_defaults(client, url: str) -> dict[str, str]:
    """Return the mapping form's pre-filled choices, as a browser would submit them."""
    form = client.get(url).context["form"]
    return {name: form[name].initial or "" for name in form.fields}


def upload(load_fixture, relative: str = SUBSCRIBED) -> SimpleUploadedFile:
    name = relative.rsplit("/", 1)[-1]
    return SimpleUploadedFile(name, load_fixture(relative), content_type="text/csv")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("profile_list", {}),
        ("profile_detail", {"pk": 1}),
        ("import_list", {}),
        ("import_detail", {"pk": 1}),
        ("import_rejections_csv", {"pk": 1}),
    ],
)
def test_the_pages_send_a_stranger_to_sign_in(client, name, kwargs):
    response = client.get(reverse(name, kwargs=kwargs))

    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


@pytest.mark.django_db
def test_the_pages_refuse_a_signed_in_user_who_is_not_staff(client):
    outsider = UserFactory(username="outsider", is_staff=False)
    client.force_login(outsider)

    response = client.post(reverse("import_list"), {"file": b""})

    assert response.status_code == 403
    assert ContactImport.objects.count() == 0


def test_an_upload_is_stored_and_queued_until_a_worker_runs_it(
    signed_in, load_fixture, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = signed_in.post(
            reverse("import_list"), {"file": upload(load_fixture)}
        )

    contact_import = ContactImport.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("import_mapping", kwargs={"pk": contact_import.pk})
    assert callbacks == []
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = signed_in.post(
            response.url, mapping_defaults(signed_in, response.url)
        )

    contact_import.refresh_from_db()
    assert response.url == reverse("import_detail", kwargs={"pk": contact_import.pk})
    assert contact_import.filename == "subscribed_members_export.csv"
    assert contact_import.status == ImportStatus.PENDING
    assert contact_import.column_map["Email Address"] == "email"
    assert contact_import.column_map["MEMBER_RATING"] == "traits.member_rating"
    assert len(callbacks) == 1
    path = contact_import_upload_path(contact_import)
    assert path.read_bytes() == load_fixture(SUBSCRIBED)
    assert Profile.objects.count() == 0
    page = signed_in.get(response.url).content.decode()
    assert "<strong data-status>Queued</strong>" in page
    assert "waits for a background worker" in page


def test_an_upload_with_an_eager_worker_imports_the_file(
    signed_in, load_fixture, django_capture_on_commit_callbacks, celery_eager
):
    response = signed_in.post(reverse("import_list"), {"file": upload(load_fixture)})
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in.post(
            response.url, mapping_defaults(signed_in, response.url)
        )

    contact_import = ContactImport.objects.get()
    assert contact_import.status == ImportStatus.DONE
    assert (contact_import.records, contact_import.rejected) == (40, 3)
    assert Profile.objects.count() == 34
    assert not contact_import_upload_path(contact_import).exists()
    page = signed_in.get(response.url).content.decode()
    assert "<strong data-status>Done</strong>" in page
    assert "maria.garcia@@example.net" in page
    assert (
        "Records 1 and 9 are one address; merged into one profile. Where they hold "
        "different values, the newest record&#x27;s is kept"
    ) in page


def test_an_upload_without_a_file_shows_the_form_error(signed_in):
    response = signed_in.post(reverse("import_list"), {})

    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert ContactImport.objects.count() == 0


def test_the_import_list_shows_past_imports_with_counts(signed_in, subscribed_import):
    response = signed_in.get(reverse("import_list"))

    page = response.content.decode()
    assert response.status_code == 200
    detail = reverse("import_detail", kwargs={"pk": subscribed_import.pk})
    assert f'<a href="{detail}">subscribed_members_export.csv</a>' in page
    assert "<td>40</td><td>37</td><td>3</td>" in page


def test_a_failed_import_shows_its_error(signed_in):
    failed = contact_import_file(filename="names.csv", data=b"name\nPat\n")

    response = signed_in.get(reverse("import_detail", kwargs={"pk": failed.pk}))

    page = response.content.decode()
    assert "<strong data-status>Failed</strong>" in page
    assert "The header has no email column." in page


def test_the_rejected_rows_download_as_csv(signed_in, subscribed_import):
    url = reverse("import_rejections_csv", kwargs={"pk": subscribed_import.pk})

    response = signed_in.get(url)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    # Excel on Windows reads UTF-8 only after a byte-order mark.
    assert response.content.startswith("\ufeff".encode())
    assert response["Content-Disposition"] == (
        f'attachment; filename="import-{subscribed_import.pk}-rejections.csv"'
    )
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[:4] == [
        REPORT_HEADER,
        [
            "refused row",
            "34",
            "36",
            "",
            "not-an-email",
            "invalid_email",
            "An email address must have an @-sign.",
        ],
        [
            "refused row",
            "37",
            "39",
            "",
            "maria.garcia@@example.net",
            "invalid_email",
            "The part after the @-sign contains invalid characters: '@'.",
        ],
        [
            "refused row",
            "40",
            "42",
            "",
            "",
            "missing_email",
            "The Email Address cell is empty.",
        ],
    ]
    assert len(rows) == 4 + len(subscribed_import.notes)


def test_the_report_download_holds_refused_fields_and_notes(signed_in):
    # Given a sheet with a refused row, a refused field, an Excel error, a
    # duplicate and a column named like a profile field
    data = xlsx_bytes(
        [
            ["Email", "Err", "Spend", "lifetime_value"],
            ["a@example.com", "#N/A", 7, 5],
            ["nobody", "", "", ""],
            ["b@example.com", "", "1e5000", ""],
            ["A@example.com", "", "", ""],
        ]
    )
    TraitDefinition.objects.create(name="spend", type=TraitType.NUMBER)
    contact_import = contact_import_file(filename="qa.xlsx", data=data)

    # When the marketer downloads the report
    url = reverse("import_rejections_csv", kwargs={"pk": contact_import.pk})
    response = signed_in.get(url)

    # Then it has every item the page lists, each saying what it is
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0] == REPORT_HEADER
    kinds = [(row[0], row[5]) for row in rows[1:]]
    assert kinds == [
        ("refused row", "invalid_email"),
        ("refused field", "number_too_large"),
        ("note", "merged"),
        ("note", "reserved_column"),
        ("note", "sheet_error"),
        ("note", "no_consent_column"),
    ]
    field = rows[2]
    assert field[:5] == ["refused field", "3", "4", "Spend", "b@example.com"]
    merged, reserved, sheet_error, _ = rows[3:]
    assert merged[1:5] == ["1 4", "", "", "a@example.com"]
    assert reserved[3] == "lifetime_value"
    assert sheet_error[:5] == ["note", "1", "", "Err", "a@example.com"]
    assert sheet_error[6] == (
        "Record 1: Err holds the Excel error #N/A, so it was read as empty."
    )


def test_the_report_download_names_the_address_of_a_tag_note_of_one_record(
    signed_in,
):
    data = b'Email,Tags\nann@example.com,"Bad\x1btag"\nbob@example.com,VIP\n'
    contact_import = contact_import_file(filename="tags.csv", data=data)

    url = reverse("import_rejections_csv", kwargs={"pk": contact_import.pk})
    response = signed_in.get(url)

    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    (tag_row,) = [row for row in rows if row[5] == "tag_left_out"]
    assert tag_row[:5] == ["note", "1", "2", "Tags", "ann@example.com"]


def test_the_report_download_defuses_spreadsheet_formulas(signed_in):
    data = (
        b'email\n"=HYPERLINK(""http://evil.example"")"\n'
        b"-a@example.com\n-A@example.com\n"
    )
    contact_import = contact_import_file(filename="evil.csv", data=data)
    url = reverse("import_rejections_csv", kwargs={"pk": contact_import.pk})

    response = signed_in.get(url)

    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[1][4] == '\'=HYPERLINK("http://evil.example")'
    assert rows[2][0] == "note"
    assert rows[2][4] == "'-a@example.com"


def test_the_profile_list_searches_by_name_email_and_tag(signed_in, subscribed_import):
    response = signed_in.get(reverse("profile_list"), {"q": "chloé"})

    page = response.content.decode()
    chloe = Profile.objects.get(email="chloe.dubois@example.org")
    assert f'href="{reverse("profile_detail", kwargs={"pk": chloe.pk})}"' in page
    assert (
        '<td data-tags><span class="pill">Club members</span> '
        '<span class="pill">Newsletter</span> </td>'
    ) in page
    assert "1 profile." in page
    tagged = signed_in.get(reverse("profile_list"), {"q": "vip"}).content.decode()
    assert "4 profiles." in tagged


def test_the_profile_list_filters_by_status(signed_in, subscribed_import):
    ProfileFactory(email="left@example.com", subscription_status="unsubscribed")

    response = signed_in.get(reverse("profile_list"), {"status": "unsubscribed"})

    page = response.content.decode()
    assert "1 profile." in page
    assert "left@example.com" in page


def test_the_profile_page_shows_traits_tags_and_consent(signed_in, subscribed_import):
    olivia = Profile.objects.get(email="olivia.brown@example.net")

    response = signed_in.get(reverse("profile_detail", kwargs={"pk": olivia.pk}))

    page = response.content.decode()
    assert response.status_code == 200
    assert "Met at Spring Expo 2024\nInterested in daypacks, asked about sizing" in page
    assert "Expo 2024" in page
    assert "import:mailchimp" in page
    assert "198.51.100.88" in page
    assert "No events yet." in page
    assert re.search(r"<td data-status>Subscribed, as of [^<]+ <span", page)


def test_a_big_report_lists_its_first_items_and_downloads_them_all(signed_in):
    rows = "".join(f"user{n}@@example.com\n" for n in range(250))
    rows += "".join(f"pat{n}@example.com\nPat{n}@example.com\n" for n in range(210))
    contact_import = contact_import_file(
        filename="big.csv", data=("email\n" + rows).encode()
    )
    assert len(contact_import.rejections) == 250
    assert len(contact_import.notes) == 211

    response = signed_in.get(reverse("import_detail", kwargs={"pk": contact_import.pk}))

    page = response.content.decode()
    assert "The first 200 of 250 are listed here; the CSV report has them all." in page
    assert page.count("user") == 200
    assert "Download the whole report as CSV" in page
    assert "211 notes in all; the first 200 are listed, and the CSV report" in page
    url = reverse("import_rejections_csv", kwargs={"pk": contact_import.pk})
    download = signed_in.get(url).content.decode()
    assert len(list(csv.reader(io.StringIO(download)))) == 1 + 250 + 211


# Files that cannot be read, and discarding -------------------------------------------


def flashes(response) -> list[tuple[str, str]]:
    return [(m.level_tag, m.message) for m in get_messages(response.wsgi_request)]


def xlsx_bytes(rows: list[list[object]]) -> bytes:
    workbook = Workbook()
    for row in rows:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def csv_zip() -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as target:
        target.writestr("subscribed_members_export.csv", "Email Address\n")
    return archive.getvalue()


WHOLE_WORKBOOK = xlsx_bytes([["Email"], ["a@example.com"]])


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\xef\xbb\xbf", "The file is empty."),
        (
            WHOLE_WORKBOOK[: len(WHOLE_WORKBOOK) // 2],
            "The workbook is damaged (often a file cut short while saving or "
            "uploading), so it cannot be read. Open it in Excel, save it again and "
            "upload the new file.",
        ),
        (
            csv_zip(),
            "This is a zip archive. Unzip the Mailchimp export and import its CSV "
            "files one by one (subscribed, unsubscribed and cleaned, in any order).",
        ),
    ],
)
def test_an_unreadable_upload_fails_at_once_with_only_its_error(
    signed_in, data, error, django_capture_on_commit_callbacks
):
    file = SimpleUploadedFile("contacts.csv", data, content_type="text/csv")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = signed_in.post(reverse("import_list"), {"file": file})

    contact_import = ContactImport.objects.get()
    assert response.url == reverse("import_detail", kwargs={"pk": contact_import.pk})
    assert flashes(response) == [("error", f"contacts.csv cannot be imported: {error}")]
    assert (contact_import.status, contact_import.error) == (ImportStatus.FAILED, error)
    assert contact_import.finished_at is not None
    assert callbacks == []
    page = signed_in.get(response.url).content.decode()
    assert "<strong data-status>Failed</strong>" in page
    assert "map its columns" not in page
    assert "data-discard" in page


def test_a_lone_cr_file_uploads_to_its_mapping_page(signed_in):
    data = b"Email;Name;City\rcr1.qa@example.com;Cr One;Paris\rcr2.qa@example.com;;\r"
    file = SimpleUploadedFile("mac.csv", data, content_type="text/csv")

    response = signed_in.post(reverse("import_list"), {"file": file})
    mapping = signed_in.get(response.url)

    assert mapping.status_code == 200
    assert mapping.context["form"].names == ["Email", "Name", "City"]
    assert ContactImport.objects.get().status == ImportStatus.PENDING


def test_a_pending_upload_that_cannot_be_read_is_failed_by_its_mapping_page(
    signed_in,
):
    # Uploaded before uploads were checked: a first row that is no header.
    data = b"ana@example.com\nbob@example.com\n"
    contact_import = contact_import_create(filename="long.csv", data=data)
    url = reverse("import_mapping", kwargs={"pk": contact_import.pk})

    response = signed_in.get(url)

    contact_import.refresh_from_db()
    assert response.url == reverse("import_detail", kwargs={"pk": contact_import.pk})
    assert contact_import.status == ImportStatus.FAILED
    assert contact_import.error == (
        "The first row holds the address ana@example.com where the column names "
        "belong, so it would be read as a name and its person left out. Add a "
        "first row that names the columns (Email, First name...) and upload the "
        "file again."
    )
    page = signed_in.get(response.url)
    assert page.status_code == 200
    assert contact_import.error in page.content.decode()


def test_a_pending_upload_whose_file_is_gone_is_failed_by_its_mapping_page(signed_in):
    contact_import = contact_import_create(filename="a.csv", data=b"email\n")
    contact_import_upload_path(contact_import).unlink()

    response = signed_in.get(
        reverse("import_mapping", kwargs={"pk": contact_import.pk})
    )

    contact_import.refresh_from_db()
    assert response.status_code == 302
    assert (contact_import.status, contact_import.error) == (
        ImportStatus.FAILED,
        "The uploaded file is gone; upload it again.",
    )


def test_repeated_header_names_each_get_a_select_and_all_are_imported(
    signed_in, django_capture_on_commit_callbacks, celery_eager
):
    data = b"Email,Nickname,Nickname,,\r\ndup.qa@example.com,First,Second,X,Y"
    file = SimpleUploadedFile("dup.csv", data, content_type="text/csv")
    response = signed_in.post(reverse("import_list"), {"file": file})

    with django_capture_on_commit_callbacks(execute=True):
        signed_in.post(response.url, mapping_defaults(signed_in, response.url))

    contact_import = ContactImport.objects.get()
    assert contact_import.column_map == {
        "Email": "email",
        "Nickname": "traits.nickname",
        "Nickname (column 3)": "traits.nickname_column_3",
        "Column 4": "traits.column_4",
        "Column 5": "traits.column_5",
    }
    assert Profile.objects.get(email="dup.qa@example.com").traits == {
        "nickname": "First",
        "nickname_column_3": "Second",
        "column_4": "X",
        "column_5": "Y",
    }


def test_an_unmapped_upload_is_discarded_with_its_file(signed_in):
    contact_import = contact_import_create(filename="a.csv", data=b"email\n")
    path = contact_import_upload_path(contact_import)
    detail = signed_in.get(reverse("import_detail", kwargs={"pk": contact_import.pk}))
    assert "data-discard" in detail.content.decode()

    response = signed_in.post(
        reverse("import_discard", kwargs={"pk": contact_import.pk})
    )

    assert response.url == reverse("import_list")
    assert flashes(response) == [
        ("success", "a.csv is discarded; none of it was imported.")
    ]
    assert not ContactImport.objects.exists()
    assert not path.exists()


def test_a_failed_import_that_wrote_nothing_is_discarded(signed_in):
    failed = contact_import_file(filename="names.csv", data=b"name\nPat\n")

    signed_in.post(reverse("import_discard", kwargs={"pk": failed.pk}))

    assert not ContactImport.objects.exists()


def test_queued_done_and_partly_written_imports_are_kept(signed_in, subscribed_import):
    queued = contact_import_create(filename="q.csv", data=b"email\na@example.com\n")
    contact_import_map(
        contact_import_id=queued.pk, column_map={"email": "email"}, date_format=""
    )
    partial = ContactImport.objects.create(
        filename="p.csv", status=ImportStatus.FAILED, rows_done=10, rows_total=34
    )

    for kept in (queued, subscribed_import, partial):
        detail = signed_in.get(reverse("import_detail", kwargs={"pk": kept.pk}))
        response = signed_in.post(reverse("import_discard", kwargs={"pk": kept.pk}))

        assert "data-discard" not in detail.content.decode()
        assert response.url == reverse("import_detail", kwargs={"pk": kept.pk})
        assert flashes(response) == [
            (
                "error",
                "This import is queued, running, done or has written rows, "
                "so it is kept.",
            )
        ]
    assert ContactImport.objects.count() == 3
    assert contact_import_upload_path(queued).exists()


def test_discarding_takes_a_post(signed_in):
    contact_import = contact_import_create(filename="a.csv", data=b"email\n")

    response = signed_in.get(
        reverse("import_discard", kwargs={"pk": contact_import.pk})
    )

    assert response.status_code == 405
    assert ContactImport.objects.count() == 1


def test_discarding_an_import_already_discarded_finds_nothing(signed_in):
    contact_import = contact_import_create(filename="a.csv", data=b"email\n")
    url = reverse("import_discard", kwargs={"pk": contact_import.pk})
    signed_in.post(url)

    response = signed_in.post(url)

    assert response.status_code == 404


@pytest.fixture
def failed_before_first_row(db, load_fixture, monkeypatch):
    """An import whose worker stopped on an error before it wrote a row."""
    from profiles.importing import runs

    def stopped(rows, **kwargs):
        raise RuntimeError("the database went away")

    contact_import = contact_import_create(
        filename="subscribed.csv", data=load_fixture(SUBSCRIBED)
    )
    with monkeypatch.context() as patched:
        patched.setattr(runs, "contact_rows_write", stopped)
        with pytest.raises(RuntimeError):
            runs.contact_import_run_stored(contact_import_id=contact_import.pk)
    return contact_import


@pytest.mark.django_db
def test_an_import_that_failed_before_its_first_row_offers_to_run_again(
    signed_in, failed_before_first_row
):
    contact_import = failed_before_first_row

    page = signed_in.get(reverse("import_detail", args=[contact_import.pk]))

    html = page.content.decode()
    assert "0 of 34 rows were written; run it again" in html
    assert reverse("import_retry", args=[contact_import.pk]) in html
    assert ">Run it again</button>" in html


@pytest.mark.django_db
def test_the_profile_page_shows_traits_as_they_were_sent(signed_in):
    kim = ProfileFactory(
        traits={
            "address": {"city": "São Paulo", "state": None},
            "vip": False,
            "huge": 1e308,
            "plan": "gold",
        }
    )

    page = signed_in.get(reverse("profile_detail", kwargs={"pk": kim.pk}))

    html = page.content.decode()
    assert "{&quot;city&quot;: &quot;São Paulo&quot;, &quot;state&quot;: null}" in html
    assert '<td style="white-space: pre-line">false</td>' in html
    assert "1e+308" in html
    assert "None" not in html


@pytest.mark.django_db
def test_a_file_with_a_thousand_columns_can_be_mapped(signed_in):
    header = "email," + ",".join(f"field_{n}" for n in range(1200))
    row = "ana@example.com," + ",".join("x" for _ in range(1200))
    contact_import = contact_import_create(
        filename="wide.csv", data=f"{header}\n{row}\n".encode()
    )
    url = reverse("import_mapping", kwargs={"pk": contact_import.pk})

    response = signed_in.post(url, mapping_defaults(signed_in, url))

    assert response.status_code == 302
    contact_import.refresh_from_db()
    assert contact_import.column_map["email"] == "email"


@pytest.mark.django_db
def test_running_an_import_again_twice_says_it_is_queued(
    signed_in, failed_before_first_row
):
    contact_import = failed_before_first_row
    url = reverse("import_retry", args=[contact_import.pk])

    first = signed_in.post(url, follow=True).content.decode()
    second = signed_in.post(url, follow=True).content.decode()

    assert "The import is queued again" in first
    assert "The import is already queued or running." in second
    assert "cannot run again" not in second


@pytest.mark.django_db
def test_the_profile_page_shows_an_integer_too_large_for_a_float(signed_in):
    kim = ProfileFactory(traits={"account_no": 10**400, "small": 12})

    page = signed_in.get(reverse("profile_detail", kwargs={"pk": kim.pk}))

    assert page.status_code == 200
    assert "1e+400" in page.content.decode()


@pytest.mark.django_db
def test_an_upload_refused_before_it_started_offers_no_run_again(signed_in):
    contact_import = contact_import_create(filename="nul.csv", data=b"email\na\x00b\n")
    signed_in.get(reverse("import_mapping", kwargs={"pk": contact_import.pk}))

    page = signed_in.get(reverse("import_detail", args=[contact_import.pk]))

    html = page.content.decode()
    assert "NUL characters" in html
    assert reverse("import_retry", args=[contact_import.pk]) not in html


@pytest.mark.django_db
def test_a_running_import_not_yet_read_says_so_instead_of_0_of_0(signed_in):
    contact_import = contact_import_create(filename="a.csv", data=b"email\na@x.org\n")
    ContactImport.objects.filter(pk=contact_import.pk).update(
        status=ImportStatus.RUNNING, column_map={"email": "email"}
    )

    page = signed_in.get(reverse("import_detail", args=[contact_import.pk]))

    html = page.content.decode()
    assert "Reading and checking the file…" in html
    assert "0 of 0 rows" not in html


@pytest.mark.django_db
def test_a_large_integer_trait_is_shown_without_padding(signed_in):
    kim = ProfileFactory(traits={"mid": 10**21 + 1})

    page = signed_in.get(reverse("profile_detail", kwargs={"pk": kim.pk}))

    assert "1e+21" in page.content.decode()


def test_the_import_page_and_the_sources_page_say_1_of_a_thing_in_the_singular(
    signed_in,
):
    # given one import of one new address, and one import that failed
    done = contact_import_file(filename="one.csv", data=b"email\nann@example.com\n")
    contact_import_file(filename="names.csv", data=b"name\nPat\n")

    page = signed_in.get(reverse("import_detail", kwargs={"pk": done.pk}))
    sources = signed_in.get(reverse("sources_health"))

    detail = page.content.decode()
    assert '<div class="figure">1</div><div class="label">record</div>' in detail
    assert '<div class="label">profile created</div>' in detail
    assert '<div class="label">profiles already known</div>' in detail
    assert '<div class="label">import failed</div>' in sources.content.decode()


def test_the_mapping_page_says_a_new_trait_of_dates_must_be_declared_to_be_dates(
    signed_in, load_fixture
):
    # given Mailchimp's export, whose Birthday column holds 07/14 and the like
    uploaded = signed_in.post(reverse("import_list"), {"file": upload(load_fixture)})

    page = signed_in.get(uploaded.url).content.decode()

    # then the page says so, with a link that declares the trait as a date
    assert "data-undeclared-date>“Birthday” holds dates such as" in page
    assert 'href="/profiles/traits/new/?name=birthday&amp;type=date"' in page

    # and once it is declared, it says nothing
    TraitDefinition.objects.create(name="birthday", type="date")
    assert "data-undeclared-date" not in signed_in.get(uploaded.url).content.decode()


def test_the_declare_page_takes_the_name_and_type_a_link_gives(signed_in):
    response = signed_in.get(reverse("trait_new"), {"name": "birthday", "type": "date"})

    form = response.context["form"]
    assert (form.initial["name"], form.initial["type"]) == ("birthday", "date")


def test_the_mapping_page_says_which_column_is_read_as_the_consent_time(
    signed_in, load_fixture
):
    # given Mailchimp's unsubscribed export, whose UNSUB_TIME dates each unsubscribe
    data = load_fixture("mailchimp/unsubscribed_members_export.csv")
    upload = SimpleUploadedFile("unsubscribed.csv", data, content_type="text/csv")
    uploaded = signed_in.post(reverse("import_list"), {"file": upload})

    page = signed_in.get(uploaded.url).content.decode()

    row = page.split("<td>UNSUB_TIME</td>")[1].split("</tr>")[0]
    assert "data-consent-time>also read as the time of the consent the export" in row


def test_a_decimal_sample_is_not_taken_for_a_date(signed_in):
    data = b"Email,Shoe Size,Joined\nann@example.com,10.5,14.07.2021\n"
    upload = SimpleUploadedFile("sizes.csv", data, content_type="text/csv")
    uploaded = signed_in.post(reverse("import_list"), {"file": upload})

    page = signed_in.get(uploaded.url).content.decode()

    assert "“Joined” holds dates such as 14.07.2021" in page
    assert "Shoe Size” holds dates" not in page


def test_the_mapping_page_says_when_a_status_column_holds_no_status_words(
    signed_in, load_fixture
):
    crm = SimpleUploadedFile(
        "crm.csv",
        b"Email,Name,Status\nada@example.com,Ada,Active\nbo@example.com,Bo,Lead\n",
        content_type="text/csv",
    )
    uploaded = signed_in.post(reverse("import_list"), {"file": crm})

    page = signed_in.get(uploaded.url).content.decode()

    assert "data-unread-status>“Status” is read as email consent" in page
    assert "“Active”, which are no subscription status" in page

    listed = signed_in.post(reverse("import_list"), {"file": upload(load_fixture)})
    assert "data-unread-status" not in signed_in.get(listed.url).content.decode()


def test_a_consent_column_of_no_consent_words_starts_only_when_confirmed(signed_in):
    crm = SimpleUploadedFile(
        "crm.csv",
        b"Email,Name,Zgoda,Stage\nada@example.com,Ada,tak,Active\n",
        content_type="text/csv",
    )
    url = signed_in.post(reverse("import_list"), {"file": crm}).url
    form = signed_in.get(url).context["form"]
    data = {name: form[name].initial or "" for name in form.fields}
    stage = next(n for n in form.fields if form[n].label == "Stage")
    zgoda = next(n for n in form.fields if form[n].label == "Zgoda")

    # Polish yes is read as yes: no warning, and the import starts.
    yes_no = {**data, zgoda: "subscribed"}
    assert (
        "data-unread-status"
        not in signed_in.post(url, {**yes_no, "reread": "1"}).content.decode()
    )

    # The CRM's stage chosen as the status just before starting: not started.
    stated = {**yes_no, zgoda: "", stage: "status"}
    refused = signed_in.post(url, stated)
    assert refused.status_code == 200
    page = refused.content.decode()
    assert "start anyway to import those rows without consent" in page
    assert "data-start-anyway" in page
    contact_import = ContactImport.objects.get()
    assert contact_import.queued_at is None

    started = signed_in.post(url, {**stated, "unread_confirmed": "1"})

    assert started.status_code == 302
    contact_import.refresh_from_db()
    assert contact_import.queued_at is not None


def test_the_mapping_page_says_when_no_column_is_read_as_consent(
    signed_in, load_fixture
):
    names = SimpleUploadedFile(
        "names.csv", b"Email,Name\nada@example.com,Ada\n", content_type="text/csv"
    )
    uploaded = signed_in.post(reverse("import_list"), {"file": names})

    page = signed_in.get(uploaded.url).content.decode()

    assert "data-no-consent-column>No column is read as email consent" in page
    # A Mailchimp export says everyone's status by which export it is.
    listed = signed_in.post(reverse("import_list"), {"file": upload(load_fixture)})
    assert "data-no-consent-column" not in signed_in.get(listed.url).content.decode()


def test_the_mapping_page_says_when_the_file_has_no_rows(signed_in):
    def mapping_page(data: bytes) -> str:
        upload = SimpleUploadedFile("f.csv", data, content_type="text/csv")
        uploaded = signed_in.post(reverse("import_list"), {"file": upload})
        return signed_in.get(uploaded.url).content.decode()

    header_only = mapping_page(b"Email,Name\r\n\r\n,\r\n")
    with_a_row = mapping_page(b"Email,Name\nada@example.com,Ada\n")

    assert "data-no-records>The file has column names but no rows" in header_only
    # nor is it said that nobody in it has consent: nobody is in it
    assert "data-no-consent-column" not in header_only
    assert "data-no-records" not in with_a_row


def test_the_mapping_page_shows_nothing_of_someone_erased(signed_in):
    from profiles.models import Suppression, SuppressionReason
    from profiles.services import suppression_hash

    Suppression.objects.create(
        email_hash=suppression_hash("gone@example.com"),
        reason=SuppressionReason.ERASURE,
        source="privacy_request",
    )
    listed = SimpleUploadedFile(
        "list.csv",
        b"Email,Name,City\nGone@Example.com,Gwen Gone,Oslo\nada@example.com,Ada,\n",
        content_type="text/csv",
    )
    uploaded = signed_in.post(reverse("import_list"), {"file": listed})

    page = signed_in.get(uploaded.url).content.decode()

    assert "ada@example.com" in page
    assert "Gone@Example.com" not in page
    assert "Gwen" not in page
    assert "Oslo" not in page


def test_the_status_warning_follows_the_columns_as_mapped_on_the_page(signed_in):
    crm = SimpleUploadedFile(
        "crm.csv",
        b"Email,Status,Lifecycle,Opt-in\nw1@example.com,Active,Lead,perhaps\n",
        content_type="text/csv",
    )
    uploaded = signed_in.post(reverse("import_list"), {"file": crm})
    page = signed_in.get(uploaded.url).content.decode()
    assert "“Status” is read as email consent" in page

    # the marketer leaves Status out, reads Lifecycle as the status, reads again
    reread = signed_in.post(
        uploaded.url,
        {
            "column_0": "email",
            "column_1": "",
            "column_2": "status",
            "column_3": "subscribed",
            "reread": "1",
        },
    ).content.decode()

    assert "“Status” is read as email consent" not in reread
    assert "“Lifecycle” is read as email consent" in reread
    assert "“Opt-in” is read as email consent" in reread


def test_the_mapping_page_declares_a_decimal_comma(
    signed_in, django_capture_on_commit_callbacks, celery_eager
):
    TraitDefinition.objects.create(name="points", type=TraitType.NUMBER)
    data = b"Email;Points\ndc.qa@example.com;1.250,5\n"
    file = SimpleUploadedFile("dc.csv", data, content_type="text/csv")
    response = signed_in.post(reverse("import_list"), {"file": file})
    page = signed_in.get(response.url).content.decode()
    assert "written with a decimal comma (1.234,5)" in page
    choices = {**mapping_defaults(signed_in, response.url), "decimal_comma": "on"}
    choices["column_1"] = "traits.points"

    with django_capture_on_commit_callbacks(execute=True):
        signed_in.post(response.url, choices)

    assert ContactImport.objects.get().decimal_comma
    assert Profile.objects.get(email="dc.qa@example.com").traits == {"points": 1250.5}


def test_the_mapping_page_says_a_new_trait_of_written_numbers_must_be_declared(
    signed_in,
):
    data = b"Email;Loyalty Points;Code\nln.qa@example.com;1.000;A-17\n"
    file = SimpleUploadedFile("eu.csv", data, content_type="text/csv")
    uploaded = signed_in.post(reverse("import_list"), {"file": file})

    page = signed_in.get(uploaded.url).content.decode()

    assert "data-undeclared-number>“Loyalty Points” holds numbers such as 1.000" in page
    assert 'href="/profiles/traits/new/?name=loyalty_points&amp;type=number"' in page
    assert page.count("data-undeclared-number") == 1
    TraitDefinition.objects.create(name="loyalty_points", type="number")
    assert "data-undeclared-number" not in signed_in.get(uploaded.url).content.decode()
