"""The last words of `make run`: where to sign in, and a write key that works."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from campaigns import demo
from profiles.models import WriteKey

pytestmark = pytest.mark.django_db


def welcome() -> str:
    out = StringIO()
    call_command("welcome", stdout=out)
    return out.getvalue()


def test_the_demo_write_key_is_printed_while_it_works():
    WriteKey.objects.create(name="Demo site", key=demo.DEMO_WRITE_KEY)

    assert f"Write key {demo.DEMO_WRITE_KEY} (for POST /v1/batch)" in welcome()


def test_a_revoked_demo_write_key_is_said_to_be_revoked():
    # Walkthrough 22: the revoked key was printed as the one to use, and got a 401.
    WriteKey.objects.create(
        name="Demo site", key=demo.DEMO_WRITE_KEY, revoked_at=timezone.now()
    )

    words = welcome()

    assert f"{demo.DEMO_WRITE_KEY} was revoked: make another under Sources" in words
    assert "(for POST /v1/batch)" not in words


def test_with_no_demo_write_key_the_welcome_says_where_to_make_one():
    WriteKey.objects.filter(key=demo.DEMO_WRITE_KEY).delete()

    assert "Write key none yet: make one under Sources, Write keys" in welcome()
