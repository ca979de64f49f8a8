"""A marketer reads Ana Souza's profile after the demo, then creates a write key."""

import re

import pytest

from profiles.models import WriteKey

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_marketer_reads_a_profile_and_creates_a_write_key(page, signed_in):
    page.get_by_role("link", name="Profiles").first.click()
    page.get_by_label("Search").fill("souza")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="ana.souza@example.com").click()

    assert page.get_by_role("heading", name="Ana Souza").is_visible()
    timeline = page.locator("table.timeline")
    assert timeline.get_by_role("cell", name="Checkout Started").count() >= 1
    consents = page.locator("table.consents")
    assert consents.get_by_role("cell", name="import:mailchimp").count() >= 1
    segments = page.locator("[data-segments]")
    assert "Spring sale audience" in segments.inner_text()

    page.get_by_role("link", name="Sources").first.click()
    assert page.get_by_role("heading", name="Sources", exact=True).is_visible()
    page.get_by_role("link", name="Write keys").click()
    page.get_by_label("Name").fill("Landing pages")
    page.get_by_role("button", name="Create key").click()

    key = WriteKey.objects.get(name="Landing pages").key
    assert page.locator("code.secret").inner_text() == key
    page.reload()
    assert page.locator("code.secret").count() == 0
    assert key not in page.content()
    row = page.locator("tr", has_text="Landing pages")
    assert re.fullmatch(
        r"Landing pages\s+\S{4}•{8}\s+.+\s+never\s+Active\s+Revoke…",
        row.inner_text().strip(),
        re.S,
    )


def test_an_import_page_follows_a_worker_and_shows_the_counts_once_known(
    page, signed_in, live_server
):
    from django.urls import reverse

    from profiles.importing import contact_import_create
    from profiles.models import ContactImport, ImportStatus

    running = contact_import_create(filename="big.csv", data=b"email\n")
    imports = ContactImport.objects.filter(pk=running.pk)
    imports.update(status=ImportStatus.RUNNING, column_map={"email": "email"})
    url = reverse("import_detail", kwargs={"pk": running.pk})

    page.goto(f"{live_server.url}{url}")

    assert page.locator("[data-status]").inner_text() == "Running"
    assert (
        "A background worker is writing" in page.locator("[data-waiting]").inner_text()
    )
    # The worker has read and checked the file: the page shows what it found.
    imports.update(records=8000, accepted=7990, rejected=10, rows_total=8000)
    page.get_by_text("0 of 8000 rows written").wait_for()
    assert page.locator(".card", has_text="accepted").inner_text().startswith("7990")
