"""A marketer signs in, reads the dashboard after the demo, and opens a sent email."""

import re

import pytest

from campaigns.models import OutboxEmail

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_dashboard_shows_the_demo_and_the_outbox_shows_each_email(page, signed_in):
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    assert page.locator("[data-count=unsubscribed]").inner_text() == "7"
    assert page.locator("[data-count=cleaned]").inner_text() == "4"
    assert page.locator("[data-count=rows_rejected]").inner_text() == "3"
    sent = int(page.locator("[data-count=messages_sent]").inner_text())
    assert sent == OutboxEmail.objects.count() > 0

    page.get_by_role("link", name="Outbox").first.click()
    page.get_by_role("link", name=re.compile("^Ana, the spring sale is on")).click()
    email = page.frame_locator("iframe.email")
    assert email.get_by_text("Free shipping to Brazil").is_visible()
    assert email.get_by_role("link", name="Unsubscribe").is_visible()


def test_a_recipient_unsubscribes_with_the_link_from_the_email(
    page, live_server, demo_loaded
):
    email = OutboxEmail.objects.get(to__contains=["Ana Souza <ana.souza@example.com>"])
    link = re.search(r"<(https://[^>]+)>", email.headers["List-Unsubscribe"]).group(1)
    path = link.split("/", 3)[3]

    page.goto(f"{live_server.url}/{path}")
    assert page.get_by_role("heading", name="Unsubscribe?").is_visible()
    page.get_by_role("button", name="Unsubscribe").click()

    assert page.get_by_role("heading", name="You are unsubscribed").is_visible()
    from profiles.models import Profile

    assert Profile.objects.get(email="ana.souza@example.com").subscription_status == (
        "unsubscribed"
    )
