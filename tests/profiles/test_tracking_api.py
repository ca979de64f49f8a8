"""The Segment-compatible tracking API, driven with the shared fixture bodies."""

import base64
import gzip
import json
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest
import time_machine

from config.celery import app as celery_app
from profiles.models import Event, RejectedEvent, WriteKey

ENV_KEY = "test-env-write-key"
BATCH_RECEIVED_AT = "2025-03-15T08:06:12.600Z"
EDGE_SENT_AT = "2025-03-14T14:10:09.000Z"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def basic(key: str) -> dict[str, str]:
    token = base64.b64encode(f"{key}:".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


@pytest.fixture
def post(client):
    def send(path: str, body, *, key: str | None = ENV_KEY, **headers):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        auth = basic(key) if key is not None else {}
        return client.post(
            path, data=data, content_type="application/json", **auth, **headers
        )

    return send


@pytest.fixture
def celery_eager():
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


def test_it_stores_the_whole_batch_fixture(db, post, load_fixture):
    with time_machine.travel(BATCH_RECEIVED_AT, tick=False):
        response = post("/v1/batch", load_fixture("segment/batch.json"))

    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "stored": 30,
        "duplicates": 0,
        "rejected": [],
    }
    types = Counter(Event.objects.values_list("type", flat=True))
    assert types == {"identify": 4, "page": 5, "group": 1, "alias": 1, "track": 19}
    assert Event.objects.filter(processed_at__isnull=True).count() == 30
    assert set(Event.objects.values_list("source", flat=True)) == {"segment:settings"}


def test_it_converts_offsets_to_utc_and_corrects_clock_skew(db, post, load_fixture):
    with time_machine.travel(BATCH_RECEIVED_AT, tick=False):
        post("/v1/batch", load_fixture("segment/batch.json"))

    page = Event.objects.get(message_id="ajs-next-9b5d4a6e-0027-4ebc-8f5a-7c9d1e3a5c27")
    assert page.original_timestamp == utc("2025-03-15T08:02:00Z")
    assert page.sent_at == utc("2025-03-15T08:06:12.417Z")
    assert page.received_at == utc(BATCH_RECEIVED_AT)
    # 183 ms between the browser's sentAt and our receivedAt is the network's.
    assert page.timestamp == utc("2025-03-15T08:02:00.183Z")
    alias = Event.objects.get(
        message_id="ajs-next-9b5d4a6e-0028-4ebc-8f5a-7c9d1e3a5c28"
    )
    assert alias.original_timestamp == utc("2025-03-15T08:05:30Z")


def test_it_merges_batch_context_into_items(db, post, load_fixture):
    with time_machine.travel(BATCH_RECEIVED_AT, tick=False):
        post("/v1/batch", load_fixture("segment/batch.json"))

    identify = Event.objects.get(
        message_id="ajs-next-5d1f0c2a-0003-4a7e-9b1c-3e5f7a9c1e03"
    )
    assert identify.context["library"] == {
        "name": "analytics.js",
        "version": "next-1.70.0",
    }
    assert identify.context["ip"] == "203.0.113.24"
    assert identify.traits["email"] == "ana.souza@example.com"


def test_it_stores_the_valid_edge_cases_and_rejects_the_rest(db, post, load_fixture):
    with time_machine.travel(EDGE_SENT_AT, tick=False):
        response = post("/v1/batch", load_fixture("segment/batch_edge_cases.json"))

    assert response.status_code == 200
    body = response.json()
    assert (body["success"], body["stored"], body["duplicates"]) == (True, 6, 1)
    assert [(r["index"], r["messageId"], r["code"]) for r in body["rejected"]] == [
        (2, "edge-0003", "no_user_anon_id"),
        (3, "edge-0004", "missing_event"),
        (5, "edge-0006", "invalid_type"),
        (9, "x" * 120, "message_id_too_long"),
    ]
    assert sorted(Event.objects.values_list("message_id", flat=True)) == [
        "edge-0001",
        "edge-0005",
        "edge-0007",
        "edge-0008",
        "edge-0010",
        "edge-0012",
    ]
    assert sorted(RejectedEvent.objects.values_list("code", flat=True)) == [
        "invalid_type",
        "message_id_too_long",
        "missing_event",
        "no_user_anon_id",
    ]


def test_it_normalises_the_odd_edge_case_fields(db, post, load_fixture):
    with time_machine.travel(EDGE_SENT_AT, tick=False):
        post("/v1/batch", load_fixture("segment/batch_edge_cases.json"))

    events = {event.message_id: event for event in Event.objects.all()}
    assert events["edge-0005"].user_id == "1006"
    assert events["edge-0007"].timestamp == utc(EDGE_SENT_AT)
    assert events["edge-0007"].original_timestamp is None
    assert events["edge-0008"].timestamp == utc("2025-03-14T14:10:04Z")
    assert events["edge-0010"].properties["price"] == "29.50"
    assert events["edge-0010"].properties["quantity"] == "1"
    assert events["edge-0012"].context == {
        "ip": "198.51.100.23",
        "library": {"name": "custom-forwarder", "version": "0.9.0"},
        "locale": "en-US",
    }


def test_it_keeps_the_rejected_item_and_why(db, post, load_fixture):
    with time_machine.travel(EDGE_SENT_AT, tick=False):
        post("/v1/batch", load_fixture("segment/batch_edge_cases.json"))

    rejected = RejectedEvent.objects.get(message_id="edge-0006")
    assert rejected.code == "invalid_type"
    assert rejected.message == "Unknown call type 'purchase'."
    assert rejected.payload["event"] == "Order Completed"
    assert rejected.source == "segment:settings"
    assert rejected.received_at == utc(EDGE_SENT_AT)


def test_a_retried_batch_stores_nothing_twice(db, post, load_fixture):
    body = load_fixture("segment/batch.json")
    with time_machine.travel(BATCH_RECEIVED_AT, tick=False):
        post("/v1/batch", body)
        retry = post("/v1/batch", body)

    assert retry.status_code == 200
    assert retry.json() == {
        "success": True,
        "stored": 0,
        "duplicates": 30,
        "rejected": [],
    }
    assert Event.objects.count() == 30


def test_a_batch_partly_stored_before_stores_the_rest(db, post):
    def item(number: int) -> dict:
        return {
            "type": "track",
            "event": "Product Viewed",
            "userId": "usr_1001",
            "messageId": f"m-{number}",
        }

    first = post("/v1/batch", {"batch": [item(1), item(2)]})
    second = post("/v1/batch", {"batch": [item(2), item(3), item(1), item(4)]})

    assert first.json()["stored"] == 2
    assert (second.json()["stored"], second.json()["duplicates"]) == (2, 2)
    assert sorted(Event.objects.values_list("message_id", flat=True)) == [
        "m-1",
        "m-2",
        "m-3",
        "m-4",
    ]


def test_objects_are_stored_exactly_as_sent(db, post):
    properties = {
        "big": 2**70,
        "small": -(2**63),
        "price": 19.99,
        "text": 'Zürich \\u0000 \t "quoted"',
        "nested": {"list": [1, None, True, {"deep": "ü"}]},
        "empty": {},
    }
    body = {
        "userId": "usr_1001",
        "event": "Product Viewed",
        "properties": properties,
        "context": {"locale": "de-CH"},
    }

    response = post("/v1/track", body)

    assert response.json()["stored"] == 1
    event = Event.objects.get()
    assert event.properties == properties
    assert event.context == {"locale": "de-CH"}
    assert event.traits == {}


@pytest.mark.parametrize(
    ("fixture", "path", "kind", "message_id"),
    [
        ("identify.json", "identify", "identify", "ajs-next-5d1f0c2a-0003"),
        ("track_product_viewed.json", "track", "track", None),
        ("track_product_added.json", "track", "track", None),
        ("track_product_added_anonymous.json", "track", "track", None),
        ("track_cart_viewed.json", "track", "track", None),
        ("track_checkout_started.json", "track", "track", None),
        ("track_order_completed.json", "track", "track", None),
        ("page.json", "page", "page", None),
        ("group.json", "group", "group", None),
        ("alias.json", "alias", "alias", "ajs-next-9b5d4a6e-0028"),
    ],
)
def test_it_infers_a_single_call_type_from_the_path(
    db, post, load_fixture, fixture, path, kind, message_id
):
    body = load_fixture(f"segment/{fixture}", as_json=True)

    response = post(f"/v1/{path}", body)

    assert response.status_code == 200
    assert response.json()["stored"] == 1
    event = Event.objects.get()
    assert event.type == kind
    assert event.message_id == body["messageId"]
    if message_id:
        assert event.message_id.startswith(message_id)
    assert event.user_id == (body.get("userId") or "")
    assert event.anonymous_id == (body.get("anonymousId") or "")


def test_a_single_track_call_keeps_its_properties_as_sent(db, post, load_fixture):
    body = load_fixture("segment/track_order_completed.json", as_json=True)

    post("/v1/track", body)

    event = Event.objects.get()
    assert event.event == "Order Completed"
    assert event.properties == body["properties"]


def test_a_screen_call_is_stored_as_a_screen(db, post):
    body = {"userId": "usr_2001", "name": "Basket", "messageId": "screen-1"}

    response = post("/v1/screen", body)

    assert response.status_code == 200
    assert Event.objects.get().type == "screen"


def test_it_accepts_the_write_key_in_the_body(db, post, load_fixture):
    body = load_fixture("segment/identify.json", as_json=True)
    body["writeKey"] = ENV_KEY

    response = post("/v1/identify", body, key=None)

    assert response.status_code == 200
    assert Event.objects.count() == 1


def test_it_accepts_a_write_key_stored_in_the_database(db, post, load_fixture):
    WriteKey.objects.create(name="shop site", key="wk_live_shop")
    body = load_fixture("segment/page.json", as_json=True)

    response = post("/v1/page", body, key="wk_live_shop")

    assert response.status_code == 200
    assert Event.objects.get().source == "segment:shop site"


@pytest.mark.parametrize("where", ["header", "body"])
def test_it_refuses_a_revoked_write_key(db, post, load_fixture, where):
    WriteKey.objects.create(
        name="old site", key="wk_revoked", revoked_at=datetime(2025, 1, 1, tzinfo=UTC)
    )
    body = load_fixture("segment/page.json", as_json=True)
    if where == "body":
        body["writeKey"] = "wk_revoked"

    response = post("/v1/page", body, key="wk_revoked" if where == "header" else None)

    assert response.status_code == 401
    assert response.json() == {
        "code": "invalid_write_key",
        "message": "This write key was revoked on 2025-01-01 00:00 UTC; make a new "
        "one on the Sources page.",
    }
    assert Event.objects.count() == 0


@pytest.mark.parametrize("key", ["wrong-key", None])
def test_it_refuses_a_missing_or_unknown_key_and_stores_nothing(
    db, post, load_fixture, key
):
    response = post("/v1/batch", load_fixture("segment/batch.json"), key=key)

    assert response.status_code == 401
    assert response.json() == {
        "code": "invalid_write_key",
        "message": "A valid write key is required (HTTP Basic or 'writeKey').",
    }
    assert Event.objects.count() == 0
    assert RejectedEvent.objects.count() == 0


def test_a_wrong_basic_key_is_not_rescued_by_a_body_key(db, post, load_fixture):
    body = load_fixture("segment/identify.json", as_json=True)
    body["writeKey"] = ENV_KEY

    response = post("/v1/identify", body, key="wrong-key")

    assert response.status_code == 401
    assert Event.objects.count() == 0


def test_it_refuses_an_oversize_call_and_stores_nothing(db, post, load_fixture):
    response = post("/v1/track", load_fixture("segment/track_oversize_33kb.json"))

    assert response.status_code == 400
    assert response.json() == {
        "code": "request_too_large",
        "message": "The request body is over the 32 KB limit.",
    }
    assert Event.objects.count() == 0
    assert RejectedEvent.objects.count() == 0


def test_it_rejects_an_oversize_item_but_keeps_the_rest_of_the_batch(
    db, post, load_fixture
):
    big = load_fixture("segment/track_oversize_33kb.json", as_json=True)
    big["type"] = "track"
    small = load_fixture("segment/track_product_viewed.json", as_json=True)
    small["type"] = "track"

    response = post("/v1/batch", {"batch": [big, small]})

    assert response.status_code == 200
    assert response.json()["stored"] == 1
    assert [r["code"] for r in response.json()["rejected"]] == ["item_too_large"]
    assert Event.objects.get().message_id == small["messageId"]


def test_it_refuses_a_batch_over_500_kb(db, post, load_fixture):
    item = load_fixture("segment/track_product_viewed.json", as_json=True)
    item["type"] = "track"
    items = [{**item, "messageId": f"bulk-{n}"} for n in range(500)]
    body = json.dumps({"batch": items}).encode()
    assert len(body) > 500 * 1024

    response = post("/v1/batch", body)

    assert response.status_code == 400
    assert response.json()["code"] == "request_too_large"
    assert Event.objects.count() == 0


def test_it_accepts_a_gzip_body(db, post, load_fixture):
    raw = load_fixture("segment/batch.json")

    with time_machine.travel(BATCH_RECEIVED_AT, tick=False):
        response = post("/v1/batch", gzip.compress(raw), HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 200
    assert response.json()["stored"] == 30


def test_it_stops_inflating_a_gzip_bomb_at_the_limit(db, post):
    # 20 MB of spaces compress to about 20 KB: well under the limit on the wire.
    bomb = gzip.compress(b'{"batch": [' + b" " * (20 * 1024 * 1024) + b"]}")
    assert len(bomb) < 500 * 1024

    response = post("/v1/batch", bomb, HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 400
    assert response.json()["code"] == "request_too_large"
    assert Event.objects.count() == 0


def test_it_reads_every_member_of_a_gzip_body(db, post, load_fixture):
    # Two members one after another are one gzip body (RFC 1952): the JSON split
    # between them is read whole, not cut after the first.
    raw = load_fixture("segment/batch.json")
    body = gzip.compress(raw[:100]) + gzip.compress(raw[100:])

    with time_machine.travel(BATCH_RECEIVED_AT, tick=False):
        response = post("/v1/batch", body, HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 200
    assert response.json()["stored"] == 30


def test_it_refuses_a_gzip_body_with_something_after_it(db, post, load_fixture):
    body = gzip.compress(load_fixture("segment/batch.json")) + b"trailing bytes"

    response = post("/v1/batch", body, HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_gzip"
    assert Event.objects.count() == 0


def test_it_refuses_a_batch_of_more_items_than_any_real_batch_holds(db, post):
    body = b'{"batch": [' + b",".join([b"1"] * 10_001) + b"]}"

    response = post("/v1/batch", body)

    assert response.status_code == 400
    assert response.json() == {
        "code": "batch_too_many_items",
        "message": "The batch holds 10,001 items; a batch holds at most 10,000. "
        "Nothing in it was stored: send it in parts.",
    }
    assert (Event.objects.count(), RejectedEvent.objects.count()) == (0, 0)


def test_it_refuses_a_corrupt_gzip_body(db, post):
    response = post("/v1/batch", b"\x1f\x8b not gzip", HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_gzip"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"batch": [', "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b'["not", "an", "object"]', "invalid_json"),
        (b'{"batch": {"type": "track"}}', "invalid_batch"),
        (b'{"batch": [], "context": "web"}', "invalid_batch"),
        (
            b'{"userId": "u1", "event": "A", "properties": {"total": NaN}}',
            "invalid_json",
        ),
        (b'{"batch": [{"type": "track", "total": -Infinity}]}', "invalid_json"),
    ],
)
def test_it_refuses_a_malformed_body_with_a_code(db, post, body, code):
    response = post("/v1/batch", body)

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert response.json()["message"]
    assert Event.objects.count() == 0


def test_it_gives_a_message_id_to_an_item_without_one(db, post):
    response = post("/v1/track", {"userId": "usr_1002", "event": "Cart Viewed"})

    assert response.json()["stored"] == 1
    message_id = Event.objects.get().message_id
    assert uuid.UUID(message_id).version == 4


def test_it_rejects_an_unreadable_timestamp(db, post):
    body = {
        "batch": [
            {"type": "track", "userId": "u1", "event": "A", "timestamp": "yesterday"},
            {"type": "track", "userId": "u1", "event": "B", "timestamp": 1741961000},
        ]
    }

    response = post("/v1/batch", body)

    assert [r["code"] for r in response.json()["rejected"]] == [
        "invalid_timestamp",
        "invalid_timestamp",
    ]
    assert Event.objects.count() == 0


def test_it_reads_a_timestamp_written_in_lower_case_as_rfc_3339_allows(db, post):
    item = {"type": "track", "userId": "u1", "event": "A"}
    body = {"batch": [{**item, "timestamp": "2025-03-14t10:00:00.5z"}]}

    response = post("/v1/batch", body)

    assert response.json()["stored"] == 1
    assert Event.objects.get().timestamp == utc("2025-03-14T10:00:00.5Z")


def test_it_rejects_text_postgresql_cannot_store(db, post):
    body = {
        "batch": [
            {"type": "track", "userId": "u1", "event": "Bad\u0000Name"},
            {"type": "track", "userId": "u1", "event": "Good", "messageId": "ok-1"},
        ]
    }

    response = post("/v1/batch", body)

    assert response.status_code == 200
    assert [r["code"] for r in response.json()["rejected"]] == ["invalid_characters"]
    assert list(Event.objects.values_list("message_id", flat=True)) == ["ok-1"]


def test_an_event_or_page_name_holding_a_control_character_is_refused(db, post):
    body = {
        "batch": [
            {"type": "track", "userId": "u1", "event": "Ctrl\u0007Event"},
            {"type": "page", "userId": "u1", "name": "Home\u202e", "messageId": "p"},
            {"type": "track", "userId": "u1", "event": "Tab\tOk", "messageId": "t"},
        ]
    }

    response = post("/v1/batch", body)

    rejected = response.json()["rejected"]
    assert [r["message"] for r in rejected] == [
        "'event' holds the control character U+0007.",
        "'name' holds the control character U+202E.",
    ]
    assert list(Event.objects.values_list("event", flat=True)) == ["Tab\tOk"]


def test_it_rejects_ids_of_the_wrong_shape(db, post):
    body = {
        "batch": [
            {"type": "track", "userId": {"id": 1}, "event": "A"},
            {"type": "track", "userId": "u" * 256, "event": "A"},
            {"type": "track", "userId": "u1", "event": "A", "properties": [1]},
        ]
    }

    response = post("/v1/batch", body)

    assert [r["code"] for r in response.json()["rejected"]] == [
        "invalid_field",
        "field_too_long",
        "invalid_field",
    ]


def test_it_replays_the_real_python_client_requests(db, client, load_fixture):
    capture = load_fixture("segment/python_client_capture.json", as_json=True)
    WriteKey.objects.create(name="python sync", key="TEST_WRITE_KEY_sync")
    WriteKey.objects.create(name="python gzip", key="TEST_WRITE_KEY_gzip")

    statuses = []
    for request in capture["requests"]:
        data = json.dumps(request["body"]).encode()
        headers = {}
        if request["headers"].get("Content-Encoding") == "gzip":
            data = gzip.compress(data)
            headers["HTTP_CONTENT_ENCODING"] = "gzip"
        response = client.post(
            request["path"], data=data, content_type="application/json", **headers
        )
        statuses.append((response.status_code, response.json()["stored"]))

    assert statuses == [(200, 1), (200, 1), (200, 1), (200, 2)]
    events = {event.message_id: event for event in Event.objects.all()}
    assert sorted(events) == [f"ajs-fixture-000{n}" for n in range(1, 6)]
    assert events["ajs-fixture-0001"].anonymous_id == ""
    assert events["ajs-fixture-0003"].user_id == ""
    assert events["ajs-fixture-0003"].anonymous_id == "anon-7f3e"
    assert events["ajs-fixture-0004"].previous_id == "anon-7f3e"
    assert events["ajs-fixture-0005"].group_id == "grp_42"
    assert events["ajs-fixture-0005"].source == "segment:python gzip"
    assert events["ajs-fixture-0002"].original_timestamp == utc(
        "2025-03-14T09:26:53.589+00:00"
    )


def test_it_enqueues_processing_once_the_events_are_committed(
    db, post, load_fixture, django_capture_on_commit_callbacks
):
    body = load_fixture("segment/identify.json", as_json=True)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        post("/v1/identify", body)

    assert len(callbacks) == 1
    assert Event.objects.get().processed_at is None


def test_the_enqueued_task_processes_the_stored_events(
    db, post, load_fixture, django_capture_on_commit_callbacks, celery_eager
):
    body = load_fixture("segment/identify.json", as_json=True)

    with django_capture_on_commit_callbacks(execute=True):
        post("/v1/identify", body)

    event = Event.objects.select_related("profile").get()
    assert event.processed_at is not None
    assert event.profile.email == "ana.souza@example.com"


def test_a_batch_with_only_rejected_items_enqueues_nothing(
    db, post, django_capture_on_commit_callbacks
):
    body = {"batch": [{"type": "track", "userId": "u1"}]}

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post("/v1/batch", body)

    assert response.json()["stored"] == 0
    assert callbacks == []


def test_other_methods_get_a_json_error(db, client):
    response = client.get("/v1/track")

    assert response.status_code == 405
    assert response.json() == {
        "code": "method_not_allowed",
        "message": "The tracking API accepts POST only.",
    }


def test_a_database_key_records_when_it_was_last_used(db, post, load_fixture):
    key = WriteKey.objects.create(name="shop site", key="wk_live_used")

    with time_machine.travel("2025-03-15T08:00:00Z", tick=False):
        response = post(
            "/v1/track",
            load_fixture("segment/track_order_completed.json"),
            key="wk_live_used",
        )

    assert response.status_code == 200
    key.refresh_from_db()
    assert key.last_used_at == utc("2025-03-15T08:00:00Z")


def test_last_used_at_is_written_at_most_once_a_minute(db, post, load_fixture):
    key = WriteKey.objects.create(name="shop site", key="wk_live_minute")
    body = {"userId": "usr_1002", "event": "Cart Viewed"}

    with time_machine.travel("2025-03-15T08:00:00Z", tick=False):
        post("/v1/track", body, key="wk_live_minute")
    with time_machine.travel("2025-03-15T08:00:59Z", tick=False):
        post("/v1/track", body, key="wk_live_minute")
    key.refresh_from_db()
    assert key.last_used_at == utc("2025-03-15T08:00:00Z")

    with time_machine.travel("2025-03-15T08:01:01Z", tick=False):
        post("/v1/track", {**body, "writeKey": "wk_live_minute"}, key=None)
    key.refresh_from_db()
    assert key.last_used_at == utc("2025-03-15T08:01:01Z")
    assert Event.objects.count() == 3


def test_a_revoked_key_is_not_marked_as_used(db, post, load_fixture):
    key = WriteKey.objects.create(
        name="old site", key="wk_revoked_unused", revoked_at=utc("2025-03-01T00:00:00Z")
    )

    response = post(
        "/v1/batch", load_fixture("segment/batch.json"), key="wk_revoked_unused"
    )

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_write_key"
    key.refresh_from_db()
    assert key.last_used_at is None
    assert Event.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/v1/track/", "/v1/foo", "/v1/"])
def test_an_unknown_path_is_answered_in_json(post, path):
    response = post(path, {})

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_an_identify_with_an_invalid_email_is_stored_and_flagged(post):
    body = {
        "userId": "u-9",
        "messageId": "bad-email-1",
        "traits": {"email": "<script>@example.com", "firstName": "Eve"},
    }

    response = post("/v1/identify", body)

    answer = response.json()
    assert response.status_code == 200
    assert answer["stored"] == 1
    assert [w["code"] for w in answer["warnings"]] == ["invalid_email_trait"]
    flagged = RejectedEvent.objects.get()
    assert (flagged.code, flagged.message_id) == ("invalid_email_trait", "bad-email-1")
    assert Event.objects.filter(message_id="bad-email-1").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("email", "kind"),
    [
        ({"address": "eve@example.com"}, "an object"),
        (42, "a number"),
        (True, "true or false"),
    ],
)
def test_an_identify_whose_email_is_not_text_is_stored_and_flagged(post, email, kind):
    body = {"userId": "u-9", "messageId": "obj-email", "traits": {"email": email}}

    answer = post("/v1/identify", body).json()

    assert answer["stored"] == 1
    (warning,) = answer["warnings"]
    assert warning["code"] == "invalid_email_trait"
    assert warning["message"].startswith(f"traits.email is {kind}, not an email")
    assert RejectedEvent.objects.get().code == "invalid_email_trait"


@pytest.mark.django_db
def test_a_database_outage_is_a_json_503_the_client_retries(post, monkeypatch):
    from django.db import OperationalError

    def locked(**kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr("profiles.apis.events_ingest", locked)

    response = post("/v1/track", {"userId": "u", "event": "e"})

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["code"] == "unavailable"


@pytest.mark.django_db
def test_an_event_dated_far_in_the_future_is_rejected_not_stored(post):
    response = post(
        "/v1/track",
        {"userId": "u", "event": "e", "timestamp": "9999-12-31T23:59:59Z"},
    )

    answer = response.json()
    assert response.status_code == 200
    assert answer["stored"] == 0
    assert [r["code"] for r in answer["rejected"]] == ["timestamp_in_future"]
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_the_sender_is_told_which_traits_break_their_declared_rule(post):
    from profiles.models import TraitDefinition

    TraitDefinition.objects.create(name="tier", type="text", allowed_values=["gold"])

    response = post("/v1/identify", {"userId": "u-3", "traits": {"tier": "bronze"}})

    answer = response.json()
    assert answer["stored"] == 1
    assert [w["code"] for w in answer["warnings"]] == ["trait_invalid:not_allowed"]
    assert "not stored" in answer["warnings"][0]["message"]
    assert RejectedEvent.objects.count() == 0


@pytest.mark.django_db
def test_the_sender_is_told_of_a_declared_trait_named_in_another_case(post):
    from profiles.models import TraitDefinition

    TraitDefinition.objects.create(name="tier", type="text", allowed_values=["gold"])

    broken = post("/v1/identify", {"userId": "u-5", "traits": {"TIER": "bronze"}})
    twice = post(
        "/v1/identify", {"userId": "u-5", "traits": {"Tier": "x", "tier": "gold"}}
    )

    assert [w["code"] for w in broken.json()["warnings"]] == [
        "trait_invalid:not_allowed"
    ]
    assert [w["code"] for w in twice.json()["warnings"]] == ["trait_invalid:sent_twice"]


@pytest.mark.django_db
def test_a_rule_declared_in_this_process_is_read_by_its_next_request(post):
    from profiles.models import TraitDefinition

    post("/v1/identify", {"userId": "u-4", "traits": {"tier": "bronze"}})
    # The answer above read the rules (none); they are kept for 30 s, unless a
    # rule is saved or deleted here meanwhile.
    tier = TraitDefinition.objects.create(
        name="tier", type="text", allowed_values=["gold"]
    )

    declared = post("/v1/identify", {"userId": "u-4", "traits": {"tier": "bronze"}})
    tier.delete()
    dropped = post("/v1/identify", {"userId": "u-4", "traits": {"tier": "bronze"}})

    assert [w["code"] for w in declared.json()["warnings"]] == [
        "trait_invalid:not_allowed"
    ]
    assert dropped.json().get("warnings", []) == []


@pytest.mark.django_db
def test_the_sender_is_told_of_a_name_too_long_for_the_profile(post):
    traits = {"name": "Ann " + "L" * 151, "phone": "+33 6 12 34 56 78"}

    response = post("/v1/identify", {"userId": "u-4", "traits": traits})

    answer = response.json()
    assert answer["stored"] == 1
    assert [w["code"] for w in answer["warnings"]] == ["trait_invalid:too_long"]
    assert answer["warnings"][0]["message"].startswith(
        "name: 151 characters, more than the 150 of the profile's last name"
    )


@pytest.mark.django_db
def test_the_sender_is_told_of_a_name_that_is_not_text(post):
    traits = {"firstName": {"given": "Ann"}, "lastName": "Lee\x07"}

    response = post("/v1/identify", {"userId": "u-5", "traits": traits})

    answer = response.json()
    assert answer["stored"] == 1
    assert sorted(w["code"] for w in answer["warnings"]) == [
        "trait_invalid:control_character",
        "trait_invalid:not_text",
    ]


def test_a_message_id_bespoke_keeps_for_its_own_events_is_refused(db, post):
    batch = {
        "batch": [
            {
                "type": "track",
                "event": "Page Liked",
                "userId": "someone-else",
                "messageId": message_id,
            }
            for message_id in ("shopify:order:9301", "esp:sendgrid:abc", "ok-1")
        ]
    }

    body = post("/v1/batch", batch).json()

    assert [(r["messageId"], r["code"]) for r in body["rejected"]] == [
        ("shopify:order:9301", "message_id_reserved"),
        ("esp:sendgrid:abc", "message_id_reserved"),
    ]
    assert list(Event.objects.values_list("message_id", flat=True)) == ["ok-1"]
