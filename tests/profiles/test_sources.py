"""Write keys and the ingestion health page, as a marketer and as a tracking client."""

import base64
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils.timezone import now as timezone_now

from profiles.health import sources_health
from profiles.keys import write_key_create, write_key_revoke
from profiles.models import (
    AWAITS_ORDER,
    ContactImport,
    Event,
    ImportStatus,
    RejectedEvent,
    WebhookDelivery,
    WriteKey,
)
from profiles.source_counts import delivery_counted, source_hours_add

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 3, 14, 12, 30, tzinfo=UTC)
SHOP = "segment:Shop site"
TRACK_BODY = {"userId": "usr_1001", "event": "Product Viewed", "messageId": "m-1"}


def track(client, key: str, body: dict | None = None):
    token = base64.b64encode(f"{key}:".encode()).decode()
    return client.post(
        "/v1/track",
        data=json.dumps(body or TRACK_BODY),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Basic {token}",
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# Write keys -------------------------------------------------------------------------


def test_a_created_key_is_random_and_unrevoked():
    first = write_key_create(name="  Shop website ")
    second = write_key_create(name="Shop website")

    assert first.name == "Shop website"
    assert len(first.key) == 32
    assert first.key != second.key
    assert first.revoked_at is None


def test_revoking_twice_revokes_once():
    write_key = write_key_create(name="Shop website")

    assert write_key_revoke(write_key_id=write_key.pk) is True
    revoked_at = WriteKey.objects.get().revoked_at
    assert write_key_revoke(write_key_id=write_key.pk) is False

    assert WriteKey.objects.get().revoked_at == revoked_at
    assert write_key_revoke(write_key_id=write_key.pk + 1) is False


def test_a_revoked_key_gets_401_from_the_tracking_api(client):
    write_key = write_key_create(name="Shop website")
    accepted = track(client, write_key.key)

    write_key_revoke(write_key_id=write_key.pk)
    refused = track(client, write_key.key, {**TRACK_BODY, "messageId": "m-2"})

    assert accepted.status_code == 200
    assert refused.status_code == 401
    revoked_at = WriteKey.objects.get().revoked_at
    assert refused.json() == {
        "code": "invalid_write_key",
        "message": f"This write key was revoked on {revoked_at:%Y-%m-%d %H:%M} UTC; "
        "make a new one on the Sources page.",
    }
    assert list(Event.objects.values_list("message_id", flat=True)) == ["m-1"]
    assert RejectedEvent.objects.count() == 0


def test_the_keys_page_shows_a_new_key_in_full_once_then_masked(signed_in):
    response = signed_in.post(reverse("source_keys"), {"name": "Shop website"})

    write_key = WriteKey.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("source_keys")
    first = signed_in.get(reverse("source_keys")).content.decode()
    again = signed_in.get(reverse("source_keys")).content.decode()

    assert f'<code class="secret">{write_key.key}</code>' in first
    assert write_key.key not in again
    assert f"<code>{write_key.key[:4]}••••••••</code>" in again
    row = re.search(rf'<tr data-key-id="{write_key.pk}">(.*?)</tr>', again, re.S)
    assert "<td>never</td>" in row.group(1)
    assert '<span class="ok">Active</span>' in row.group(1)


def test_the_keys_page_shows_when_a_key_was_last_used(signed_in, client):
    write_key = write_key_create(name="Shop website")
    with time_machine.travel(NOW, tick=False):
        track(client, write_key.key)

    page = signed_in.get(reverse("source_keys")).content.decode()

    row = re.search(rf'<tr data-key-id="{write_key.pk}">(.*?)</tr>', page, re.S)
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    assert cells[3] == "March 14, 2025, 12:30 p.m."


def test_a_key_without_a_name_is_refused(signed_in):
    response = signed_in.post(reverse("source_keys"), {"name": "   "})

    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert WriteKey.objects.count() == 0


@pytest.mark.parametrize(
    ("name", "said"),
    [
        # Its events would show as the settings keys' ("segment:settings").
        ("Settings", "“Settings” names the keys set in BESPOKE_WRITE_KEYS"),
        # Cut to fit the events' source, it would share one with a longer name.
        ("k" * 93, "name has at most 92 characters"),
    ],
)
def test_a_name_whose_source_another_feed_has_is_refused(signed_in, name, said):
    response = signed_in.post(reverse("source_keys"), {"name": name})

    assert response.status_code == 200
    assert said in response.content.decode()
    assert WriteKey.objects.count() == 0


def test_revoking_from_the_page_asks_first_then_revokes(signed_in, client):
    write_key = write_key_create(name="Shop website")
    url = reverse("source_key_revoke", kwargs={"pk": write_key.pk})

    confirm = signed_in.get(url)

    assert "Revoke the key “Shop website”?" in confirm.content.decode()
    assert WriteKey.objects.get().revoked_at is None

    with time_machine.travel(NOW, tick=False):
        revoked = signed_in.post(url, follow=True)

    assert WriteKey.objects.get().revoked_at == NOW
    page = revoked.content.decode()
    assert "The key “Shop website” is revoked." in page
    assert "Revoked March 14, 2025, 12:30 p.m." in page
    assert track(client, write_key.key).status_code == 401


def test_revoking_a_revoked_key_from_the_page_says_so(signed_in):
    write_key = write_key_create(name="Shop website")
    write_key_revoke(write_key_id=write_key.pk)
    revoked_at = WriteKey.objects.get().revoked_at
    url = reverse("source_key_revoke", kwargs={"pk": write_key.pk})

    response = signed_in.post(url, follow=True)

    assert "The key “Shop website” was revoked already." in response.content.decode()
    assert WriteKey.objects.get().revoked_at == revoked_at


# Ingestion health -------------------------------------------------------------------


def event_stored(**fields) -> Event:
    """An event as stored, counted for the Sources page as processing counts it."""
    event = Event.objects.create(**fields)
    if event.processed_at:
        source_hours_add(event_ids=[event.pk])
    return event


def shop_view(message_id: str, received: str, processed: str | None, error: str):
    """A product view the shop's write key sent, processed (or failed) or waiting."""
    event_stored(
        message_id=message_id,
        type="track",
        event="Product Viewed",
        user_id="usr_1",
        source=SHOP,
        timestamp=at(received),
        received_at=at(received),
        processed_at=at(processed) if processed else None,
        processing_error=error,
    )


@pytest.fixture
def shop_feed():
    """Six events and four rejections from one key, and one old event from another."""
    WriteKey.objects.create(name="Shop site", key="shop-key")
    WriteKey.objects.create(name="Quiet", key="quiet-key")
    events = [
        ("e1", "2025-03-14 12:20:00", "2025-03-14 12:20:02", ""),
        ("e2", "2025-03-14 12:10:00", "2025-03-14 12:10:04", ""),
        ("e3", "2025-03-14 11:45:00", "2025-03-14 11:45:30", ""),
        ("e4", "2025-03-14 10:00:00", "2025-03-14 10:01:40", ""),
        ("e5", "2025-03-14 12:20:00", None, ""),
        ("e6", "2025-03-09 09:00:00", "2025-03-09 09:00:01", "no such profile"),
    ]
    for message_id, received, processed, error in events:
        shop_view(message_id, received, processed, error)
    event_stored(
        message_id="q1",
        type="page",
        anonymous_id="a-1",
        source="segment:Quiet",
        timestamp=at("2025-03-01 08:00:00"),
        received_at=at("2025-03-01 08:00:00"),
        processed_at=at("2025-03-01 08:00:01"),
    )
    rejections = [
        ("no_user_anon_id", "The item needs a userId.", "2025-03-14 12:25:00"),
        ("no_user_anon_id", "An older wording.", "2025-03-11 09:00:00"),
        ("invalid_type", "Unknown call type 'x'.", "2025-03-12 09:00:00"),
        ("invalid_type", "Too old to show.", "2025-02-01 09:00:00"),
    ]
    for code, message, received in rejections:
        RejectedEvent.objects.create(
            source=SHOP, code=code, message=message, received_at=at(received)
        )


def test_the_health_of_a_write_key_source_is_aggregated_exactly(shop_feed):
    sources = {source["name"]: source for source in sources_health(now=NOW)}

    shop = sources[SHOP]
    assert list(sources) == [
        "segment:Quiet",
        SHOP,
        "segment:settings",
        "shopify",
        "esp",
        "imports",
    ]
    busy_hours = [(b["at"], b["count"]) for b in shop["hourly"] if b["count"]]
    assert busy_hours == [
        (at("2025-03-14 10:00:00"), 1),
        (at("2025-03-14 11:00:00"), 1),
        (at("2025-03-14 12:00:00"), 3),
    ]
    assert len(shop["hourly"]) == 48
    assert shop["hourly"][0]["at"] == at("2025-03-12 13:00:00")
    busy_days = [(b["at"], b["count"]) for b in shop["daily"] if b["count"]]
    assert busy_days == [(at("2025-03-09"), 1), (at("2025-03-14"), 5)]
    assert len(shop["daily"]) == 30
    assert (shop["hourly_total"], shop["daily_total"]) == (5, 6)
    assert (shop["hourly_max"], shop["daily_max"]) == (3, 5)
    assert shop["lag"] == {"measured": 3, "median_seconds": 4.0, "max_seconds": 30.0}
    assert shop["unprocessed"] == {"count": 1, "oldest_age_seconds": 600.0}
    assert shop["longest_wait"] == {"seconds": 600.0, "still_waiting": True}
    assert shop["failed"]["count"] == 1
    assert [row["message_id"] for row in shop["failed"]["recent"]] == ["e6"]
    assert shop["failed"]["recent"][0]["processing_error"] == "no such profile"
    assert shop["last_received_at"] == at("2025-03-14 12:20:00")
    assert shop["rejections"] == [
        {
            "code": "no_user_anon_id",
            "count": 2,
            "last_at": at("2025-03-14 12:25:00"),
            "message": "The item needs a userId.",
            # The newest few that differ, newest first.
            "messages": ["The item needs a userId.", "An older wording."],
        },
        {
            "code": "invalid_type",
            "count": 1,
            "last_at": at("2025-03-12 09:00:00"),
            "message": "Unknown call type 'x'.",
            "messages": ["Unknown call type 'x'."],
        },
    ]
    assert shop["rejected_last_hour"] == 1
    assert shop["rejections_warning"] is True
    assert shop["backlog_warning"] is True


def test_a_quiet_source_raises_no_warning(shop_feed):
    sources = {source["name"]: source for source in sources_health(now=NOW)}

    quiet = sources["segment:Quiet"]
    assert quiet["daily_total"] == 1
    assert quiet["hourly_total"] == 0
    assert quiet["lag"] == {"measured": 0, "median_seconds": None, "max_seconds": None}
    assert quiet["unprocessed"] == {"count": 0, "oldest_age_seconds": None}
    assert quiet["longest_wait"] == {"seconds": None, "still_waiting": False}
    assert quiet["rejections"] == []
    assert quiet["rejections_warning"] is False
    assert quiet["backlog_warning"] is False


def test_a_backlog_younger_than_five_minutes_is_no_warning(shop_feed):
    sources = {s["name"]: s for s in sources_health(now=at("2025-03-14 12:24:00"))}

    assert sources[SHOP]["unprocessed"] == {"count": 1, "oldest_age_seconds": 240.0}
    assert sources[SHOP]["backlog_warning"] is False


def test_shop_events_and_failed_deliveries_count_under_shopify():
    Event.objects.create(
        message_id="s1",
        type="track",
        event="Order Completed",
        user_id="usr_1",
        source="shopify",
        timestamp=at("2025-03-14 12:00:00"),
        received_at=at("2025-03-14 12:00:00"),
        processed_at=at("2025-03-14 12:00:01"),
    )
    later = NOW + timedelta(seconds=2)
    for n, (error, processed_at) in enumerate(
        [
            ("", later),
            ("The payload was refused: 'x' is not an amount", later),
            ("DataError: numeric field overflow", None),
            ("The order has no usable email address.", later),
            ("", None),
        ]
    ):
        delivery = WebhookDelivery.objects.create(
            source="shopify",
            delivery_id=f"d{n}",
            topic="orders/create",
            received_at=NOW,
            processed_at=processed_at,
            error=error,
        )
        if processed_at:
            delivery_counted(delivery=delivery, error=error)

    shopify = next(s for s in sources_health(now=later) if s["name"] == "shopify")

    # What the shop sent: five deliveries, not the one event made of them.
    assert (shopify["unit"], shopify["daily_total"]) == ("deliveries", 5)
    assert shopify["lag"] == {"measured": 3, "median_seconds": 2.0, "max_seconds": 2.0}
    assert shopify["unprocessed"]["count"] == 2
    # The unprocessed deliveries have waited no longer than the done ones took.
    assert shopify["unprocessed"]["oldest_age_seconds"] == 2.0
    assert shopify["longest_wait"] == {"seconds": 2.0, "still_waiting": False}
    assert shopify["failed"]["count"] == 2
    assert [row["delivery_id"] for row in shopify["failed"]["recent"]] == ["d2", "d1"]
    assert shopify["webhook_notes"] == 1
    assert shopify["events_failed"] == 0


def test_contact_imports_report_rows_rejections_and_failures():
    with time_machine.travel(at("2025-03-14 12:10:00"), tick=False):
        ContactImport.objects.create(
            filename="subscribed.csv",
            status=ImportStatus.DONE,
            records=40,
            rejected=3,
            rejections=[
                {"reason": "invalid_email", "message": "not-an-email: no @"},
                {"reason": "invalid_email", "message": "two @ signs"},
                {"reason": "missing_email", "message": "no email address given"},
            ],
            queued_at=at("2025-03-14 12:10:00"),
            started_at=at("2025-03-14 12:10:01"),
            finished_at=at("2025-03-14 12:10:05"),
        )
    with time_machine.travel(at("2025-03-13 08:00:00"), tick=False):
        ContactImport.objects.create(
            filename="broken.csv", status=ImportStatus.FAILED, error="Not a CSV file."
        )

    imports = sources_health(now=NOW)[-1]

    assert imports["name"] == "imports"
    assert (imports["hourly_total"], imports["daily_total"]) == (40, 40)
    assert imports["lag"] == {"measured": 1, "median_seconds": 5.0, "max_seconds": 5.0}
    assert imports["rejections"] == [
        {
            "code": "invalid_email",
            "count": 2,
            "last_at": at("2025-03-14 12:10:00"),
            "message": "two @ signs",
            # The newest few that differ, newest first, as the page lists them.
            "messages": ["two @ signs", "not-an-email: no @"],
        },
        {
            "code": "missing_email",
            "count": 1,
            "last_at": at("2025-03-14 12:10:00"),
            "message": "no email address given",
            "messages": ["no email address given"],
        },
    ]
    assert imports["rejected_last_hour"] == 3
    assert imports["failed"]["count"] == 1
    assert imports["failed"]["recent"][0]["error"] == "Not a CSV file."
    assert imports["unprocessed"] == {"count": 0, "oldest_age_seconds": None}
    assert imports["last_received_at"] == at("2025-03-14 12:10:05")


def test_the_health_page_warns_only_about_the_troubled_source(signed_in, shop_feed):
    with time_machine.travel(NOW, tick=False):
        response = signed_in.get(reverse("sources_health"))

    page = response.content.decode()
    sections = dict(
        re.findall(
            r'<section class="source" data-source="([^"]+)">(.*?)</section>', page, re.S
        )
    )
    shop, quiet = sections[SHOP], sections["segment:Quiet"]
    assert (
        '<p class="flash error" data-warning="rejections">1 item rejected in the last '
        "hour: see the rejections below.</p>" in shop
    )
    assert (
        '<p class="flash error" data-warning="backlog">1 event waiting to be '
        "processed, the oldest for more than 5 minutes: is the worker running?</p>"
        in shop
    )
    assert '<div class="figure" data-figure="median_lag">4 s</div>' in shop
    # The event waiting for 600 s is the longest wait, not the 30 s of those done.
    assert (
        '<div class="figure" data-figure="max_lag">600 s</div><div class="label">'
        "longest wait, still waiting</div>" in shop
    )
    assert '<div class="figure" data-figure="last_48h">5</div>' in shop
    assert (
        '<tr data-code="no_user_anon_id"><td><code>no_user_anon_id</code></td><td>2</td>'
        in shop
    )
    assert (
        "<td><code>e6</code></td><td>Product Viewed</td><td>no such profile</td>"
        in shop
    )
    assert "data-warning" not in quiet
    assert "Nothing rejected." in quiet


def test_only_imports_handed_to_the_worker_raise_the_worker_alarm():
    with time_machine.travel(at("2025-03-14 12:00:00"), tick=False):
        # Waiting for the marketer to map its columns: not the worker's business.
        ContactImport.objects.create(filename="unmapped.csv")
        ContactImport.objects.create(
            filename="running.csv",
            status=ImportStatus.RUNNING,
            column_map={"email": "email"},
            started_at=at("2025-03-14 12:00:01"),
        )
    quiet = sources_health(now=NOW)[-1]
    with time_machine.travel(at("2025-03-14 12:20:00"), tick=False):
        ContactImport.objects.create(
            filename="queued.csv", column_map={"email": "email"}
        )
        ContactImport.objects.create(
            filename="retried.csv", started_at=at("2025-03-14 12:20:00")
        )

    queued = sources_health(now=NOW)[-1]

    assert quiet["unprocessed"] == {"count": 0, "oldest_age_seconds": None}
    assert quiet["backlog_warning"] is False
    # Nor does an upload no one started make the longest wait (it had read 30 min).
    assert quiet["longest_wait"] == {"seconds": None, "still_waiting": False}
    assert queued["unprocessed"] == {"count": 2, "oldest_age_seconds": 600.0}
    assert queued["backlog_warning"] is True
    assert queued["longest_wait"] == {"seconds": 600.0, "still_waiting": True}


def test_the_worker_alarm_counts_from_the_mapping_not_the_upload(marketer):
    from profiles.importing import contact_import_map

    with time_machine.travel(at("2025-03-14 09:00:00"), tick=False):
        upload = ContactImport.objects.create(filename="mapped-late.csv")
    # Mapped three hours after the upload, two minutes before now.
    with time_machine.travel(at("2025-03-14 12:28:00"), tick=False):
        contact_import_map(
            contact_import_id=upload.pk, column_map={"email": "email"}, date_format=""
        )

    imports = sources_health(now=NOW)[-1]

    assert imports["unprocessed"] == {"count": 1, "oldest_age_seconds": 120.0}
    assert imports["backlog_warning"] is False


def test_an_imports_lag_starts_when_it_was_handed_to_the_worker():
    with time_machine.travel(at("2025-03-14 12:00:00"), tick=False):
        ContactImport.objects.create(
            filename="mapped-later.csv",
            status=ImportStatus.DONE,
            records=2,
            rejected=1,
            rejections=[
                {"record": 1, "reason": "invalid_email", "message": "no @"},
                {"record": 2, "reason": "not_a_date", "message": "bad", "column": "X"},
            ],
            queued_at=at("2025-03-14 12:09:00"),
            finished_at=at("2025-03-14 12:10:00"),
        )

    imports = next(
        s
        for s in sources_health(now=at("2025-03-14 12:30:00"))
        if s["kind"] == "imports"
    )

    assert imports["lag"]["max_seconds"] == 60.0
    assert [g["code"] for g in imports["rejections"]] == ["invalid_email"]
    assert [g["code"] for g in imports["notices"]] == ["not_a_date"]


def test_the_health_page_says_one_event_not_one_events(signed_in, shop_feed):
    # given a source whose one event arrived 13 days ago
    with time_machine.travel(NOW, tick=False):
        response = signed_in.get(reverse("sources_health"))

    page = response.content.decode()
    quiet = page.split('data-source="segment:Quiet"')[1].split("</section>")[0]
    assert (
        '<div class="figure" data-figure="last_30d">1</div>'
        '<div class="label">event in the last 30 days</div>'
    ) in quiet
    assert (
        '<div class="figure" data-figure="last_48h">0</div>'
        '<div class="label">events in the last 48 hours</div>'
    ) in quiet


def shop_order_waiting(*, received: str) -> None:
    """The Order Completed a shop's delivery made, not processed yet."""
    Event.objects.create(
        message_id="shopify:order:1",
        type="track",
        event="Order Completed",
        source="shopify",
        timestamp=at("2025-03-14 12:00:00"),
        received_at=at(received),
    )


def test_last_success_is_the_latest_item_processed_not_the_latest_arrival(shop_feed):
    shop_view("late-waiting", "2025-03-14 12:29:00", None, "")
    shop_view("late-failed", "2025-03-14 12:28:00", "2025-03-14 12:28:00", "no such")
    shop_order_waiting(received="2025-03-14 12:00:00")

    sources = {source["name"]: source for source in sources_health(now=NOW)}

    assert sources[SHOP]["last_received_at"] == at("2025-03-14 12:20:00")
    assert sources["shopify"]["events_unprocessed"] == {
        "count": 1,
        "oldest_age_seconds": 1800.0,
    }
    assert sources["shopify"]["last_received_at"] is None


def shop_delivery(delivery_id: str, *, processed: bool, error: str = ""):
    delivery = WebhookDelivery.objects.create(
        source="shopify",
        delivery_id=delivery_id,
        topic="orders/create",
        received_at=at("2025-03-14 12:00:00"),
        processed_at=at("2025-03-14 12:00:01") if processed else None,
        error=error,
    )
    if processed:
        delivery_counted(delivery=delivery, error=error)


def test_a_shops_events_left_waiting_by_a_stopped_worker_are_warned_about():
    # The shop's order was applied as it arrived; its event waits for the worker.
    shop_delivery("d-1", processed=True)
    shop_order_waiting(received="2025-03-14 12:00:01")

    shop = next(s for s in sources_health(now=NOW) if s["name"] == "shopify")

    assert shop["unprocessed"]["count"] == 0
    assert shop["backlog_warning"] is True
    assert shop["backlog_waiting"] == "1 event made of them"


def test_a_refund_waiting_for_its_order_is_no_sign_of_a_stopped_worker():
    shop_delivery("r-1", processed=False, error=f"{AWAITS_ORDER}order 98999")

    shop = next(s for s in sources_health(now=NOW) if s["name"] == "shopify")

    assert shop["awaiting_orders"] == 1
    assert shop["unprocessed"]["count"] == 0
    assert shop["backlog_warning"] is False


def test_a_shops_longest_wait_counts_the_events_its_deliveries_made_still_waiting():
    # The delivery was applied in a second; the order event it stored has waited
    # ten minutes for the workers, which are stopped.
    delivery = WebhookDelivery.objects.create(
        source="shopify",
        delivery_id="d1",
        topic="orders/create",
        received_at=NOW - timedelta(seconds=600),
        processed_at=NOW - timedelta(seconds=599),
    )
    delivery_counted(delivery=delivery, error="")
    Event.objects.create(
        message_id="shopify:order:1",
        type="track",
        event="Order Completed",
        source="shopify",
        timestamp=NOW - timedelta(seconds=600),
        received_at=NOW - timedelta(seconds=600),
    )

    shopify = next(s for s in sources_health(now=NOW) if s["name"] == "shopify")

    assert shopify["lag"]["max_seconds"] == 1.0
    assert shopify["unprocessed"]["count"] == 0
    assert shopify["events_unprocessed"] == {"count": 1, "oldest_age_seconds": 600.0}
    assert shopify["longest_wait"] == {"seconds": 600.0, "still_waiting": True}


def test_the_imports_list_tells_an_upload_not_started_from_a_queued_import(signed_in):
    not_started = ContactImport.objects.create(filename="unmapped.csv")
    ContactImport.objects.create(filename="queued.csv", column_map={"email": "email"})
    ContactImport.objects.create(filename="done.csv", status=ImportStatus.DONE)

    page = signed_in.get(reverse("import_list")).content.decode()

    mapping = reverse("import_mapping", kwargs={"pk": not_started.pk})
    assert f'<a href="{mapping}">Not started: map its columns</a>' in page
    assert ">Queued</td>" in page
    assert ">Done</td>" in page


def test_a_running_import_whose_worker_stopped_is_named_on_the_sources_page(
    signed_in, settings, tmp_path
):
    # qa23: for the quarter of an hour before the sweep fails it, an import whose
    # worker died showed nowhere but on its own page.
    import os

    from profiles.importing import contact_import_create, contact_import_upload_path
    from profiles.models import ContactImport, ImportStatus

    settings.VAR_DIR = tmp_path
    contact_import = contact_import_create(
        filename="big.csv", data=b"Email\na@example.com\nb@example.com\n"
    )
    started = timezone_now() - timedelta(minutes=5)
    ContactImport.objects.filter(pk=contact_import.pk).update(
        status=ImportStatus.RUNNING, started_at=started, rows_done=1, rows_total=2
    )
    os.utime(contact_import_upload_path(contact_import), (started.timestamp(),) * 2)

    page = signed_in.get(reverse("sources_health")).content.decode()

    warning = re.search(r'data-warning="stalled">(.*?)</p>', page, re.S).group(1)
    text = " ".join(re.sub(r"<[^>]+>", "", warning).split())
    assert re.fullmatch(
        r"big\.csv has made no progress for 3\d\d s \(1 of 2 rows written\): is the "
        r"worker running\? An import is marked failed after 15 minutes without "
        r"progress, and can then be run again from where it stopped\.",
        text,
    ), text


def test_a_running_import_making_progress_is_not_warned_of(
    signed_in, settings, tmp_path
):
    from profiles.importing import contact_import_create
    from profiles.models import ContactImport, ImportStatus

    settings.VAR_DIR = tmp_path
    contact_import = contact_import_create(filename="big.csv", data=b"Email\na@x.com\n")
    ContactImport.objects.filter(pk=contact_import.pk).update(
        status=ImportStatus.RUNNING, started_at=timezone_now()
    )

    page = signed_in.get(reverse("sources_health")).content.decode()

    assert 'data-warning="stalled"' not in page
