"""Processing counts each source's events by the hour they arrived, each event once."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from profiles import processing, processing_chunk
from profiles.health import sources_health
from profiles.models import Event, ProfileMerge, SourceHour, WriteKey
from profiles.processing import events_process_again, events_process_pending
from profiles.source_counts import source_hours_rebuild
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

WEB = "segment:Web"
APP = "segment:App"
NOON = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)


def stored(message_id: str, *, source: str, received: datetime, **fields) -> Event:
    fields.setdefault("type", "page")
    fields.setdefault("anonymous_id", "anon-1")
    return Event.objects.create(
        message_id=message_id,
        source=source,
        timestamp=received,
        received_at=received,
        **fields,
    )


def counted() -> dict[tuple[str, datetime], tuple[int, datetime | None, int]]:
    rows = SourceHour.objects.values_list(
        "source", "hour", "done", "last_succeeded_at", "first_id"
    )
    return {(source, hour): tuple(rest) for source, hour, *rest in rows}


def test_processed_events_are_counted_by_source_and_hour_they_arrived():
    first = stored("w1", source=WEB, received=NOON + timedelta(minutes=5))
    stored("w2", source=WEB, received=NOON + timedelta(minutes=50))
    stored("w3", source=WEB, received=NOON + timedelta(hours=1, minutes=1))
    app = stored("a1", source=APP, received=NOON + timedelta(minutes=7))

    assert events_process_pending() == 4

    assert counted() == {
        (WEB, NOON): (2, NOON + timedelta(minutes=50), first.pk),
        (WEB, NOON + timedelta(hours=1)): (
            1,
            NOON + timedelta(hours=1, minutes=1),
            first.pk + 2,
        ),
        (APP, NOON): (1, NOON + timedelta(minutes=7), app.pk),
    }


def test_a_second_run_adds_to_the_hour_the_first_began():
    stored("w1", source=WEB, received=NOON + timedelta(minutes=5))
    events_process_pending()
    stored("w2", source=WEB, received=NOON + timedelta(minutes=1))
    events_process_pending()

    events, last, _ = counted()[(WEB, NOON)]
    assert (events, last) == (2, NOON + timedelta(minutes=5))


def poison_fails(monkeypatch) -> None:
    """Make processing raise on any event from the anonymousId "poison"."""
    apply = processing_chunk.EventChunk.apply

    def failing(self, event):
        if event.anonymous_id == "poison":
            raise ValueError("cannot apply")
        return apply(self, event)

    monkeypatch.setattr(processing_chunk.EventChunk, "apply", failing)


def test_a_failed_event_counts_but_is_no_success(monkeypatch):
    poison_fails(monkeypatch)
    stored("ok", source=WEB, received=NOON + timedelta(minutes=1))
    stored(
        "bad", source=WEB, received=NOON + timedelta(minutes=9), anonymous_id="poison"
    )

    assert events_process_pending() == 2

    assert Event.objects.get(message_id="bad").processing_error
    events, last, _ = counted()[(WEB, NOON)]
    assert (events, last) == (2, NOON + timedelta(minutes=1))
    assert SourceHour.objects.get().failed == 1


def test_the_page_counts_failed_events_and_lists_the_latest(monkeypatch):
    def failing(self, event):
        raise ValueError("cannot apply")

    monkeypatch.setattr(processing_chunk.EventChunk, "apply", failing)
    WriteKey.objects.create(name="Web", key="web-key")
    stored("bad", source=WEB, received=NOON)
    stored("worse", source=WEB, received=NOON + timedelta(minutes=1))
    events_process_pending()

    web = {s["name"]: s for s in sources_health(now=NOON)}[WEB]

    assert web["failed"]["count"] == 2
    assert [e["message_id"] for e in web["failed"]["recent"]] == ["worse", "bad"]


def test_a_failed_event_processed_again_is_no_longer_counted_failed(monkeypatch):
    apply = processing_chunk.EventChunk.apply
    poison_fails(monkeypatch)
    stored("bad", source=WEB, received=NOON, anonymous_id="poison")
    events_process_pending()
    monkeypatch.setattr(processing_chunk.EventChunk, "apply", apply)

    events_process_again(events=Event.objects.all())
    events_process_pending()

    WriteKey.objects.create(name="Web", key="web-key")
    web = {s["name"]: s for s in sources_health(now=NOON)}[WEB]
    assert web["failed"]["count"] == 0
    assert SourceHour.objects.values_list("done", "failed").get() == (1, 0)


def test_an_event_the_database_refuses_counts_once_when_marked_failed(monkeypatch):
    from django.db import DataError

    write = processing_chunk.profiles_identify_write

    def refusing(*, profiles):
        profiles = list(profiles)
        if any(profile.first_name == "Poison" for profile in profiles):
            raise DataError("value too long")
        return write(profiles=profiles)

    monkeypatch.setattr(processing_chunk, "profiles_identify_write", refusing)
    for n, name in enumerate(["Ana", "Poison", "Ben"]):
        stored(
            f"i{n}",
            source=WEB,
            received=NOON + timedelta(minutes=n),
            type="identify",
            anonymous_id=f"anon-{n}",
            user_id=f"u{n}",
            traits={"firstName": name},
        )

    assert events_process_pending() == 3

    assert Event.objects.exclude(processing_error="").count() == 1
    events, last, _ = counted()[(WEB, NOON)]
    assert (events, last) == (3, NOON + timedelta(minutes=2))
    assert SourceHour.objects.get().failed == 1


def test_a_chunk_that_merges_midway_counts_each_event_once():
    # The merge is applied on its own, after the events before it are written.
    stored("p1", source=WEB, received=NOON, anonymous_id="anon-9")
    stored(
        "i1",
        source=WEB,
        received=NOON + timedelta(minutes=1),
        type="identify",
        anonymous_id="anon-2",
        user_id="usr-1",
        traits={"email": "kim@example.com"},
    )
    stored(
        "i2",
        source=WEB,
        received=NOON + timedelta(minutes=2),
        type="identify",
        anonymous_id="anon-9",
        user_id="usr-1",
    )
    stored(
        "p2", source=WEB, received=NOON + timedelta(minutes=3), anonymous_id="anon-9"
    )

    assert events_process_pending() == 4

    assert ProfileMerge.objects.count() == 1
    assert counted()[(WEB, NOON)][0] == 4


def test_events_processed_again_count_once():
    for n in range(3):
        stored(f"w{n}", source=WEB, received=NOON + timedelta(minutes=n))
    events_process_pending()

    again = events_process_again(
        events=Event.objects.filter(message_id__in=["w0", "w1"])
    )
    assert again == 2
    assert counted()[(WEB, NOON)][0] == 1

    events_process_pending()
    assert counted()[(WEB, NOON)][0] == 3


def test_counting_again_from_the_event_table_gives_what_processing_kept():
    for n in range(5):
        source = WEB if n % 2 else APP
        stored(f"e{n}", source=source, received=NOON + timedelta(minutes=25 * n))
    events_process_pending()
    stored("waiting", source=WEB, received=NOON + timedelta(hours=4))
    kept = counted()

    assert source_hours_rebuild() == len(kept) == 4
    assert counted() == kept


def test_the_command_counts_again_and_says_how_many_hours(capsys):
    stored("w1", source=WEB, received=NOON)
    events_process_pending()
    SourceHour.objects.all().delete()

    call_command("source_hours_rebuild")

    assert capsys.readouterr().out == "Counted 1 source hours.\n"
    assert counted()[(WEB, NOON)][0] == 1


def test_the_sources_page_adds_what_waits_to_what_is_counted():
    WriteKey.objects.create(name="Web", key="web-key")
    now = NOON + timedelta(minutes=30)
    stored("done", source=WEB, received=NOON + timedelta(minutes=1))
    events_process_pending()
    stored("waiting", source=WEB, received=NOON + timedelta(minutes=2))
    stored("old", source=WEB, received=NOON - timedelta(days=2, minutes=1))
    Event.objects.filter(message_id="old").update(processed_at=NOON - timedelta(days=2))
    source_hours_rebuild()

    web = {s["name"]: s for s in sources_health(now=now)}[WEB]

    assert [(b["at"], b["count"]) for b in web["hourly"] if b["count"]] == [(NOON, 2)]
    busy_days = [(b["at"], b["count"]) for b in web["daily"] if b["count"]]
    assert busy_days == [
        (NOON.replace(hour=0) - timedelta(days=2), 1),
        (NOON.replace(hour=0), 2),
    ]
    assert web["last_received_at"] == NOON + timedelta(minutes=1)
    assert web["unprocessed"]["count"] == 1


def test_events_processed_again_while_a_chunk_processes_them_count_once(
    transactional_db, monkeypatch
):
    for n in range(3):
        stored(f"w{n}", source=WEB, received=NOON + timedelta(minutes=n))
    finishing, release = threading.Event(), threading.Event()
    announce = processing._profiles_changed_announce

    def held(*args, **kwargs):
        # Inside the chunk's transaction: its events and counts are written.
        finishing.set()
        release.wait(timeout=10)
        return announce(*args, **kwargs)

    monkeypatch.setattr(processing, "_profiles_changed_announce", held)

    def worker() -> None:
        events_process_pending()
        connection.close()

    def admin() -> None:
        events_process_again(events=Event.objects.all())
        connection.close()

    chunk, again = threading.Thread(target=worker), threading.Thread(target=admin)
    chunk.start()
    assert finishing.wait(timeout=10)
    again.start()
    again.join(timeout=1)
    release.set()
    chunk.join()
    again.join()
    monkeypatch.setattr(processing, "_profiles_changed_announce", announce)

    assert Event.objects.filter(processed_at=None).count() == 3
    assert counted()[(WEB, NOON)][0] == 0
    events_process_pending()
    assert counted()[(WEB, NOON)][0] == 3


def test_items_sent_again_are_counted_as_duplicates_and_a_recount_keeps_them(
    client, django_capture_on_commit_callbacks
):
    import base64
    import json

    import time_machine

    WriteKey.objects.create(name="Web", key="web-key")
    auth = "Basic " + base64.b64encode(b"web-key:").decode()
    batch = {
        "batch": [
            {"type": "page", "anonymousId": "a-1", "messageId": f"m-{n}"}
            for n in range(3)
        ]
    }

    def send(at: datetime) -> dict:
        with (
            time_machine.travel(at, tick=False),
            django_capture_on_commit_callbacks(execute=True),
        ):
            return client.post(
                "/v1/batch",
                data=json.dumps(batch),
                content_type="application/json",
                HTTP_AUTHORIZATION=auth,
            ).json()

    assert send(NOON)["duplicates"] == 0
    assert send(NOON + timedelta(minutes=5))["duplicates"] == 3
    assert send(NOON + timedelta(hours=1))["duplicates"] == 3
    events_process_pending()

    def duplicates() -> int:
        later = NOON + timedelta(hours=2)
        return {s["name"]: s for s in sources_health(now=later)}[WEB]["duplicates"]

    assert duplicates() == 6
    client.force_login(UserFactory(is_staff=True))
    with time_machine.travel(NOON + timedelta(hours=2), tick=False):
        page = client.get(reverse("sources_health")).content.decode()
    assert '<div class="figure" data-figure="duplicates">6</div>' in page
    source_hours_rebuild()
    assert duplicates() == 6
    assert sorted(
        SourceHour.objects.filter(source=WEB).values_list("hour", "done", "duplicates")
    ) == [(NOON, 3, 3), (NOON + timedelta(hours=1), 0, 3)]
