"""qa24: trying to break the session's changes (walkthrough 22 and qa23 fixes).

Each test is a bug found by hand, which failed before its fix:

* Template review: a render failure is now named by its line, and a failure on a
  line whose condition is already warned about is not said again. But the warning
  may be about another thing on that line, one that does not fail (`profile.city ==
  3` is merely always false): the failure (a division by a newcomer's order count
  of 0) is then never said, though every newcomer would be skipped. An email
  builder's HTML is often one line, so one warning hides every failure.
* Suppressing a profile by hand now writes "admin: profile #N by <username>" as the
  list entry's source, a 100-character column; a username may have 150 characters,
  and a long one makes the admin's save fail with a database error.
* An identify's `name` beside a blank `firstName` is split now, but a firstName
  that is blank once cleaned (a zero-width space) or refused as no text (false, an
  object) still counts as "named apart": the profile gets no name at all.
* Segment builder: a new profile-field condition waits for its value before
  counting ("No count until each new condition has its value"), but Save keeps it
  with the empty value: the segment matches everyone whose field is empty.
"""

import json

import pytest
from django.urls import reverse

from campaigns.rendering import template_review
from profiles.models import Profile, Suppression
from segments.models import Segment
from tests.factories import UserFactory
from tests.profiles.conftest import tracking_processed
from tests.profiles.test_profile_admin import suppression_shown

pytestmark = pytest.mark.django_db


def test_a_failure_on_a_line_with_another_warning_is_still_named():
    # One line, as an email builder writes HTML: an always-false test, and an
    # average that divides by a newcomer's order count of 0.
    html = (
        "<p>{% if profile.country_code == 33 %}FR{% endif %}</p>"
        "<p>{{ profile.lifetime_value | divided_by: profile.order_count }}</p>"
    )

    review = template_review(subject="Hi", html=html)

    assert any("it fails for" in warning for warning in review.warnings), (
        review.warnings
    )


def test_the_same_failure_alone_on_its_line_is_named():
    # The baseline, which passes.
    html = "<p>hi</p>\n<p>{{ profile.lifetime_value | divided_by: profile.order_count }}</p>"

    review = template_review(subject="Hi", html=html)

    assert any("it fails for" in warning for warning in review.warnings)


def test_a_long_username_suppressing_by_hand_is_saved(client):
    username = "privacy.officer.for.the.european.union.region@" + "a" * 60 + ".example"
    assert len(username) <= 150
    admin = UserFactory(username=username, is_superuser=True)
    client.force_login(admin)
    profile = Profile.objects.create(email="kai@example.com")
    page = suppression_shown(
        profile, suppressed_at_0="2026-03-01", suppressed_at_1="10:00:00"
    )

    try:
        response = client.post(f"/admin/profiles/profile/{profile.pk}/change/", page)
    except Exception as exc:  # DataError: value too long for varchar(100)
        pytest.fail(f"the admin's save failed: {exc!r}")

    assert response.status_code == 302
    assert Suppression.objects.exists()


def identify(client, user_id: str, traits: dict) -> dict:
    body = {"userId": user_id, "traits": traits, "messageId": f"qa24-{user_id}"}
    return tracking_processed(client, "/v1/identify", body)


@pytest.mark.parametrize("first", ["\u200b", False, {}], ids=["zwsp", "false", "obj"])
def test_a_first_name_that_names_nothing_leaves_the_name_split(client, first):
    identify(
        client,
        "u1",
        {"email": "ann@example.com", "name": "Ann Lee", "firstName": first},
    )

    ann = Profile.objects.get(email="ann@example.com")
    assert (ann.first_name, ann.last_name) == ("Ann", "Lee")


def test_a_segment_is_not_saved_with_a_field_compared_to_nothing(client, marketer):
    # What the builder's Save posts right after "Add condition", the preview
    # saying "No count until each new condition has its value".
    client.force_login(marketer)
    Profile.objects.create(email="no-country@example.com")
    rule = {"all": [{"attribute": "country_code", "op": "eq", "value": ""}]}

    response = client.post(
        reverse("segment_new"),
        {"name": "Unfinished", "slug": "", "rule": json.dumps(rule)},
    )

    assert response.status_code == 400, response.status_code
    assert not Segment.objects.exists()
