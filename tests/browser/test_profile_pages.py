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
