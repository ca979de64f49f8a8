"""MessageIds are claimed in a table of their own, with the events that carry them.

The event table keeps no index on messageId (processing rewrites each event row,
and a unique index of random ids made that rewrite a third slower); EventMessage
keeps them unique instead. These tests run outside a test transaction, as the
server does, so that two connections can race for the same ids. An event stored by
the old release's web process after migration 0038 copied the ids claims nothing:
README's upgrade steps stop the web processes too for it (QA qa10).
"""

import base64
import importlib
import threading
from datetime import UTC, datetime

import psycopg
import pytest
from django.db import IntegrityError, connection, migrations
from django.test import Client

from profiles import ingestion
from profiles.models import Event, EventMessage, EventType, Profile
from profiles.services import event_store_once

pytestmark = pytest.mark.django_db(transaction=True)

AUTH = {
    "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"test-env-write-key:").decode()
}
WAIT_SECONDS = 10
MIGRATION = importlib.import_module("profiles.migrations.0038_event_messages")


def batch(*numbers: int) -> dict:
    return batch_of(*(f"m-{n}" for n in numbers))


def batch_of(*message_ids: str) -> dict:
    body = (
        '{"batch":['
        + ",".join(
            f'{{"type":"track","messageId":"{m}","userId":"u-{m}","event":"Viewed"}}'
            for m in message_ids
        )
        + "]}"
    )
    response = Client().post(
        "/v1/batch", data=body, content_type="application/json", **AUTH
    )
    assert response.status_code == 200, response.content
    return response.json()


def _indexes(table: str) -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [table]
        )
        return dict(cursor.fetchall())


def test_the_event_table_keeps_no_index_on_message_ids():
    definitions = _indexes("profiles_event").values()

    assert definitions, "the event table has its other indexes"
    assert not [d for d in definitions if "message_id" in d]


def test_the_claim_table_keeps_one_index_its_primary_key():
    # QA qa10: Django gave the varchar key a second, pattern-ops index that no
    # query uses (the admin's search is on the event table); each claim wrote both.
    assert list(_indexes("profiles_eventmessage")) == ["profiles_eventmessage_pkey"]


def _fill_factor() -> str | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'profiles_profile'"
        )
        (options,) = cursor.fetchone()
    return next((o for o in options or [] if o.startswith("fillfactor=")), None)


def test_the_migration_leaves_room_on_each_profile_page_for_its_next_version():
    # The suite builds its tables from the models (--no-migrations): the
    # migration's own function is run here.
    with connection.schema_editor() as editor:
        MIGRATION.profile_fill_factor_set(None, editor)
    try:
        assert _fill_factor() == "fillfactor=70"
    finally:
        with connection.schema_editor() as editor:
            MIGRATION.profile_fill_factor_reset(None, editor)
    assert _fill_factor() is None


def test_the_migration_claims_the_ids_of_the_events_stored_before_it():
    at = datetime(2026, 12, 1, tzinfo=UTC)
    Event.objects.create(message_id="old-1", type="track", timestamp=at, received_at=at)
    (backfill,) = [
        operation
        for operation in MIGRATION.Migration.operations
        if isinstance(operation, migrations.RunSQL)
    ]
    with connection.cursor() as cursor:
        cursor.execute(backfill.sql)

    again = batch_of("old-1")

    assert (again["stored"], again["duplicates"]) == (0, 1)


def test_each_stored_event_claims_its_message_id():
    result = batch(1, 2)

    assert (result["stored"], result["duplicates"]) == (2, 0)
    assert set(EventMessage.objects.values_list("message_id", flat=True)) == {
        "m-1",
        "m-2",
    }


def test_a_message_id_stays_claimed_after_its_event_is_deleted():
    batch(1)
    Event.objects.all().delete()

    again = batch(1)

    assert (again["stored"], again["duplicates"]) == (0, 1)
    assert not Event.objects.exists()


def _claim_held(message_id: str) -> psycopg.Connection:
    # Another request's transaction that claimed the id and has not committed.
    settings = connection.settings_dict
    other = psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"],
        user=settings["USER"],
        dbname=settings["NAME"],
    )
    other.execute(
        "INSERT INTO profiles_eventmessage (message_id) VALUES (%s)", [message_id]
    )
    return other


def _batch_in_thread(*numbers: int) -> tuple[threading.Thread, list[dict]]:
    answers: list[dict] = []

    def send() -> None:
        try:
            answers.append(batch(*numbers))
        finally:
            connection.close()

    thread = threading.Thread(target=send)
    thread.start()
    return thread, answers


def test_a_request_waits_for_one_claiming_the_same_id_and_skips_it_if_it_commits():
    other = _claim_held("m-1")
    thread, answers = _batch_in_thread(1, 2)
    thread.join(timeout=1)
    assert thread.is_alive(), "the request waits for the other's claim"

    other.commit()
    other.close()
    thread.join(timeout=WAIT_SECONDS)

    assert (answers[0]["stored"], answers[0]["duplicates"]) == (1, 1)
    assert list(Event.objects.values_list("message_id", flat=True)) == ["m-2"]


def test_a_request_stores_an_id_whose_other_claim_was_rolled_back():
    other = _claim_held("m-1")
    thread, answers = _batch_in_thread(1)
    thread.join(timeout=1)

    other.rollback()
    other.close()
    thread.join(timeout=WAIT_SECONDS)

    assert (answers[0]["stored"], answers[0]["duplicates"]) == (1, 0)
    assert EventMessage.objects.filter(message_id="m-1").exists()


def test_the_claims_of_a_request_whose_events_failed_are_undone(monkeypatch):
    def copy_failed(fresh):
        raise RuntimeError("the database went away mid-COPY")

    monkeypatch.setattr(ingestion, "_events_copy", copy_failed)
    with pytest.raises(RuntimeError):
        batch(1)
    monkeypatch.undo()

    again = batch(1)

    assert (again["stored"], again["duplicates"]) == (1, 0)


def _drafts(*numbers: int) -> list[dict]:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    return [
        {
            **dict.fromkeys(ingestion.STORED_COLUMNS, ""),
            "message_id": f"m-{n}",
            "type": EventType.TRACK,
            "event": "Viewed",
            "properties": {},
            "traits": {},
            "context": {},
            "integrations": {},
            "timestamp": at,
            "original_timestamp": None,
            "sent_at": None,
            "received_at": at,
        }
        for n in numbers
    ]


def test_the_orm_path_stores_new_ids_once():
    # The embedded SQLite's path, run here on PostgreSQL's tables.
    assert ingestion._events_insert_with_orm(_drafts(1, 2)) == 2
    assert ingestion._events_insert_with_orm(_drafts(2, 3)) == 1

    assert sorted(Event.objects.values_list("message_id", flat=True)) == [
        "m-1",
        "m-2",
        "m-3",
    ]


def test_an_id_another_request_claimed_meanwhile_redoes_the_request(monkeypatch):
    # On SQLite the check and the insert are two statements: the insert of an id
    # claimed between them fails, and the request is done again.
    insert = ingestion._events_insert
    met: list[int] = []

    def raced_once(fresh, **how):
        if not met:
            met.append(1)
            other = _claim_held("m-1")
            other.commit()
            other.close()
            raise IntegrityError("duplicate key value violates unique constraint")
        return insert(fresh, **how)

    monkeypatch.setattr(ingestion, "_events_insert", raced_once)

    result = batch(1, 2)

    assert (result["stored"], result["duplicates"]) == (1, 1)
    assert list(Event.objects.values_list("message_id", flat=True)) == ["m-2"]


def test_an_event_bespoke_writes_itself_is_stored_once_and_again_once_deleted():
    profile = Profile.objects.create(email="ana@example.com")
    fields = {
        "type": EventType.TRACK,
        "event": "Order Completed",
        "profile": profile,
        "source": "shopify",
        "timestamp": datetime(2026, 12, 1, tzinfo=UTC),
        "received_at": datetime(2026, 12, 1, tzinfo=UTC),
    }

    first = event_store_once(message_id="shopify:order:1", **fields)
    again = event_store_once(message_id="shopify:order:1", **fields)
    first.delete()
    after_delete = event_store_once(message_id="shopify:order:1", **fields)
    later = event_store_once(message_id="shopify:order:1", **fields)

    assert first is not None
    assert again is None
    assert after_delete is not None
    assert later is None
    assert list(Event.objects.values_list("pk", flat=True)) == [after_delete.pk]
    assert EventMessage.objects.get().event_id == after_delete.pk


def test_an_id_the_tracking_api_claimed_is_not_stored_by_bespokes_own_writers():
    batch_of("shared-1")
    Event.objects.all().delete()
    at = datetime(2026, 12, 1, tzinfo=UTC)

    stored = event_store_once(
        message_id="shared-1", type=EventType.TRACK, timestamp=at, received_at=at
    )

    assert stored is None


def test_new_ids_are_claimed_quickly_and_a_request_sent_again_carefully(monkeypatch):
    insert = ingestion._events_insert
    calls: list[bool] = []

    def spied(fresh, *, careful):
        calls.append(careful)
        return insert(fresh, careful=careful)

    monkeypatch.setattr(ingestion, "_events_insert", spied)

    first = batch(1)
    again = batch(1, 2)

    assert calls == [False, False, True]
    assert (first["stored"], again["stored"], again["duplicates"]) == (1, 1, 1)
