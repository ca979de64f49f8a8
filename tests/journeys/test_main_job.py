"""The main job end to end on PostgreSQL: import, ingest, segment, render, send.

`manage.py demo` plays the shared fixtures through the real paths (the importer,
POST /v1/batch with a write key, event processing, the segment compiler, the Liquid
renderer and the Anymail outbox backend); this test checks what it leaves behind
against the outcomes given in the fixtures' README.
"""

import io

import pytest
from django.core.management import CommandError, call_command

from campaigns.models import Campaign, Message, MessageStatus, OutboxEmail
from profiles.models import ContactImport, Event, Profile, RejectedEvent
from profiles.selectors import profile_is_suppressed, profile_status_counts
from segments.models import Segment
from segments.selectors import segment_count, segment_members

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo_output(fixtures_dir) -> str:
    out = io.StringIO()
    call_command("demo", fixtures=fixtures_dir, stdout=out)
    return out.getvalue()


def test_imports_give_the_profiles_and_rejections_the_fixtures_expect(demo_output):
    counts = profile_status_counts()
    rejections = [
        (row["record"], row["reason"])
        for contact_import in ContactImport.objects.order_by("pk")
        for row in contact_import.rejections
    ]

    assert counts["with_email"] == 44
    assert counts["subscribed"] == 33
    assert counts["unsubscribed"] == 7
    assert counts["cleaned"] == 4
    assert rejections == [
        (34, "invalid_email"),
        (37, "invalid_email"),
        (40, "missing_email"),
    ]
    assert "rejected record 40 (line 42) '': missing_email" in demo_output


def test_events_are_stored_once_and_bad_items_named(demo_output):
    rejected = sorted(RejectedEvent.objects.values_list("code", flat=True))

    assert Event.objects.count() == 36
    assert Event.objects.filter(processed_at=None).count() == 0
    assert rejected == [
        "invalid_type",
        "message_id_too_long",
        "missing_event",
        "no_user_anon_id",
    ]
    assert Profile.objects.filter(email=None).count() == 1


def test_identity_stitching_joins_the_events_to_the_imported_profiles(demo_output):
    ana = Profile.objects.get(email="ana.souza@example.com")
    dmitri = Profile.objects.get(email="d.volkov@example.com")
    sam = Profile.objects.get(email="sam.taylor@example.com")

    assert (
        ana.events.filter(anonymous_id="8d4c2b7e-5f1a-4e3b-9c6d-0a1b2c3d4e5f").count()
        == 8
    )
    assert dmitri.events.filter(type="page").count() == 1
    assert dmitri.subscription_status == "unsubscribed"
    assert sam.first_name == "Sam"
    assert (
        str(Profile.objects.get(email="ben.okafor@example.net").lifetime_value)
        == "152.29"
    )


def test_segments_hold_who_the_rules_describe(demo_output):
    viewed_not_bought = Segment.objects.get(slug="viewed-but-did-not-buy")
    members = set(segment_members(viewed_not_bought).values_list("email", flat=True))

    # The fixtures' one order (Ben's) is from March 2025: no recent high-value buyer.
    assert segment_count(Segment.objects.get(slug="high-value-customers")) == 0
    assert members == {
        "ana.souza@example.com",
        "chloe.dubois@example.org",
        "d.volkov@example.com",
        None,
    }


def test_nobody_unsubscribed_cleaned_or_suppressed_is_emailed(demo_output):
    campaign = Campaign.objects.get(slug="spring-sale-2025")
    sent = Message.objects.filter(campaign=campaign, status=MessageStatus.SENT)
    skipped = dict(
        Message.objects.filter(
            campaign=campaign, status=MessageStatus.SKIPPED
        ).values_list("profile__email", "skip_reason")
    )

    assert sent.count() == OutboxEmail.objects.count() == 8
    for message in sent.select_related("profile"):
        assert message.profile.subscription_status == "subscribed"
        assert not profile_is_suppressed(message.profile.email)
    assert skipped["grace.lee@example.com"] == "unsubscribed"
    assert skipped["d.volkov@example.com"] == "unsubscribed"
    assert skipped[None] == "no_email"


def test_each_email_is_rendered_for_its_recipient(demo_output):
    ana = OutboxEmail.objects.get(to=["Ana Souza <ana.souza@example.com>"])
    chloe = OutboxEmail.objects.get(to=["Chloé Dubois <chloe.dubois@example.org>"])

    assert ana.subject == "Ana, the spring sale is on"
    assert "Free shipping to Brazil" in ana.html
    assert "Shipping to Paris is free over 50 EUR" in " ".join(chloe.html.split())
    assert "Brazil" not in chloe.html
    assert ana.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_the_demo_can_run_again_without_sending_twice(demo_output, fixtures_dir):
    call_command("demo", fixtures=fixtures_dir, stdout=io.StringIO())

    assert OutboxEmail.objects.count() == 8
    assert Event.objects.count() == 36
    assert profile_status_counts()["with_email"] == 44


def test_the_text_part_fits_the_recipient_too(demo_output):
    ana = OutboxEmail.objects.get(to=["Ana Souza <ana.souza@example.com>"])
    ben = OutboxEmail.objects.get(to=["Ben Okafor <ben.okafor@example.net>"])

    assert "Free shipping to Brazil" in ana.text
    assert "Free 2-day shipping anywhere in the US" in ben.text
    assert "Thank you for your 1 order so far." in ben.text
    assert "Reply-To" not in ana.headers


def test_a_replay_neither_resends_nor_resets_the_demo_password(
    demo_output, fixtures_dir
):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username="demo")
    user.set_password("changed-by-the-marketer")
    user.save()
    out = io.StringIO()

    call_command("demo", fixtures=fixtures_dir, stdout=out)

    user.refresh_from_db()
    assert user.check_password("changed-by-the-marketer")
    assert (
        "was sent on an earlier run (nothing is sent twice): 8 sent" in out.getvalue()
    )


@pytest.mark.django_db
def test_the_demo_names_the_fixtures_a_partial_folder_lacks(tmp_path):
    (tmp_path / "segment").mkdir()
    (tmp_path / "segment" / "batch.json").write_text("{}")

    with pytest.raises(CommandError) as refused:
        call_command("demo", fixtures=tmp_path, stdout=io.StringIO())

    assert "lacks mailchimp/subscribed_members_export.csv" in str(refused.value)
    assert not Profile.objects.exists()


def test_an_empty_start_makes_the_sign_in_and_key_and_loads_no_data():
    from django.contrib.auth import authenticate

    from campaigns import demo
    from profiles.models import WriteKey

    out = io.StringIO()
    call_command("demo", empty=True, stdout=out)

    assert authenticate(username=demo.DEMO_USERNAME, password=demo.DEMO_PASSWORD)
    assert WriteKey.objects.filter(key=demo.DEMO_WRITE_KEY).exists()
    assert not Profile.objects.exists()
    assert not Campaign.objects.exists()
    assert "no demo data was loaded" in out.getvalue()
