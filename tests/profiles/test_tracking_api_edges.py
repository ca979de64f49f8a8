"""Items at the edges of what JSON and dates can hold are refused one by one."""

import base64
import json
from datetime import UTC, datetime

import pytest
import time_machine
from django.test import Client

from profiles.models import Event

pytestmark = pytest.mark.django_db

AUTH = {
    "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"test-env-write-key:").decode()
}
GOOD = '{"type":"track","messageId":"good-1","userId":"u","event":"Good"}'


def batch(client: Client, *items: str):
    body = '{"batch":[' + ",".join(items) + "]}"
    return client.post("/v1/batch", data=body, content_type="application/json", **AUTH)


def test_a_number_past_a_floats_range_is_refused_and_the_rest_stored(client):
    huge = (
        '{"type":"track","messageId":"inf-1","userId":"u","event":"Big",'
        '"properties":{"amount":1e999}}'
    )

    response = batch(client, GOOD, huge)

    assert response.status_code == 200
    answer = response.json()
    assert (answer["stored"], answer["duplicates"]) == (1, 0)
    assert [(r["messageId"], r["code"]) for r in answer["rejected"]] == [
        ("inf-1", "invalid_number")
    ]
    assert list(Event.objects.values_list("message_id", flat=True)) == ["good-1"]


@pytest.mark.parametrize(
    "times",
    [
        '"timestamp":"0001-01-01T00:00:00+01:00"',
        '"timestamp":"9999-12-31T23:59:59-01:00"',
        '"timestamp":"0001-01-01T00:00:00Z","sentAt":"9999-01-01T00:00:00Z"',
    ],
)
def test_a_time_outside_the_calendar_is_refused_and_the_rest_stored(client, times):
    odd = f'{{"type":"track","messageId":"odd-1","userId":"u","event":"X",{times}}}'

    response = batch(client, GOOD, odd)

    assert response.status_code == 200
    assert [r["code"] for r in response.json()["rejected"]] == ["invalid_timestamp"]
    assert list(Event.objects.values_list("message_id", flat=True)) == ["good-1"]


def test_a_single_call_with_such_a_time_is_answered_in_json(client):
    response = client.post(
        "/v1/track",
        data='{"userId":"u","event":"X","timestamp":"0001-01-01T00:00:00+01:00"}',
        content_type="application/json",
        **AUTH,
    )

    # As any refused item of a single call: named in the answer, nothing stored.
    assert response.status_code == 200
    assert [r["code"] for r in response.json()["rejected"]] == ["invalid_timestamp"]
    assert not Event.objects.exists()


@pytest.mark.parametrize("path", ["/v1/track/", "/v1/nope"])
def test_a_post_to_a_wrong_path_gets_json_even_with_csrf_checks(path):
    client = Client(enforce_csrf_checks=True)

    response = client.post(path, data="{}", content_type="application/json", **AUTH)

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_timestamp_after_its_sent_at_says_so(client):
    late = (
        '{"type":"track","messageId":"late-1","userId":"u","event":"X",'
        '"timestamp":"2025-01-01T00:00:00Z","sentAt":"2000-01-01T00:00:00Z"}'
    )

    response = batch(client, late)

    (rejected,) = response.json()["rejected"]
    assert rejected["code"] == "timestamp_in_future"
    assert rejected["message"] == (
        "timestamp 2025-01-01T00:00:00+00:00 is after sentAt "
        "2000-01-01T00:00:00+00:00: an event cannot happen after it was sent, so one "
        "of the client's times is wrong"
    )


def test_an_order_whose_amount_is_no_number_is_stored_with_a_warning(client):
    from profiles.models import RejectedEvent

    order = (
        '{"type":"track","messageId":"ord-1","userId":"u","event":"Order Completed",'
        '"properties":{"order_id":"1","total":"1,234.00"}}'
    )
    sound = (
        '{"type":"track","messageId":"ord-2","userId":"u","event":"Order Completed",'
        '"properties":{"order_id":"2","total":"29.50"}}'
    )

    response = batch(client, order, sound)

    answer = response.json()
    assert answer["stored"] == 2
    assert [(w["messageId"], w["code"]) for w in answer["warnings"]] == [
        ("ord-1", "order_amount_unreadable")
    ]
    assert (
        "properties.total '1,234.00' is not a number"
        in answer["warnings"][0]["message"]
    )
    assert RejectedEvent.objects.get().code == "order_amount_unreadable"


@pytest.mark.parametrize(
    ("total", "code", "words"),
    [
        (1000000000, "order_amount_too_large", "properties.total 1000000000 is a "),
        (10**30, "order_amount_too_large", f"properties.total {10**30} is a bil"),
        ("1" + "0" * 30, "order_amount_too_large", f"properties.total '{10**30}' is"),
        ("-50", "order_amount_negative", "properties.total '-50' is below zero"),
        (-2e9, "order_amount_too_large", "properties.total -2000000000.0 is a bil"),
        ("EUR", "order_currency_other", "properties.currency 'EUR' is not USD"),
    ],
)
def test_an_order_amount_that_will_not_count_as_sent_is_warned_of(
    client, settings, total, code, words
):
    settings.BESPOKE_CURRENCY = "USD"
    properties = {"order_id": "1", "total": total}
    if total == "EUR":
        properties = {"order_id": "1", "total": 100, "currency": "EUR"}
    order = json.dumps(
        {
            "type": "track",
            "messageId": "ord-odd",
            "userId": "u",
            "event": "Order Completed",
            "properties": properties,
        }
    )

    answer = batch(client, order).json()

    assert answer["stored"] == 1
    assert [(w["messageId"], w["code"]) for w in answer["warnings"]] == [
        ("ord-odd", code)
    ]
    assert answer["warnings"][0]["message"].startswith(words)


def test_a_number_too_small_for_a_float_is_refused_not_stored_as_zero(client):
    tiny = (
        '{"type":"identify","messageId":"tiny-1","userId":"u",'
        '"traits":{"score":1e-5000,"zero":0.0e10,"small":5e-300}}'
    )

    response = batch(client, tiny, GOOD)

    answer = response.json()
    assert [(r["messageId"], r["code"]) for r in answer["rejected"]] == [
        ("tiny-1", "invalid_number")
    ]
    assert answer["stored"] == 1


def test_zero_written_any_way_is_still_zero(client):
    zero = (
        '{"type":"identify","messageId":"zero-1","userId":"u",'
        '"traits":{"a":0.0,"b":-0.0e5,"c":0e-10}}'
    )

    response = batch(client, zero)

    assert response.json()["stored"] == 1


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        ('"1e-999"', "order_amount_too_small"),
        ("1e-45", "order_amount_too_small"),
        ('"abc"', "order_amount_unreadable"),
        ('"1e999"', "order_amount_too_large"),
        ("1" + "0" * 400, "order_amount_too_large"),
    ],
)
def test_an_order_amount_out_of_range_is_warned_about(client, amount, code):
    order = (
        '{"type":"track","messageId":"ord-x","userId":"u","event":"Order Completed",'
        f'"properties":{{"order_id":"9","total":{amount}}}}}'
    )

    response = batch(client, order)

    answer = response.json()
    assert answer["stored"] == 1
    assert [w["code"] for w in answer["warnings"]] == [code]


def test_an_integer_past_64_bits_is_stored_exactly(client):
    # The fast encoder cannot write it; the item is still measured and stored.
    big = (
        '{"type":"track","messageId":"big-1","userId":"u","event":"Big",'
        '"properties":{"id":123456789012345678901234567890}}'
    )

    response = batch(client, big)

    assert response.json()["stored"] == 1
    stored = Event.objects.get(message_id="big-1").properties["id"]
    assert stored == 123456789012345678901234567890


def test_a_lone_surrogate_is_refused_and_the_rest_stored(client):
    broken = '{"type":"track","messageId":"sur-1","userId":"u","event":"\\ud800"}'

    response = batch(client, GOOD, broken)

    assert response.json()["stored"] == 1
    assert [(r["messageId"], r["code"]) for r in response.json()["rejected"]] == [
        ("sur-1", "invalid_characters")
    ]


def test_a_timestamp_hours_after_its_sent_at_is_refused(client):
    # Corrected onto the server's clock it would land 20 hours ahead: less than
    # the day allowed for clients that send no sentAt, but impossible with one.
    late = (
        '{"type":"track","messageId":"late-2","userId":"u","event":"X",'
        '"timestamp":"2025-01-01T20:00:00Z","sentAt":"2025-01-01T00:00:00Z"}'
    )

    (rejected,) = batch(client, GOOD, late).json()["rejected"]

    assert (rejected["messageId"], rejected["code"]) == (
        "late-2",
        "timestamp_in_future",
    )
    assert Event.objects.filter(message_id="late-2").count() == 0


def test_a_timestamp_seconds_after_its_sent_at_is_taken(client):
    soon = (
        '{"type":"track","messageId":"soon-1","userId":"u","event":"X",'
        '"timestamp":"2025-01-01T00:00:05Z","sentAt":"2025-01-01T00:00:00Z"}'
    )

    assert batch(client, soon).json()["stored"] == 1


@pytest.mark.parametrize("empty", ["0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z"])
def test_a_timestamp_from_an_empty_date_is_refused(client, empty):
    item = (
        '{"type":"track","messageId":"year-1","userId":"u","event":"X",'
        f'"timestamp":"{empty}"}}'
    )

    (rejected,) = batch(client, GOOD, item).json()["rejected"]

    assert rejected["code"] == "invalid_timestamp"
    assert "not after 1970-01-01T00:00:00Z (Unix time 0)" in rejected["message"]


def test_a_warning_names_the_message_id_bespoke_gave_an_item_sent_without_one(client):
    item = '{"type":"identify","userId":"u","traits":{"email":"not an address"}}'

    (warning,) = batch(client, item).json()["warnings"]

    stored = Event.objects.get()
    assert warning["messageId"] == stored.message_id != ""


def test_a_whole_number_user_id_sent_as_a_float_is_the_same_id(client):
    one = '{"type":"track","messageId":"f-1","userId":1.0,"event":"X"}'

    batch(client, one)

    assert Event.objects.get(message_id="f-1").user_id == "1"


def test_a_sent_at_near_the_end_of_the_calendar_is_refused_and_the_rest_stored(client):
    # sentAt + a minute would overflow; the item is refused, not the request.
    odd = (
        '{"type":"track","messageId":"end-1","userId":"u","event":"X",'
        '"timestamp":"2025-01-01T00:00:00Z","sentAt":"9999-12-31T23:59:59Z"}'
    )

    response = batch(client, GOOD, odd)

    assert response.status_code == 200
    (rejected,) = response.json()["rejected"]
    assert (rejected["messageId"], rejected["code"]) == ("end-1", "invalid_timestamp")
    assert list(Event.objects.values_list("message_id", flat=True)) == ["good-1"]


def test_a_batch_sent_at_near_the_end_of_the_calendar_refuses_each_item(client):
    body = (
        '{"sentAt":"9999-12-31T23:59:30+00:00","batch":['
        '{"type":"track","messageId":"b-1","userId":"u","event":"X",'
        '"timestamp":"2025-01-01T00:00:00Z"},'
        '{"type":"track","messageId":"b-2","userId":"u","event":"X"}]}'
    )

    response = client.post(
        "/v1/batch", data=body, content_type="application/json", **AUTH
    )

    assert response.status_code == 200
    codes = {r["messageId"]: r["code"] for r in response.json()["rejected"]}
    assert codes == {"b-1": "invalid_timestamp"}
    # No timestamp: the time it was received stands, whatever sentAt says.
    assert list(Event.objects.values_list("message_id", flat=True)) == ["b-2"]


@pytest.mark.parametrize("number", ["9007199254740993.0", "12345678901234567890.0"])
def test_a_user_id_float_too_large_to_be_exact_is_refused(client, number):
    item = '{"type":"track","messageId":"big-id","userId":' + number + ',"event":"X"}'

    (rejected,) = batch(client, GOOD, item).json()["rejected"]

    assert rejected["code"] == "invalid_field"
    assert "send it as a string" in rejected["message"]


# Items holding what PostgreSQL cannot store are refused alone ----------------------


@pytest.mark.parametrize(
    ("item", "code", "kept_id"),
    [
        (
            '{"type":"track","messageId":"n\\u0000ul","userId":"u","event":"X"}',
            "invalid_characters",
            "n\ufffdul",
        ),
        (
            '{"type":"track","messageId":"bad\\ud800","userId":"u","event":"X"}',
            "invalid_characters",
            "bad\ufffd",
        ),
        ('"a\\u0000b"', "invalid_type", ""),
        ('["\\u0000"]', "invalid_type", ""),
        ('"\\ud83d"', "invalid_type", ""),
    ],
)
def test_an_item_with_text_postgresql_refuses_is_refused_and_the_rest_stored(
    client, item, code, kept_id
):
    from profiles.models import RejectedEvent

    response = batch(client, GOOD, item)

    assert response.status_code == 200, response.content[:300]
    answer = response.json()
    assert answer["stored"] == 1
    assert [r["code"] for r in answer["rejected"]] == [code]
    assert list(Event.objects.values_list("message_id", flat=True)) == ["good-1"]
    rejected = RejectedEvent.objects.get()
    assert (rejected.code, rejected.message_id) == (code, kept_id)


@pytest.mark.parametrize("name", ["context", "integrations"])
@pytest.mark.parametrize("text", ["\\u0000", "\\ud800"])
def test_a_batch_context_postgresql_cannot_store_refuses_each_item_in_json(
    client, name, text
):
    body = f'{{"batch":[{GOOD}],"{name}":{{"x":"a{text}b"}}}}'

    response = client.post(
        "/v1/batch", data=body, content_type="application/json", **AUTH
    )

    assert response.status_code == 200, response.content[:300]
    assert [r["code"] for r in response.json()["rejected"]] == ["invalid_characters"]
    assert not Event.objects.exists()


def test_the_text_backslash_u0000_is_not_a_nul(client):
    item = (
        '{"type":"track","messageId":"path-1","userId":"u","event":"Searched",'
        '"properties":{"query":"C:\\\\u0000logs"}}'
    )

    response = batch(client, item)

    assert response.json()["rejected"] == []
    stored = Event.objects.get()
    assert stored.properties == {"query": "C:\\u0000logs"}


def test_a_batch_context_counts_in_each_items_size(client):
    big = json.dumps({"blob": "x" * 40_000})
    body = f'{{"batch":[{GOOD}],"context":{big}}}'

    response = client.post(
        "/v1/batch", data=body, content_type="application/json", **AUTH
    )

    assert [r["code"] for r in response.json()["rejected"]] == ["item_too_large"]
    assert not Event.objects.exists()


def test_an_item_of_exactly_32_kb_in_a_batch_is_taken(client):
    # Sized as sent: no empty traits, context or integrations are added to it.
    item = {"type": "track", "messageId": "k-1", "userId": "u", "event": "Big"}
    item["properties"] = {"blob": ""}
    padding = 32 * 1024 - len(json.dumps(item, separators=(",", ":")))
    item["properties"]["blob"] = "x" * padding
    too_big = {**item, "messageId": "k-2", "properties": {"blob": "x" * (padding + 1)}}
    body = json.dumps({"batch": [item, too_big]}, separators=(",", ":"))

    response = client.post(
        "/v1/batch", data=body, content_type="application/json", **AUTH
    )

    assert response.json()["stored"] == 1
    assert [r["code"] for r in response.json()["rejected"]] == ["item_too_large"]
    assert list(Event.objects.values_list("message_id", flat=True)) == ["k-1"]


@pytest.mark.parametrize("key", ["demo\u0000key", "demo\ud800key"])
def test_a_write_key_postgresql_cannot_hold_is_a_401(client, key):
    body = json.dumps({"writeKey": key, "batch": [json.loads(GOOD)]})

    response = client.post("/v1/batch", data=body, content_type="application/json")

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_write_key"


def test_a_request_that_meets_a_deadlock_is_stored_once(client, monkeypatch):
    from psycopg.errors import DeadlockDetected

    from profiles import ingestion

    insert = ingestion._events_insert
    met = []

    def deadlocked_once(fresh, **how):
        ids = insert(fresh, **how)
        if not met:
            met.append(1)
            raise DeadlockDetected("deadlock detected")
        return ids

    monkeypatch.setattr(ingestion, "_events_insert", deadlocked_once)
    twice = GOOD.replace("good-1", "good-2")

    response = batch(client, GOOD, GOOD, twice)

    assert response.status_code == 200
    answer = response.json()
    assert (answer["stored"], answer["duplicates"]) == (2, 1)
    assert Event.objects.count() == 2


def test_a_database_error_from_the_inserts_own_cursor_is_a_json_503(
    client, monkeypatch
):
    from psycopg.errors import AdminShutdown

    from profiles import ingestion

    def shut_down(fresh, **how):
        raise AdminShutdown("terminating connection due to administrator command")

    monkeypatch.setattr(ingestion, "_events_insert", shut_down)

    response = batch(client, GOOD)

    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    assert response["Retry-After"] == "5"


def test_a_page_calls_category_is_kept_among_its_properties(client):
    page = (
        '{"type":"page","messageId":"p-1","userId":"u","name":"Install",'
        '"category":"Docs","properties":{"path":"/docs/install"}}'
    )
    own = (
        '{"type":"page","messageId":"p-2","userId":"u","name":"Tents",'
        '"category":"Shop","properties":{"category":"Outdoor"}}'
    )

    batch(client, page, own)

    assert Event.objects.get(message_id="p-1").properties == {
        "path": "/docs/install",
        "category": "Docs",
    }
    assert Event.objects.get(message_id="p-2").properties == {"category": "Outdoor"}


def test_a_long_page_title_is_stored(client):
    title = "A very long article title " * 30
    page = json.dumps(
        {"type": "page", "messageId": "p-3", "userId": "u", "name": title}
    )

    response = batch(client, page)

    assert response.json()["rejected"] == []
    assert Event.objects.get().name == title.strip()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('{"batch":[' + '{"a":' * 3000 + "1" + "}" * 3000 + "]}", "too deeply"),
        ('{"batch":[{"a": 1]}', "The body is not valid JSON: Expecting"),
        ('{"batch":[{"a":' + "9" * 5000 + "}]}", "more than 4,300 digits"),
    ],
)
def test_a_body_that_cannot_be_read_says_why(client, body, words):
    response = client.post(
        "/v1/batch", data=body, content_type="application/json", **AUTH
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"
    assert words in response.json()["message"]


@pytest.mark.parametrize("category", [5, {"a": 1}, "x" * 201, "  "])
def test_a_page_category_that_is_not_short_text_is_left_out_not_the_page(
    client, category
):
    page = json.dumps(
        {"type": "page", "messageId": "p-9", "userId": "u", "category": category}
    )

    response = batch(client, page)

    assert response.json()["rejected"] == []
    assert Event.objects.get().properties == {}


@pytest.mark.parametrize(
    "when", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"]
)
def test_a_declared_time_past_the_calendar_in_utc_is_a_trait_left_out(client, when):
    from profiles.models import TraitDefinition

    TraitDefinition.objects.create(name="trial_ends", type="datetime")
    identify = json.dumps(
        {
            "type": "identify",
            "messageId": "id-1",
            "userId": "u",
            "traits": {"trial_ends": when, "plan": "pro"},
        }
    )

    response = batch(client, GOOD, identify)

    assert response.status_code == 200
    answer = response.json()
    assert answer["stored"] == 2
    assert [w["code"] for w in answer["warnings"]] == ["trait_invalid:out_of_range"]
    assert "outside the years 1 to 9999" in answer["warnings"][0]["message"]


@pytest.mark.parametrize("kind", ['["track"]', '{"t":1}', "7", "null"])
def test_a_type_that_is_not_text_refuses_its_item_alone(client, kind):
    odd = f'{{"type":{kind},"messageId":"odd-1","userId":"u","event":"X"}}'

    response = batch(client, GOOD, odd)

    assert response.status_code == 200
    assert [r["code"] for r in response.json()["rejected"]] == ["invalid_type"]
    assert list(Event.objects.values_list("message_id", flat=True)) == ["good-1"]


def test_a_refused_single_call_does_not_keep_its_write_key(client):
    from profiles.models import RejectedEvent

    body = json.dumps(
        {"writeKey": "test-env-write-key", "userId": "u", "timestamp": "bad"}
    )

    response = client.post("/v1/track", data=body, content_type="application/json")

    assert response.status_code == 200
    (kept,) = RejectedEvent.objects.values_list("payload", flat=True)
    assert kept["writeKey"] == "(not kept)"
    assert "test-env-write-key" not in json.dumps(kept)


@pytest.mark.parametrize("sent_at", ['""', '"yesterday"', "12345"])
def test_a_batch_sent_at_that_cannot_be_read_costs_no_event(client, sent_at):
    body = (
        f'{{"sentAt":{sent_at},"batch":['
        '{"type":"track","messageId":"s-1","userId":"u","event":"X",'
        '"timestamp":"2025-01-01T00:00:00Z"},'
        '{"type":"track","messageId":"s-2","userId":"u","event":"Y"}]}'
    )

    response = client.post(
        "/v1/batch", data=body, content_type="application/json", **AUTH
    )

    answer = response.json()
    assert (answer["stored"], answer["rejected"]) == (2, [])
    assert [w["code"] for w in answer["warnings"]] == ["sent_at_unreadable"] * 2
    first = Event.objects.get(message_id="s-1")
    assert first.timestamp.isoformat() == "2025-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("event", "properties", "code"),
    [
        ("Order Refunded", {"total": 5}, "order_id_missing"),
        ("Order Cancelled", {"order_id": ""}, "order_id_missing"),
        ("Order Refunded", {"order_id": "1", "total": 5, "currency": "EUR"},
         "refund_currency_other"),
        ("Order Refunded", {"order_id": "1", "total": "abc"}, "refund_amount_unreadable"),
        ("Order Refunded", {"order_id": "1", "total": 1e-45}, "refund_amount_too_small"),
    ],
)  # fmt: skip
def test_a_refund_or_cancellation_that_changes_nothing_is_said(
    client, event, properties, code
):
    item = json.dumps(
        {"type": "track", "userId": "u", "event": event, "properties": properties}
    )

    body = batch(client, item).json()

    assert body["stored"] == 1
    assert [w["code"] for w in body["warnings"]] == [code]


def test_an_order_amount_too_small_to_keep_is_named_so(client):
    order = (
        '{"type":"track","messageId":"ord-t","userId":"u","event":"Order Completed",'
        '"properties":{"order_id":"9","total":1e-45}}'
    )

    warning = batch(client, order).json()["warnings"][0]

    assert warning["message"] == (
        "properties.total 1e-45 is too small to keep (an amount other than 0 must "
        "be at least 0.000000000000001 in size): the order counts as an order, but "
        "adds nothing to lifetime value"
    )


def _track_at(message_id: str, at: str) -> str:
    return json.dumps(
        {
            "type": "track",
            "messageId": message_id,
            "userId": "u",
            "event": "Order Completed",
            "timestamp": at,
        }
    )


def test_a_clock_hours_ahead_without_sent_at_is_placed_at_the_arrival(client):
    # Twelve hours ahead, with no sentAt to say by how much: kept as stamped, the
    # order would be the person's last order and last seen until tonight.
    with time_machine.travel("2026-03-02T09:00:00Z", tick=False):
        answer = batch(client, _track_at("ahead-1", "2026-03-02T21:00:00Z")).json()

    assert answer["stored"] == 1
    assert [(w["messageId"], w["code"]) for w in answer["warnings"]] == [
        ("ahead-1", "timestamp_ahead")
    ]
    assert "originalTimestamp keeps the time sent" in answer["warnings"][0]["message"]
    event = Event.objects.get(message_id="ahead-1")
    assert event.timestamp == event.received_at == datetime(2026, 3, 2, 9, tzinfo=UTC)
    assert event.original_timestamp == datetime(2026, 3, 2, 21, tzinfo=UTC)


def test_a_clock_minutes_ahead_keeps_its_timestamp_without_a_word(client):
    with time_machine.travel("2026-03-02T09:00:00Z", tick=False):
        answer = batch(client, _track_at("near-1", "2026-03-02T09:04:00Z")).json()

    assert (answer["stored"], answer.get("warnings")) == (1, None)
    event = Event.objects.get(message_id="near-1")
    assert event.timestamp == datetime(2026, 3, 2, 9, 4, tzinfo=UTC)


@pytest.mark.parametrize(
    ("item", "named"),
    [
        ('"properties":{"note":"gift\\u0000wrap"}', "properties.note holds"),
        ('"properties":{"tags":["a","b\\u0000"]}', "properties.tags[1] holds"),
        ('"properties":{"x\\u0000":1}', "a key in properties holds"),
    ],
)
def test_a_nul_is_refused_with_where_it_is(client, item, named):
    nul = f'{{"type":"track","messageId":"nul-2","userId":"u","event":"X",{item}}}'

    (rejected,) = batch(client, GOOD, nul).json()["rejected"]

    assert rejected["code"] == "invalid_characters"
    assert rejected["message"].startswith(named), rejected["message"]
    assert "U+0000" in rejected["message"]


# Each a character COPY's text lines would otherwise read as markup: a backslash,
# a tab, a line break, a return, and what would read as NULL or the end of the data.
ODD_IDS = ["back\\slash", "tab\there", "two\nlines", "re\rturn", "\\N", "\\."]


def test_message_ids_holding_copys_markup_are_stored_and_known_again(client):
    items = [
        json.dumps({"type": "track", "messageId": mid, "userId": "u", "event": "Odd"})
        for mid in ODD_IDS
    ]

    first = batch(client, *items).json()
    again = batch(client, *items).json()

    stored = sorted(Event.objects.values_list("message_id", flat=True))
    assert stored == sorted(ODD_IDS)
    assert (first["stored"], first["rejected"]) == (len(ODD_IDS), [])
    assert (again["stored"], again["duplicates"]) == (0, len(ODD_IDS))


def test_objects_are_stored_as_sent_through_the_events_copy(client):
    properties = {
        "big": 2**70,
        "text": "Zürich “quoted” \\ back",
        "nested": {"list": [1, 2.5, None, True], "empty": {}},
    }
    item = {"type": "track", "messageId": "obj-1", "userId": "u", "event": "Obj"}

    batch(client, json.dumps({**item, "properties": properties}))

    event = Event.objects.get()
    assert event.properties == properties
    assert event.integrations == {}
