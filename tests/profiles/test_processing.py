"""Event processing: identity stitching, profile upserts, merges, computed traits."""

import base64
import importlib
import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.apps import apps as django_apps
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from campaigns.models import Message
from campaigns.sending import message_skip_reason
from profiles import processing, processing_chunk
from profiles.models import (
    ConsentRecord,
    Event,
    EventType,
    IdentityKind,
    ProcessingRequest,
    Profile,
    ProfileIdentity,
    ProfileMerge,
    ProfileTag,
    RejectedEvent,
    ShopCheckout,
    ShopOrder,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from profiles.processing import (
    events_process,
    events_process_pending,
    profile_traits_compute,
)
from profiles.processing_identities import MERGED_DROPS
from profiles.services import consent_record, suppression_hash
from profiles.signals import profiles_changed
from profiles.tasks import (
    events_process_enqueue,
    events_process_task,
    events_sweep_task,
)
from segments.compiler import profiles_matching
from tests.factories import CampaignFactory, ProfileFactory, UserFactory

BATCH_RECEIVED_AT = "2025-03-15T08:06:12.600Z"
EDGE_SENT_AT = "2025-03-14T14:10:09.000Z"
ANA_ANON = "8d4c2b7e-5f1a-4e3b-9c6d-0a1b2c3d4e5f"
VISITOR_ANON = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
DMITRI_ANON = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"


@pytest.fixture
def queued_runs(monkeypatch) -> list[dict]:
    """The processing runs queued, by the options each was queued with."""
    queued: list[dict] = []
    monkeypatch.setattr(
        events_process_task, "apply_async", lambda *a, **k: queued.append(k)
    )
    return queued


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture
def ingest(client, load_fixture):
    """Post a fixture batch through the API at the given time, as the site would."""

    def send(name: str, *, at: str) -> None:
        token = base64.b64encode(b"test-env-write-key:").decode()
        with time_machine.travel(at, tick=False):
            response = client.post(
                "/v1/batch",
                data=load_fixture(f"segment/{name}"),
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Basic {token}",
            )
        assert response.status_code == 200

    return send


@pytest.fixture
def processed_batch(db, ingest):
    ingest("batch.json", at=BATCH_RECEIVED_AT)
    return events_process_pending()


def profile_of(user_id: str) -> Profile:
    return ProfileIdentity.objects.get(kind=IdentityKind.USER_ID, value=user_id).profile


def event_profile_id(message_id: str) -> int | None:
    return Event.objects.get(message_id=message_id).profile_id


# Computed traits count processed events: an event stored with its profile (a
# shop's order) counts once processed.
PROCESSED = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)


def track(message_id: str, *, profile: Profile | None = None, **fields) -> Event:
    fields.setdefault("type", "track")
    fields.setdefault("timestamp", utc("2025-03-14T10:00:00Z"))
    fields.setdefault("received_at", utc("2025-03-14T10:00:01Z"))
    return Event.objects.create(message_id=message_id, profile=profile, **fields)


def test_it_processes_every_event_of_the_batch_once(processed_batch):
    assert processed_batch == 30
    assert Event.objects.filter(processed_at__isnull=True).count() == 0
    assert Event.objects.filter(profile__isnull=True).count() == 0
    assert events_process_pending() == 0


def test_it_finds_five_people_in_the_batch(processed_batch):
    emails = sorted(
        Profile.objects.values_list("email", flat=True),
        key=lambda email: (email is None, email),
    )
    assert emails == [
        "ana.souza@example.com",
        "ben.okafor@example.net",
        "chloe.dubois@example.org",
        "d.volkov@example.com",
        None,
    ]


def test_anas_anonymous_browsing_joins_her_profile(processed_batch):
    ana = profile_of("usr_1001")

    assert ana.email == "ana.souza@example.com"
    assert event_profile_id("ajs-next-5d1f0c2a-0001-4a7e-9b1c-3e5f7a9c1e01") == ana.pk
    assert event_profile_id("ajs-next-5d1f0c2a-0002-4a7e-9b1c-3e5f7a9c1e02") == ana.pk
    assert Event.objects.filter(profile=ana).count() == 8
    assert set(ana.identities.values_list("kind", "value")) == {
        ("user_id", "usr_1001"),
        ("anonymous_id", ANA_ANON),
    }


def test_identify_traits_fill_the_profile(processed_batch):
    ana = profile_of("usr_1001")

    assert (ana.first_name, ana.last_name) == ("Ana", "Souza")
    assert ana.phone == "+55 11 5555-0123"
    assert (ana.city, ana.region, ana.country_code) == ("São Paulo", "SP", "BR")
    assert ana.timezone == "America/Sao_Paulo"
    assert ana.traits == {
        "createdAt": "2024-09-02T18:22:40Z",
        "address": {"city": "São Paulo", "state": "SP", "country": "BR"},
    }
    assert ana.subscription_status == SubscriptionStatus.NOT_SUBSCRIBED


def test_dmitris_page_joins_him_through_the_alias(processed_batch):
    dmitri = profile_of("usr_1005")

    assert dmitri.email == "d.volkov@example.com"
    assert dmitri.email_display == "D.Volkov@Example.com"
    assert event_profile_id("ajs-next-9b5d4a6e-0027-4ebc-8f5a-7c9d1e3a5c27") == (
        dmitri.pk
    )
    assert Event.objects.filter(profile=dmitri).count() == 4
    assert dmitri.identities.get(value=DMITRI_ANON).kind == "anonymous_id"


def test_the_anonymous_visitor_is_one_profile_without_email(processed_batch):
    identity = ProfileIdentity.objects.get(value=VISITOR_ANON)
    visitor = identity.profile

    assert visitor.email is None
    assert visitor.identities.count() == 1
    assert Event.objects.filter(profile=visitor).count() == 3
    assert (
        Event.objects.filter(anonymous_id=VISITOR_ANON).exclude(profile=visitor).count()
        == 0
    )


def test_bens_order_gives_his_lifetime_value(processed_batch):
    ben = profile_of("usr_1002")

    assert ben.lifetime_value == Decimal("152.29")
    assert ben.order_count == 1
    order_at = Event.objects.get(event="Order Completed").timestamp
    assert ben.first_order_at == order_at
    assert ben.last_order_at == order_at
    assert ben.last_seen_at == order_at


def test_people_without_orders_have_no_lifetime_value(processed_batch):
    chloe = profile_of("usr_1003")

    assert (chloe.lifetime_value, chloe.order_count) == (Decimal("0"), 0)
    assert chloe.first_order_at is None
    assert chloe.last_seen_at == utc("2025-03-14T17:42:30.808Z") + (
        utc(BATCH_RECEIVED_AT) - utc("2025-03-15T08:06:12.417Z")
    )


def test_an_identify_keeps_an_imported_unsubscribe(db, ingest):
    given = Profile.objects.create(
        email="d.volkov@example.com", first_name="Dmitri", last_name="Volkov"
    )
    consent_record(
        profile=given,
        status=SubscriptionStatus.UNSUBSCRIBED,
        source="mailchimp_import",
        occurred_at=utc("2024-12-03T08:15:00Z"),
        from_import=True,
    )
    assert given.subscription_status == SubscriptionStatus.UNSUBSCRIBED

    ingest("batch.json", at=BATCH_RECEIVED_AT)
    events_process_pending()

    dmitri = profile_of("usr_1005")
    assert dmitri.pk == given.pk
    assert dmitri.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert dmitri.subscription_changed_at == utc("2024-12-03T08:15:00Z")
    assert ConsentRecord.objects.filter(profile=dmitri).count() == 1
    assert event_profile_id("ajs-next-9b5d4a6e-0027-4ebc-8f5a-7c9d1e3a5c27") == (
        given.pk
    )
    merge = ProfileMerge.objects.get(kept=given)
    assert not Profile.objects.filter(pk=merge.merged_profile_id).exists()
    assert merge.moved["events"] == 2
    assert merge.moved["identities"] == 2


def test_an_imported_profile_is_the_one_an_identify_uses(db, ingest):
    imported = ProfileFactory(email="ana.souza@example.com", first_name="")

    ingest("batch.json", at=BATCH_RECEIVED_AT)
    events_process_pending()

    ana = profile_of("usr_1001")
    assert ana.pk == imported.pk
    assert ana.first_name == "Ana"
    assert ana.subscription_status == SubscriptionStatus.SUBSCRIBED
    assert event_profile_id("ajs-next-5d1f0c2a-0001-4a7e-9b1c-3e5f7a9c1e01") == (
        imported.pk
    )


def test_consent_traits_in_an_identify_are_not_consent(db):
    profile = ProfileFactory(
        email="mia.johnson@example.com",
        subscription_status=SubscriptionStatus.UNSUBSCRIBED,
    )
    track(
        "consent-1",
        type="identify",
        user_id="usr_3001",
        traits={
            "email": "mia.johnson@example.com",
            "subscription_status": "subscribed",
            "unsubscribed": False,
        },
    )

    events_process_pending()

    profile.refresh_from_db()
    assert profile.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert profile.subscription_changed_at is None
    assert profile.consent_records.count() == 0


def test_edge_case_email_matches_the_imported_profile(db, ingest):
    sam = Profile.objects.create(email="sam.taylor@example.com")

    ingest("batch_edge_cases.json", at=EDGE_SENT_AT)
    events_process_pending()

    sam.refresh_from_db()
    assert sam.first_name == "Sam"
    assert profile_of("1006").pk == sam.pk
    assert Profile.objects.filter(email__iexact="sam.taylor@example.com").count() == 1


def test_string_numbers_count_in_lifetime_value(db):
    profile = ProfileFactory()
    track(
        "order-1",
        profile=profile,
        processed_at=PROCESSED,
        event="Order Completed",
        properties={"order_id": "A1", "total": "10.50", "currency": "USD"},
    )
    track(
        "order-2",
        profile=profile,
        processed_at=PROCESSED,
        event="Order Completed",
        properties={"order_id": "A2", "revenue": 4},
    )

    profile_traits_compute(profile=profile)

    profile.refresh_from_db()
    assert profile.lifetime_value == Decimal("14.50")
    assert profile.order_count == 2
    assert Event.objects.get(message_id="order-1").properties["total"] == "10.50"


def test_other_currencies_are_left_out_of_lifetime_value(db):
    profile = ProfileFactory()
    track(
        "order-eur",
        profile=profile,
        processed_at=PROCESSED,
        event="Order Completed",
        properties={"order_id": "E1", "total": 80, "currency": "EUR"},
    )
    track(
        "order-usd",
        profile=profile,
        processed_at=PROCESSED,
        event="Order Completed",
        properties={"order_id": "U1", "total": 20, "currency": "usd"},
        timestamp=utc("2025-03-14T11:00:00Z"),
    )

    profile_traits_compute(profile=profile)

    profile.refresh_from_db()
    assert profile.lifetime_value == Decimal("20")
    assert profile.order_count == 2
    assert profile.first_order_at == utc("2025-03-14T10:00:00Z")
    assert profile.last_order_at == utc("2025-03-14T11:00:00Z")


def test_the_same_order_from_two_sources_counts_once(db):
    profile = ProfileFactory()
    for message_id in ("site-order", "shop-order"):
        track(
            message_id,
            profile=profile,
            processed_at=PROCESSED,
            event="Order Completed",
            properties={"order_id": 5975551934712, "total": 152.29},
        )

    profile_traits_compute(profile=profile)

    profile.refresh_from_db()
    assert (profile.lifetime_value, profile.order_count) == (Decimal("152.29"), 1)


def test_a_merge_moves_tags_consent_and_messages(db):
    anonymous = Profile.objects.create()
    ProfileIdentity.objects.create(
        profile=anonymous, kind=IdentityKind.ANONYMOUS_ID, value="anon-merge"
    )
    known = ProfileFactory(email="grace.lee@example.com", first_name="")
    ProfileTag.objects.create(profile=anonymous, name="vip")
    ProfileTag.objects.create(profile=known, name="vip")
    ProfileTag.objects.create(profile=anonymous, name="hiker")
    both, only_anonymous = CampaignFactory(), CampaignFactory()
    kept_message = Message.objects.create(campaign=both, profile=known)
    Message.objects.create(campaign=both, profile=anonymous)
    moved_message = Message.objects.create(campaign=only_anonymous, profile=anonymous)
    order = ShopOrder.objects.create(shop_id="5975551934712", profile=anonymous)
    checkout = ShopCheckout.objects.create(token="c1", profile=anonymous)
    anonymous.first_name = "Grace"
    anonymous.save()
    track(
        "merge-identify",
        type="identify",
        user_id="usr_4001",
        anonymous_id="anon-merge",
        traits={"email": "Grace.Lee@example.com"},
    )

    events_process_pending()

    assert not Profile.objects.filter(pk=anonymous.pk).exists()
    known.refresh_from_db()
    assert known.first_name == "Grace"
    assert set(known.tags.values_list("name", flat=True)) == {"vip", "hiker"}
    assert set(known.messages.values_list("pk", flat=True)) == {
        kept_message.pk,
        moved_message.pk,
    }
    merge = ProfileMerge.objects.get()
    assert merge.kept_id == known.pk
    assert merge.merged_profile_id == anonymous.pk
    assert merge.moved == {
        "events": 0,
        "identities": 1,
        "consent_records": 0,
        "tags": 2,
        "messages": 1,
        "messages_dropped": 1,
        "shop_orders": 1,
        "shop_checkouts": 1,
        "segment_stays": 0,
    }
    order.refresh_from_db()
    checkout.refresh_from_db()
    assert order.profile_id == checkout.profile_id == known.pk


def test_every_relation_of_a_profile_is_moved_or_dropped_on_a_merge():
    # profile_merge deletes the merged row itself: a relation it neither moves nor
    # drops would fail the merge's commit on its foreign key.
    moved = {
        "events",
        "identities",
        "consent_records",
        "tags",
        "messages",
        "orders",
        "checkouts",
        "merges",
    }
    relations = {rel.get_accessor_name() for rel in Profile._meta.related_objects}

    assert relations == moved | set(MERGED_DROPS)


def test_a_merge_moves_consent_records_untouched(db):
    anonymous = Profile.objects.create()
    ProfileIdentity.objects.create(
        profile=anonymous, kind=IdentityKind.ANONYMOUS_ID, value="anon-consent"
    )
    record = consent_record(
        profile=anonymous,
        status=SubscriptionStatus.SUBSCRIBED,
        source="popup",
        occurred_at=utc("2025-03-01T09:00:00Z"),
        wording="Send me news",
    )
    known = ProfileFactory(email="emma.davis@example.com")
    track(
        "consent-identify",
        type="identify",
        user_id="usr_4002",
        anonymous_id="anon-consent",
        traits={"email": "emma.davis@example.com"},
    )

    events_process_pending()

    moved = ConsentRecord.objects.get(pk=record.pk)
    assert moved.profile_id == known.pk
    assert (moved.status, moved.wording) == ("subscribed", "Send me news")
    assert moved.recorded_at == record.recorded_at


@pytest.mark.parametrize(
    ("status", "at", "kept_status"),
    [
        # After the kept subscription: the person left.
        ("unsubscribed", "2025-03-02T09:00:00Z", "unsubscribed"),
        # Before it: the kept subscription stands.
        ("unsubscribed", "2025-02-01T09:00:00Z", "subscribed"),
        # A bounce is of the merged profile's address, not the kept one's.
        ("cleaned", "2025-03-02T09:00:00Z", "subscribed"),
    ],
)
def test_a_merge_carries_over_a_later_unsubscribe_only(db, status, at, kept_status):
    known = ProfileFactory(email="emma.davis@example.com")
    consent_record(
        profile=known,
        status=SubscriptionStatus.SUBSCRIBED,
        source="form",
        occurred_at=utc("2025-03-01T09:00:00Z"),
    )
    anonymous = Profile.objects.create()
    ProfileIdentity.objects.create(
        profile=anonymous, kind=IdentityKind.ANONYMOUS_ID, value="anon-left"
    )
    consent_record(profile=anonymous, status=status, source="link", occurred_at=utc(at))
    track(
        "left-identify",
        type="identify",
        anonymous_id="anon-left",
        traits={"email": "emma.davis@example.com"},
    )

    events_process_pending()

    known.refresh_from_db()
    assert known.subscription_status == kept_status
    if status == "unsubscribed":
        # The status is what the newest of the person's consent records says.
        newest = known.consent_records.order_by("-occurred_at").first()
        assert newest.status == kept_status


def test_a_merge_does_not_subscribe_the_kept_profile(db):
    known = ProfileFactory(
        email="ben@example.com", subscription_status=SubscriptionStatus.NOT_SUBSCRIBED
    )
    anonymous = Profile.objects.create()
    ProfileIdentity.objects.create(
        profile=anonymous, kind=IdentityKind.ANONYMOUS_ID, value="anon-sub"
    )
    consent_record(
        profile=anonymous,
        status=SubscriptionStatus.SUBSCRIBED,
        source="popup",
        occurred_at=utc("2025-03-01T09:00:00Z"),
    )
    track(
        "sub-identify",
        type="identify",
        anonymous_id="anon-sub",
        traits={"email": "ben@example.com"},
    )

    events_process_pending()

    known.refresh_from_db()
    assert known.subscription_status == SubscriptionStatus.NOT_SUBSCRIBED


def test_two_user_ids_on_one_device_are_not_merged(db):
    first = Profile.objects.create()
    ProfileIdentity.objects.create(
        profile=first, kind=IdentityKind.USER_ID, value="usr_5001"
    )
    ProfileIdentity.objects.create(
        profile=first, kind=IdentityKind.ANONYMOUS_ID, value="shared-laptop"
    )
    track("second-user", user_id="usr_5002", anonymous_id="shared-laptop", event="A")

    events_process_pending()

    second = profile_of("usr_5002")
    assert second.pk != first.pk
    assert event_profile_id("second-user") == second.pk
    assert ProfileIdentity.objects.get(value="shared-laptop").profile_id == first.pk
    assert ProfileMerge.objects.count() == 0


def test_it_processes_pending_events_oldest_first_up_to_the_limit(db):
    for minute in (5, 1, 3):
        track(
            f"at-{minute}",
            anonymous_id="anon-order",
            event="A",
            timestamp=utc(f"2025-03-14T10:0{minute}:00Z"),
        )

    assert events_process_pending(limit=2) == 2

    unprocessed = Event.objects.filter(processed_at__isnull=True)
    assert list(unprocessed.values_list("message_id", flat=True)) == ["at-5"]


def test_it_skips_events_already_processed(db):
    event = track("once", anonymous_id="anon-once", event="A")

    assert events_process() == 1
    first_at = Event.objects.get(pk=event.pk).processed_at
    assert events_process() == 0
    assert Event.objects.get(pk=event.pk).processed_at == first_at


def test_a_broken_event_is_marked_and_does_not_block_the_rest(db):
    # A row written by some other path with traits that are not an object.
    broken = track("broken", type="identify", user_id="usr_6001", traits=["x"])
    fine = track("fine", anonymous_id="anon-fine", event="A")

    assert events_process_pending() == 2

    broken.refresh_from_db()
    fine.refresh_from_db()
    assert broken.processed_at is not None
    assert broken.processing_error.startswith("AttributeError")
    assert broken.profile_id is None
    assert not ProfileIdentity.objects.filter(value="usr_6001").exists()
    assert fine.profile_id is not None
    assert fine.processing_error == ""


def test_the_tasks_process_what_is_pending(db):
    track("task-1", anonymous_id="anon-task", event="A")
    assert events_process_task.apply().get() == 1

    # Stored with no task, as when the broker was down.
    track("task-2", anonymous_id="anon-task", event="B")
    assert events_sweep_task.apply().get() == 1
    assert Event.objects.filter(processed_at__isnull=True).count() == 0


def test_a_task_takes_the_events_waiting_before_its_own_along(db):
    earlier = track(
        "waiting",
        anonymous_id="anon-behind",
        event="A",
        received_at=utc("2025-03-14T10:00:00Z"),
    )
    mine = track("mine", anonymous_id="anon-behind", event="B")

    # A task queued by an earlier release still names its events.
    assert events_process_task.apply(args=[[mine.pk]]).get() == 2

    assert Event.objects.get(pk=earlier.pk).processed_at is not None
    assert Event.objects.get(pk=mine.pk).processed_at is not None
    assert events_sweep_task.apply().get() == 0


def test_a_run_takes_every_waiting_event_along(db):
    done = track("done", anonymous_id="anon-done", event="A")
    assert events_process() == 1
    later = track("later", anonymous_id="anon-done", event="B")

    assert events_process_task.apply(args=[[done.pk]]).get() == 1

    assert Event.objects.get(pk=later.pk).processed_at is not None


def test_past_the_catch_up_limit_a_run_asks_for_the_next(db, monkeypatch, queued_runs):
    monkeypatch.setattr(processing, "EVENT_CHUNK_SIZE", 1)
    monkeypatch.setattr(processing, "EVENTS_CATCH_UP_MAX", 2)
    for number in range(3):
        track(f"limit-{number}", anonymous_id="anon-limit", event="A")

    assert events_process() == 2

    unprocessed = Event.objects.filter(processed_at__isnull=True)
    assert list(unprocessed.values_list("message_id", flat=True)) == ["limit-2"]
    # Queued outright: a request standing would make a request-based ask a no-op.
    assert queued_runs == [{}]


def test_events_are_claimed_in_the_order_they_arrived(db):
    late = track(
        "late",
        anonymous_id="anon-late",
        event="A",
        timestamp=utc("2025-03-14T09:00:00Z"),
        received_at=utc("2025-03-14T10:05:00Z"),
    )
    prompt = track(
        "prompt",
        anonymous_id="anon-prompt",
        event="A",
        timestamp=utc("2025-03-14T10:00:00Z"),
        received_at=utc("2025-03-14T10:00:01Z"),
    )

    assert events_process_pending(limit=1) == 1

    assert Event.objects.get(pk=prompt.pk).processed_at is not None
    assert Event.objects.get(pk=late.pk).processed_at is None


def test_requests_ask_for_one_run_until_it_begins(db, monkeypatch, queued_runs):

    events_process_enqueue()
    events_process_enqueue()
    assert len(queued_runs) == 1

    # The run begins: events stored from now on ask for a run of their own.
    track("after-start", anonymous_id="anon-run", event="A")
    assert events_process() == 1
    events_process_enqueue()
    assert len(queued_runs) == 2


def test_a_request_while_a_run_is_asked_for_writes_nothing(db, queued_runs):
    events_process_enqueue()

    with CaptureQueriesContext(connection) as queries:
        events_process_enqueue()

    assert len(queued_runs) == 1
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["SELECT"]


def test_a_request_not_begun_in_time_is_asked_again(db, monkeypatch, queued_runs):
    with time_machine.travel("2025-03-14T10:00:00Z", tick=False):
        events_process_enqueue()
    with time_machine.travel("2025-03-14T10:00:10Z", tick=False):
        events_process_enqueue()
    assert len(queued_runs) == 1

    # Its task was lost, or the queue is busy: the next request asks again.
    later = 1 + processing.PROCESSING_REQUEST_STALE_SECONDS
    with time_machine.travel(f"2025-03-14T10:00:{later:02d}Z", tick=False):
        events_process_enqueue()
    assert len(queued_runs) == 2


def test_a_request_the_broker_refused_is_forgotten(db, monkeypatch, queued_runs):
    queue = events_process_task.apply_async

    def refuse(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(events_process_task, "apply_async", refuse)
    events_process_enqueue()
    assert ProcessingRequest.objects.get().requested_at is None

    # The broker is back: the next request queues a run.
    monkeypatch.setattr(events_process_task, "apply_async", queue)
    events_process_enqueue()
    assert len(queued_runs) == 1


def test_a_burst_of_requests_queues_one_task(
    client, db, monkeypatch, django_capture_on_commit_callbacks, queued_runs
):
    token = base64.b64encode(b"test-env-write-key:").decode()
    for number in range(5):
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                "/v1/track",
                data=json.dumps(
                    {
                        "anonymousId": "anon-burst",
                        "event": "A",
                        "messageId": f"b{number}",
                    }
                ),
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Basic {token}",
            )
        assert response.status_code == 200

    assert len(queued_runs) == 1
    assert events_process_task.apply().get() == 5


def test_processing_says_after_commit_which_profiles_changed(
    db, django_capture_on_commit_callbacks
):
    heard: list[tuple[list[int], set[str] | None]] = []

    def listen(sender, *, profile_ids, changed, **kwargs):
        heard.append((profile_ids, changed))

    profiles_changed.connect(listen)
    try:
        track("viewed", anonymous_id="anon-heard", event="Product Viewed")
        track(
            "signed-in",
            type="identify",
            user_id="usr_heard",
            anonymous_id="anon-other",
            traits={"plan": "pro"},
        )
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            events_process_pending()
        assert heard == []
        for callback in callbacks:
            callback()
    finally:
        profiles_changed.disconnect(listen)

    viewer = ProfileIdentity.objects.get(value="anon-heard").profile_id
    identified = profile_of("usr_heard").pk
    assert [ids for ids, _ in heard] == [[identified], [viewer]]
    assert heard[0][1] is None
    assert "event:Product Viewed" in heard[1][1]
    assert "metric:last_seen_at" in heard[1][1]


def test_stored_events_keep_their_raw_payload_after_processing(processed_batch):
    event = Event.objects.get(
        message_id="ajs-next-9b5d4a6e-0029-4ebc-8f5a-7c9d1e3a5c29"
    )
    assert json.loads(json.dumps(event.traits)) == {
        "email": "D.Volkov@Example.com",
        "firstName": "Dmitri",
        "lastName": "Volkov",
    }


def test_an_alias_joins_an_earlier_user_id(db):
    old = Profile.objects.create()
    ProfileIdentity.objects.create(
        profile=old, kind=IdentityKind.USER_ID, value="legacy-42"
    )
    new = Profile.objects.create()
    ProfileIdentity.objects.create(
        profile=new, kind=IdentityKind.USER_ID, value="usr_8001"
    )
    track("alias-users", type="alias", user_id="usr_8001", previous_id="legacy-42")

    events_process_pending()

    assert profile_of("legacy-42").pk == old.pk
    assert profile_of("usr_8001").pk == old.pk
    assert not Profile.objects.filter(pk=new.pk).exists()
    assert ProfileMerge.objects.get().reason == "alias"


@pytest.mark.parametrize("later", ["user_id", "anonymous_id"])
def test_an_alias_from_an_id_not_yet_seen_takes_it_under_either_name(db, later):
    track("alias-new", type="alias", user_id="usr_8002", previous_id="legacy-43")
    events_process_pending()

    track(
        "order-old",
        event="Order Completed",
        properties={"order_id": "o-1", "total": 20, "currency": "USD"},
        timestamp=utc("2025-03-14T11:00:00Z"),
        received_at=utc("2025-03-14T11:00:01Z"),
        **{later: "legacy-43"},
    )
    events_process_pending()

    person = profile_of("usr_8002")
    assert Profile.objects.count() == 1
    assert Event.objects.get(message_id="order-old").profile_id == person.pk
    person.refresh_from_db()
    assert person.order_count == 1


def test_an_email_owned_by_another_user_id_is_not_taken(db):
    owner = ProfileFactory(email="hannah.schmidt@example.com")
    ProfileIdentity.objects.create(
        profile=owner, kind=IdentityKind.USER_ID, value="usr_9001"
    )
    track(
        "claim-email",
        type="identify",
        user_id="usr_9002",
        traits={"email": "hannah.schmidt@example.com", "firstName": "Mallory"},
    )

    events_process_pending()

    claimant = profile_of("usr_9002")
    assert claimant.pk != owner.pk
    assert claimant.email is None
    owner.refresh_from_db()
    assert owner.first_name == "Pat"
    assert ProfileMerge.objects.count() == 0


def test_an_event_with_a_known_profile_and_no_ids_stays_with_it(db):
    profile = ProfileFactory()
    event = track(
        "webhook-order",
        profile=profile,
        event="Order Completed",
        properties={"order_id": "W1", "total": "30.00"},
    )

    events_process_pending()

    event.refresh_from_db()
    profile.refresh_from_db()
    assert (event.profile_id, event.processing_error) == (profile.pk, "")
    assert profile.lifetime_value == Decimal("30.00")
    assert Profile.objects.count() == 1


def test_an_event_naming_no_one_is_marked_failed(db):
    event = track("nobody", event="A")

    events_process_pending()

    event.refresh_from_db()
    assert event.processing_error == (
        "EventUnresolvable: The event has no userId, anonymousId or profile."
    )
    assert Profile.objects.count() == 0


def test_a_worker_skips_events_another_worker_holds(transactional_db):
    held = track("held", anonymous_id="anon-held", event="A")
    free = track("free", anonymous_id="anon-free", event="B")
    locked, release = threading.Event(), threading.Event()

    def other_worker() -> None:
        with transaction.atomic():
            list(Event.objects.select_for_update().filter(pk=held.pk))
            locked.set()
            release.wait(timeout=10)
        connection.close()

    worker = threading.Thread(target=other_worker)
    worker.start()
    assert locked.wait(timeout=10)
    try:
        processed = events_process_pending()
    finally:
        release.set()
        worker.join()

    assert processed == 1
    assert Event.objects.get(pk=free.pk).processed_at is not None
    assert Event.objects.get(pk=held.pk).processed_at is None


def test_a_task_whose_events_another_worker_holds_does_the_rest_and_stops(
    transactional_db,
):
    held = track("held-mine", anonymous_id="anon-held", event="A")
    free = track("free-other", anonymous_id="anon-free", event="B")
    locked, release = threading.Event(), threading.Event()

    def other_worker() -> None:
        with transaction.atomic():
            list(Event.objects.select_for_update().filter(pk=held.pk))
            locked.set()
            release.wait(timeout=10)
        connection.close()

    worker = threading.Thread(target=other_worker)
    worker.start()
    assert locked.wait(timeout=10)
    try:
        processed = events_process()
    finally:
        release.set()
        worker.join()

    assert processed == 1
    assert Event.objects.get(pk=free.pk).processed_at is not None
    assert Event.objects.get(pk=held.pk).processed_at is None


def test_an_address_stored_with_capitals_is_still_the_same_mailbox(db):
    stored = Profile.objects.create(email="Olivia.Brown@Example.com")
    track("browsing", anonymous_id="anon-olivia", event="Product Viewed")
    track(
        "capitals",
        type="identify",
        user_id="usr_9101",
        anonymous_id="anon-olivia",
        traits={"email": "olivia.brown@example.com", "firstName": "Olivia"},
        timestamp=utc("2025-03-14T10:05:00Z"),
    )

    events_process_pending()

    assert profile_of("usr_9101").pk == stored.pk
    assert event_profile_id("browsing") == stored.pk
    assert Event.objects.exclude(processing_error="").count() == 0
    assert Profile.objects.count() == 1


def test_events_read_quickly_before_a_merge_move_with_it(db):
    anonymous = Profile.objects.create()
    ProfileIdentity.objects.create(
        profile=anonymous, kind=IdentityKind.ANONYMOUS_ID, value="anon-before"
    )
    known = Profile.objects.create()
    ProfileIdentity.objects.create(
        profile=known, kind=IdentityKind.USER_ID, value="usr_7001"
    )
    track("before-1", anonymous_id="anon-before", event="Product Viewed")
    track("before-2", user_id="usr_7001", event="Product Viewed")
    track(
        "the-alias",
        type="alias",
        user_id="usr_7001",
        previous_id="anon-before",
        timestamp=utc("2025-03-14T10:01:00Z"),
    )
    track(
        "after",
        anonymous_id="anon-before",
        event="Order Completed",
        properties={"order_id": "R1", "total": "12.00"},
        timestamp=utc("2025-03-14T10:02:00Z"),
    )

    assert events_process_pending() == 4

    kept = profile_of("usr_7001")
    assert kept.pk == anonymous.pk
    assert not Profile.objects.filter(pk=known.pk).exists()
    assert set(Event.objects.values_list("profile_id", flat=True)) == {kept.pk}
    assert (kept.lifetime_value, kept.order_count) == (Decimal("12.00"), 1)
    assert kept.last_seen_at == utc("2025-03-14T10:02:00Z")


def test_a_newcomers_id_taken_by_another_worker_joins_that_profile(transactional_db):
    track("newcomer", anonymous_id="anon-race", event="Product Viewed")
    inserted, blocked = threading.Event(), threading.Event()
    other: dict[str, int] = {}

    def other_worker() -> None:
        with transaction.atomic():
            profile = Profile.objects.create()
            ProfileIdentity.objects.create(
                profile=profile, kind=IdentityKind.ANONYMOUS_ID, value="anon-race"
            )
            other["profile"] = profile.pk
            inserted.set()
            # Commit only once this test's worker waits on the identity's row.
            if _waits_on_a_lock(seconds=10):
                blocked.set()
        connection.close()

    worker = threading.Thread(target=other_worker)
    worker.start()
    assert inserted.wait(timeout=10)
    try:
        events_process_pending()
    finally:
        worker.join()

    assert blocked.is_set()
    assert event_profile_id("newcomer") == other["profile"]
    assert list(Profile.objects.values_list("pk", flat=True)) == [other["profile"]]
    assert Event.objects.get(message_id="newcomer").processing_error == ""


def _waits_on_a_lock(*, seconds: float) -> bool:
    with connection.cursor() as cursor:
        for _ in range(int(seconds * 20)):
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return True
            threading.Event().wait(0.05)
    return False


def test_a_chunk_is_redone_when_another_worker_links_its_new_id_first(
    transactional_db,
):
    anonymous = Profile.objects.create()
    ProfileIdentity.objects.create(
        profile=anonymous, kind=IdentityKind.ANONYMOUS_ID, value="anon-link"
    )
    track("linking", user_id="usr_7100", anonymous_id="anon-link", event="A")
    inserted, blocked = threading.Event(), threading.Event()
    other: dict[str, int] = {}

    def other_worker() -> None:
        with transaction.atomic():
            profile = Profile.objects.create()
            ProfileIdentity.objects.create(
                profile=profile, kind=IdentityKind.USER_ID, value="usr_7100"
            )
            other["profile"] = profile.pk
            inserted.set()
            if _waits_on_a_lock(seconds=10):
                blocked.set()
        connection.close()

    worker = threading.Thread(target=other_worker)
    worker.start()
    assert inserted.wait(timeout=10)
    try:
        assert events_process_pending() == 1
    finally:
        worker.join()

    assert blocked.is_set()
    assert event_profile_id("linking") == anonymous.pk
    assert profile_of("usr_7100").pk == anonymous.pk
    assert list(Profile.objects.values_list("pk", flat=True)) == [anonymous.pk]
    merge = ProfileMerge.objects.get()
    assert (merge.kept_id, merge.merged_profile_id) == (anonymous.pk, other["profile"])


def test_a_race_found_before_a_careful_event_redoes_the_chunk(transactional_db):
    anonymous = Profile.objects.create()
    ProfileIdentity.objects.create(
        profile=anonymous, kind=IdentityKind.ANONYMOUS_ID, value="anon-mid"
    )
    track("quick-link", user_id="usr_7200", anonymous_id="anon-mid", event="A")
    track(
        "careful-alias",
        type="alias",
        user_id="usr_7201",
        previous_id="anon-other",
        timestamp=utc("2025-03-14T10:01:00Z"),
    )
    inserted, blocked = threading.Event(), threading.Event()

    def other_worker() -> None:
        with transaction.atomic():
            profile = Profile.objects.create()
            ProfileIdentity.objects.create(
                profile=profile, kind=IdentityKind.USER_ID, value="usr_7200"
            )
            inserted.set()
            if _waits_on_a_lock(seconds=10):
                blocked.set()
        connection.close()

    worker = threading.Thread(target=other_worker)
    worker.start()
    assert inserted.wait(timeout=10)
    try:
        assert events_process_pending() == 2
    finally:
        worker.join()

    assert blocked.is_set()
    assert Event.objects.exclude(processing_error="").count() == 0
    assert event_profile_id("quick-link") == anonymous.pk
    assert profile_of("usr_7200").pk == anonymous.pk
    assert profile_of("usr_7201").identities.filter(value="anon-other").exists()


def test_workers_take_turns_at_event_runs(transactional_db, monkeypatch, queued_runs):
    # Two chunks side by side lock mostly the same profiles and can deadlock. A run
    # whose turn it is not leaves the request standing for the run going, and ends:
    # runs waiting in line filled the whole pool, and runs queued to look again
    # multiplied under live traffic.
    event = track("turn", anonymous_id="anon-turn", event="A")
    holding, release = threading.Event(), threading.Event()

    def other_worker() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s)", [processing.RUN_LOCK_KEY]
            )
            holding.set()
            release.wait(timeout=10)
        connection.close()

    other = threading.Thread(target=other_worker)
    other.start()
    assert holding.wait(timeout=10)
    try:
        assert events_process() == 0
        assert events_process_pending() == 0
    finally:
        release.set()
        other.join()

    assert queued_runs == []
    assert Event.objects.get(pk=event.pk).processed_at is None
    # The request stands for the run going: requests queue no runs of their own.
    assert ProcessingRequest.objects.get().requested_at is not None
    events_process_enqueue()
    assert queued_runs == []
    assert events_process() == 1
    assert Event.objects.get(pk=event.pk).processed_at is not None


def test_a_chunk_stops_taking_events_after_its_time(db, monkeypatch):
    # Merges are slow: a chunk of them would hold its people, and keep every new
    # event waiting, for minutes. The rest wait for the next chunk, in order.
    monkeypatch.setattr(processing, "CHUNK_APPLY_SECONDS", 0)
    monkeypatch.setattr(processing, "CHUNK_SIZE_MIN", 1)
    claims: list[int] = []
    claim = processing._chunk_claim

    def counted(pending, *, size):
        events = claim(pending, size=size)
        claims.append(len(events))
        return events

    monkeypatch.setattr(processing, "_chunk_claim", counted)
    for number in range(4):
        track(
            f"slow-{number}",
            anonymous_id="anon-slow",
            event="A",
            timestamp=utc(f"2025-03-14T10:0{number}:00Z"),
        )

    assert events_process() == 4

    # Each chunk applied one event, and the next claimed twice that; the last,
    # short of what it asked for, ends the run.
    assert claims == [4, 2, 2, 1]
    assert Event.objects.filter(processed_at__isnull=True).count() == 0
    assert Event.objects.exclude(processing_error="").count() == 0


def test_a_claimed_event_reads_what_it_was_not_given_when_asked(db):
    # A track is claimed without its traits or messageId; a notice about it still
    # needs them, and they are read then.
    event = track("lazy", anonymous_id="anon-lazy", event="A", traits={"k": "v"})

    (claimed,) = processing._chunk_claim(Event.objects.all(), size=10)

    assert (claimed.pk, claimed.type, claimed.event) == (event.pk, "track", "A")
    assert (claimed.message_id, claimed.traits) == ("lazy", {"k": "v"})
    assert claimed.received_at == event.received_at
    with pytest.raises(AttributeError):
        claimed.no_such_field  # noqa: B018


@pytest.mark.parametrize(("plain", "other"), [("qa5s", "qa5ſ"), ("qa7i", "qa7ı")])
def test_addresses_that_differ_only_in_upper_case_are_two_mailboxes(db, plain, other):
    # 'ſ' and 'ı' are 'S' and 'I' in upper case, but other letters in lower case, as
    # the unique index and the import read them: two mailboxes, two people.
    for number, local in enumerate((plain, other)):
        track(
            f"who-{number}",
            type="identify",
            anonymous_id=f"anon-{number}",
            traits={"email": f"{local}@example.com"},
            timestamp=utc(f"2025-03-14T10:0{number}:00Z"),
        )
    events_process_pending()
    # One at a time as well: the second one then goes the careful way.
    track(
        "who-again",
        type="identify",
        anonymous_id="anon-again",
        traits={"email": f"{other}@example.com"},
        timestamp=utc("2025-03-14T10:05:00Z"),
    )
    events_process_pending()

    assert sorted(Profile.objects.values_list("email", flat=True)) == sorted(
        [f"{plain}@example.com", f"{other}@example.com"]
    )
    assert event_profile_id("who-again") == event_profile_id("who-1")


def test_a_run_asked_for_again_while_it_ran_goes_on(db, monkeypatch, queued_runs):
    # Otherwise the events that asked would wait for a run queued behind this one.
    track("first", anonymous_id="anon-again", event="A")
    chunks = processing._chunks_process
    calls: list[int] = []

    def asked_meanwhile(pending, **kwargs):
        done = chunks(pending, **kwargs)
        calls.append(done[0])
        if len(calls) == 1:
            track("meanwhile", anonymous_id="anon-again", event="B")
            events_process_enqueue()
        return done

    monkeypatch.setattr(processing, "_chunks_process", asked_meanwhile)

    assert events_process() == 2
    assert calls == [1, 1]
    assert queued_runs == [{}]


def test_a_run_the_other_is_letting_go_of_takes_the_turn_itself(db, monkeypatch):
    # The run going may let go between the first look and the request being set:
    # the second look then finds the turn free, and this run does the work.
    event = track("let-go", anonymous_id="anon-let-go", event="A")
    looks = iter([False, True, True])
    monkeypatch.setattr(processing, "_turn_take", lambda: next(looks))

    assert events_process() == 1
    assert Event.objects.get(pk=event.pk).processed_at is not None


def test_an_alias_that_merges_in_mid_chunk_leaves_no_event_on_the_merged_profile(db):
    # Grace's older profile has her userId; a newer one has another userId and
    # her browser's anonymousId. In one chunk an alias joins the two (the newer is
    # merged away), then that browser clicks.
    grace = Profile.objects.create()
    ProfileIdentity.objects.create(
        profile=grace, kind=IdentityKind.USER_ID, value="usr_grace"
    )
    newer = Profile.objects.create()
    ProfileIdentity.objects.create(
        profile=newer, kind=IdentityKind.USER_ID, value="usr_grace_old"
    )
    ProfileIdentity.objects.create(
        profile=newer, kind=IdentityKind.ANONYMOUS_ID, value="anon-grace"
    )
    track(
        "alias-1",
        type="alias",
        user_id="usr_grace",
        previous_id="usr_grace_old",
        timestamp=utc("2025-03-14T10:00:00Z"),
    )
    click = track(
        "click-1",
        type="track",
        event="Email Link Clicked",
        anonymous_id="anon-grace",
        timestamp=utc("2025-03-14T10:01:00Z"),
    )

    assert events_process_pending() == 2

    click.refresh_from_db()
    assert not Profile.objects.filter(pk=newer.pk).exists()
    assert click.profile_id == grace.pk


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("track", {"event": "Signed In"}),
        ("page", {}),
        ("identify", {"traits": {}}),
    ],
)
def test_a_merge_by_any_event_brings_the_kept_profile_into_the_segments(
    db, kind, fields, django_capture_on_commit_callbacks, tasks_inline
):
    from segments.models import SegmentMembership
    from segments.services import segment_save

    ana = ProfileFactory(email="ana@example.com")
    ProfileIdentity.objects.create(
        profile=ana, kind=IdentityKind.USER_ID, value="u-ana"
    )
    anonymous = Profile.objects.create()
    ProfileIdentity.objects.create(
        profile=anonymous, kind=IdentityKind.ANONYMOUS_ID, value="anon-ana"
    )
    ProfileTag.objects.create(profile=anonymous, name="VIP")
    with django_capture_on_commit_callbacks(execute=True):
        vip = segment_save(
            name="VIP", rule={"attribute": "tags", "op": "contains", "value": "VIP"}
        )
    track("merging", type=kind, user_id="u-ana", anonymous_id="anon-ana", **fields)

    with django_capture_on_commit_callbacks(execute=True):
        events_process_pending()

    assert not Profile.objects.filter(pk=anonymous.pk).exists()
    stays = SegmentMembership.objects.filter(profile=ana, left_at=None)
    assert list(stays.values_list("segment_id", flat=True)) == [vip.pk]


def _known_people_identify(count: int) -> None:
    for number in range(count):
        person = ProfileFactory(email=f"known{number}@example.com", timezone="UTC")
        ProfileIdentity.objects.create(
            profile=person, kind=IdentityKind.USER_ID, value=f"usr_{number}"
        )
        track(
            f"identify-{count}-{number}",
            type=EventType.IDENTIFY,
            event="",
            user_id=f"usr_{number}",
            traits={"firstName": f"Name {number}", "plan": "pro"},
            context={"timezone": "Europe/Lisbon"},
        )


@pytest.mark.parametrize("people", [3, 30])
def test_known_peoples_identifies_cost_the_same_queries_however_many(db, people):
    # The chunk reads only some of a profile's fields: one it did not read, used
    # for each person, would cost a query each.
    _known_people_identify(people)

    with CaptureQueriesContext(connection) as queries:
        assert events_process_pending() == people

    assert len(queries.captured_queries) < 40
    assert Profile.objects.get(email="known2@example.com").traits["plan"] == "pro"
    assert Profile.objects.get(email="known2@example.com").first_name == "Name 2"


def test_a_chunk_whose_person_is_merged_away_meanwhile_attaches_to_the_kept_one(
    transactional_db, caplog
):
    # The marketer merges a visitor into a known customer by hand while a chunk
    # with the visitor's new events has read who owns their ids but not yet locked
    # the profile: the chunk must not attach them to the profile that is gone.
    visitor = Profile.objects.create()
    ProfileIdentity.objects.create(
        profile=visitor, kind=IdentityKind.ANONYMOUS_ID, value="anon-visitor"
    )
    customer = Profile.objects.create(email="ana@example.com")
    track("late-view", anonymous_id="anon-visitor", event="Product Viewed")
    merged, commit = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def marketer_merges() -> None:
        with transaction.atomic():
            processing.profile_merge(
                first=customer, second=visitor, reason="by hand", explicit=True
            )
            merged.set()
            commit.wait(timeout=10)
        connection.close()

    def worker_processes() -> None:
        results["processed"] = events_process_pending()
        connection.close()

    marketer = threading.Thread(target=marketer_merges)
    marketer.start()
    assert merged.wait(timeout=10)
    worker = threading.Thread(target=worker_processes)
    worker.start()
    # The worker reads the visitor's id as the visitor's, then waits on the lock.
    worker.join(timeout=1)
    commit.set()
    marketer.join()
    worker.join(timeout=30)

    event = Event.objects.get(message_id="late-view")
    assert results["processed"] == 1
    assert (event.profile_id, event.processing_error) == (customer.pk, "")
    assert not Profile.objects.filter(pk=visitor.pk).exists()
    assert "processed one by one" not in caplog.text


def _profile_deleted_behind_its_events(person: Profile) -> tuple[Event, Event]:
    # What a race the locks did not cover would leave: events on a profile that is
    # gone, which the table (no foreign key) does not refuse.
    gone = Profile.objects.create()
    kept = track("kept", user_id="usr_ana", event="A", profile=person)
    lost = track("lost", user_id="usr_ana", event="B", profile=gone)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM profiles_profile WHERE id = %s", [gone.pk])
    return kept, lost


def test_events_left_on_a_deleted_profile_are_deleted_by_the_repair(db):
    person = Profile.objects.create(email="ana@example.com")
    ProfileIdentity.objects.create(
        profile=person, kind=IdentityKind.USER_ID, value="usr_ana"
    )
    kept, lost = _profile_deleted_behind_its_events(person)

    assert processing.events_orphans_repair() == 1

    # Their person was deleted on purpose: processed again, they would make a
    # profile for someone who asked to be forgotten.
    assert list(Event.objects.values_list("message_id", flat=True)) == ["kept"]
    assert processing.events_orphans_repair() == 0


def test_an_event_whose_profile_was_deleted_fails_alone_and_holds_up_no_one(db):
    person = Profile.objects.create(email="ana@example.com")
    ProfileIdentity.objects.create(
        profile=person, kind=IdentityKind.USER_ID, value="usr_ana"
    )
    kept, lost = _profile_deleted_behind_its_events(person)
    other = track("other", user_id="usr_bob", event="Signed Up")

    assert events_process_pending() == 3

    lost.refresh_from_db()
    assert lost.processing_error.startswith("ProfileDeleted: Its profile")
    assert Event.objects.get(pk=kept.pk).profile_id == person.pk
    assert Event.objects.get(pk=other.pk).processing_error == ""
    assert Profile.objects.count() == 2  # Ana and Bob: none made for the lost event


@pytest.mark.parametrize("how", ["instance", "queryset"])
def test_a_profile_deleted_while_a_chunk_attaches_to_it_takes_those_events(
    transactional_db, monkeypatch, how
):
    ana = Profile.objects.create(email="ana@example.com")
    ProfileIdentity.objects.create(profile=ana, kind=IdentityKind.USER_ID, value="u1")
    track("order", user_id="u1", event="Order Completed")
    attached, go = threading.Event(), threading.Event()
    finish = processing_chunk.EventChunk.finish

    def finish_then_wait(self, **kwargs):
        done = finish(self, **kwargs)
        attached.set()
        go.wait(timeout=10)
        return done

    monkeypatch.setattr(processing_chunk.EventChunk, "finish", finish_then_wait)

    def admin_deletes() -> None:
        if how == "instance":
            Profile.objects.get(pk=ana.pk).delete()
        else:  # the admin's "delete selected"
            Profile.objects.filter(pk=ana.pk).delete()
        connection.close()

    def worker_processes() -> None:
        events_process_pending()
        connection.close()

    worker = threading.Thread(target=worker_processes)
    worker.start()
    assert attached.wait(timeout=10)
    admin = threading.Thread(target=admin_deletes)
    admin.start()
    # The delete waits for the chunk's lock on Ana, then takes her new event along.
    admin.join(timeout=1)
    assert admin.is_alive()
    go.set()
    worker.join(timeout=30)
    admin.join(timeout=30)

    assert Profile.objects.count() == 0
    assert Event.objects.count() == 0
    assert processing.events_orphans_repair() == 0


def test_the_event_table_keeps_no_foreign_key_to_profiles(db):
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(
            cursor, Event._meta.db_table
        )

    assert [name for name, c in constraints.items() if c["foreign_key"]] == []


def test_a_careful_event_whose_profile_is_deleted_meanwhile_redoes_the_chunk(
    db, monkeypatch
):
    # An alias goes the careful way; the profile it resolves to is deleted before
    # the chunk can hold it (here, the first time only, by hand).
    ana = Profile.objects.create(email="ana@example.com")
    ProfileIdentity.objects.create(profile=ana, kind=IdentityKind.USER_ID, value="u1")
    track("alias", type="alias", user_id="u1", previous_id="anon-1", event="")
    resolve = processing_chunk.event_apply
    deleted: list[int] = []

    def resolve_then_lose(event, **kwargs):
        profile = resolve(event, **kwargs)
        if not deleted:
            deleted.append(profile.pk)
            with connection.cursor() as cursor:
                cursor.execute(
                    "DELETE FROM profiles_profileidentity WHERE profile_id = %s",
                    [profile.pk],
                )
                cursor.execute(
                    "DELETE FROM profiles_profile WHERE id = %s", [profile.pk]
                )
        return profile

    monkeypatch.setattr(processing_chunk, "event_apply", resolve_then_lose)

    assert events_process_pending() == 1

    event = Event.objects.get(message_id="alias")
    # Redone whole: the delete was rolled back with the first attempt.
    assert deleted == [ana.pk]
    assert Profile.objects.filter(pk=ana.pk).exists()
    assert (event.profile_id, event.processing_error) == (ana.pk, "")


def test_an_identifys_traits_are_kept_as_sent_past_64_bit_integers(db):
    # Read and written with orjson, which refuses integers past 64 bits: json
    # takes those over.
    track(
        "big-1",
        type="identify",
        user_id="usr_big",
        traits={"loyalty_points": 2**70, "nickname": "Łukasz ☃", "tier": 3},
    )
    track("big-2", type="identify", user_id="usr_low", traits={"tier": -(2**63) - 1})

    events_process_pending()

    assert profile_of("usr_big").traits == {
        "loyalty_points": 2**70,
        "nickname": "Łukasz ☃",
        "tier": 3,
    }
    assert profile_of("usr_low").traits == {"tier": -(2**63) - 1}
    assert not Event.objects.exclude(processing_error="").exists()


def test_a_name_too_long_for_its_field_is_refused_with_its_reason_not_cut(db):
    profile = ProfileFactory(email="ann.lee@example.com", first_name="Ann")
    track(
        "long-1",
        type="identify",
        user_id="usr_long",
        traits={
            "email": "ann.lee@example.com",
            "firstName": "A" * 151,
            "lastName": "Lee",
            "address": {"city": "C" * 101},
        },
    )

    events_process_pending()

    profile.refresh_from_db()
    assert (profile.first_name, profile.last_name, profile.city) == ("Ann", "Lee", "")
    refusals = RejectedEvent.objects.filter(message_id="long-1").order_by("message")
    assert [(r.code, r.payload["trait"]) for r in refusals] == [
        ("trait_invalid:too_long", "address.city"),
        ("trait_invalid:too_long", "firstName"),
    ]
    assert refusals[1].message == (
        "Trait firstName: 151 characters, more than the 150 of the profile's first "
        "name, which keeps the first name it had"
    )


def test_a_full_name_with_a_part_too_long_leaves_both_names_as_they_were(db):
    profile = ProfileFactory(
        email="ann.lee@example.com", first_name="Ann", last_name="Lee"
    )
    track(
        "long-2",
        type="identify",
        user_id="usr_long2",
        traits={"email": "ann.lee@example.com", "name": "Zed " + "Q" * 151},
    )

    events_process_pending()

    profile.refresh_from_db()
    assert (profile.first_name, profile.last_name) == ("Ann", "Lee")
    assert RejectedEvent.objects.get(message_id="long-2").payload["trait"] == "name"


@pytest.mark.parametrize(
    ("name", "first", "last"),
    [
        ("Mary Ann Smith", "Mary Ann", "Smith"),
        ("Lee, Ann", "Ann", "Lee"),
        ("Cher", "Cher", ""),
    ],
)
def test_an_identifys_full_name_is_split_as_an_import_splits_it(db, name, first, last):
    track("name-1", type="identify", user_id="usr_name", traits={"name": name})

    events_process_pending()

    profile = profile_of("usr_name")
    assert (profile.first_name, profile.last_name) == (first, last)


def test_an_identifys_country_written_by_name_is_its_code(db):
    track(
        "country-1",
        type="identify",
        user_id="usr_fr",
        traits={"address": {"city": "Lyon", "country": "France"}},
    )

    events_process_pending()

    assert profile_of("usr_fr").country_code == "FR"


def test_a_name_that_is_not_text_or_holds_a_control_character_is_refused(db):
    # given a known person, then an identify whose first name is an object, whose
    # last name holds an escape character, and whose city wraps onto two lines
    profile = ProfileFactory(
        email="ann.lee@example.com", first_name="Ann", last_name="Lee"
    )
    track(
        "odd-1",
        type="identify",
        user_id="usr_odd",
        traits={
            "email": "ann.lee@example.com",
            "firstName": {"given": "Ann"},
            "lastName": "Lee\x1b[31m",
            "address": {"city": "Porto\r\nAlegre"},
        },
    )

    # when it is processed
    events_process_pending()

    # then the names are kept as they were, each refusal says why, and the city
    # is on one line
    profile.refresh_from_db()
    assert (profile.first_name, profile.last_name) == ("Ann", "Lee")
    assert profile.city == "Porto Alegre"
    refusals = RejectedEvent.objects.filter(message_id="odd-1").order_by("code")
    assert [(r.code, r.message) for r in refusals] == [
        (
            "trait_invalid:control_character",
            "Trait lastName: it holds the control character U+001B, which no name, "
            "place or phone number holds, so the profile keeps the last name it had",
        ),
        (
            "trait_invalid:not_text",
            "Trait firstName: is an object, not text, so the profile keeps the first "
            "name it had",
        ),
    ]


def test_a_full_name_that_is_not_text_leaves_the_names_sent_apart(db):
    track(
        "odd-2",
        type="identify",
        user_id="usr_odd2",
        traits={"firstName": "Ann", "lastName": "Lee", "name": ["Ann", "Lee"]},
    )

    events_process_pending()

    profile = profile_of("usr_odd2")
    assert (profile.first_name, profile.last_name) == ("Ann", "Lee")
    assert RejectedEvent.objects.get(message_id="odd-2").code == (
        "trait_invalid:not_text"
    )


def listed(email_key: str) -> None:
    Suppression.objects.create(
        email_hash=suppression_hash(email_key),
        reason=SuppressionReason.COMPLAINT,
        source="test",
    )


def test_a_profile_that_takes_a_listed_address_is_marked_suppressed(db):
    # given an address on the suppression list, and a visitor who then signs in
    # with it (the quick path: the visitor's profile takes the address)
    listed("gone@example.com")
    track("sup-1", type="page", anonymous_id="anon-sup")
    track(
        "sup-2",
        type="identify",
        anonymous_id="anon-sup",
        user_id="usr_sup",
        traits={"email": "Gone@Example.com"},
        timestamp=utc("2025-03-14T10:00:05Z"),
    )

    events_process_pending()

    # then segment rules and the preview, which read the mark, agree with sending
    profile = profile_of("usr_sup")
    assert profile.email == "gone@example.com"
    assert profile.suppressed_at is not None
    assert list(profiles_matching({"suppressed": True})) == [profile]


@pytest.mark.parametrize("how", ["marked by hand", "address listed"])
def test_profiles_merged_by_an_identify_stay_suppressed(db, how):
    # given two profiles of one person: a visitor, and a newer signed-in profile
    # that was suppressed by hand, or whose address to come is on the list
    track("mrg-1", type="page", anonymous_id="anon-mrg")
    events_process_pending()
    track("mrg-2", user_id="usr_mrg", timestamp=utc("2025-03-14T10:00:02Z"))
    events_process_pending()
    signed_in = profile_of("usr_mrg")
    if how == "marked by hand":
        Profile.objects.filter(pk=signed_in.pk).update(suppressed_at=PROCESSED)
    else:
        listed("both@example.com")

    # when an identify links them (the careful path: the newer is merged into the
    # visitor) and gives an address
    track(
        "mrg-3",
        type="identify",
        user_id="usr_mrg",
        anonymous_id="anon-mrg",
        traits={"email": "both@example.com"},
        timestamp=utc("2025-03-14T10:00:03Z"),
    )
    events_process_pending()

    # then the one profile left is suppressed
    (profile,) = Profile.objects.all()
    assert profile.pk != signed_in.pk
    assert profile.email == "both@example.com"
    assert profile.suppressed_at is not None


def test_sending_finds_a_listed_address_stored_with_capitals(db):
    listed("ann@example.com")
    profile = ProfileFactory(email="Ann@Example.com", suppressed_at=None)

    assert message_skip_reason(profile) == "suppressed"


def test_a_name_that_turns_text_around_is_refused_and_a_full_name_unused(db):
    # given an identify whose last name reverses the direction of what follows,
    # and whose full name is a list beside the names sent apart
    track(
        "bidi-1",
        type="identify",
        user_id="usr_bidi",
        traits={
            "firstName": "Ann",
            "lastName": "Lee\u202egnp.exe",
            "name": ["Ann", "Lee"],
        },
    )

    events_process_pending()

    profile = profile_of("usr_bidi")
    assert (profile.first_name, profile.last_name) == ("Ann", "")
    refusals = RejectedEvent.objects.filter(message_id="bidi-1").order_by("code")
    assert [r.message for r in refusals] == [
        "Trait lastName: it holds the control character U+202E, which no name, "
        "place or phone number holds, so the profile keeps the last name it had",
        "Trait name: is a list, not text, so it is not used",
    ]


def test_the_migration_marks_profiles_whose_address_is_listed(db):
    migration = importlib.import_module(
        "profiles.migrations.0021_suppressed_profiles_marked"
    )
    listed("old@example.com")
    old = ProfileFactory(email="Old@Example.com", suppressed_at=None)
    other = ProfileFactory(email="other@example.com", suppressed_at=None)
    nobody = ProfileFactory(email=None, suppressed_at=None)

    migration.suppressed_profiles_mark(django_apps, None)

    marked = {p.pk for p in Profile.objects.all() if p.suppressed_at is not None}
    assert marked == {old.pk}
    assert {other.pk, nobody.pk}.isdisjoint(marked)


def test_a_fact_merged_in_about_another_address_does_not_outrank_a_late_unsubscribe(
    db, client
):
    # given Yara subscribed by ticking the checkout box two days ago, and her old
    # address subscribed first-hand yesterday on a profile merged into hers
    from profiles.processing_identities import profile_merge

    now = datetime.now(UTC).replace(microsecond=0)
    yara = ProfileFactory(email="yara.new@example.com")
    consent_record(
        profile=yara,
        status=SubscriptionStatus.SUBSCRIBED,
        source="shopify",
        occurred_at=now - timedelta(days=2),
        evidence={"buyer_accepts_marketing": True},
    )
    old = ProfileFactory(email="yara.old@example.com")
    consent_record(
        profile=old,
        status=SubscriptionStatus.SUBSCRIBED,
        source="shopify",
        occurred_at=now - timedelta(days=1),
    )
    Profile.objects.filter(pk=old.pk).update(email=None)
    old.refresh_from_db()
    yara = profile_merge(first=yara, second=old, reason="by hand", explicit=True)

    # when an unsubscribe of her address dated three days ago arrives
    consent_record(
        profile=yara,
        status=SubscriptionStatus.UNSUBSCRIBED,
        source="shopify",
        occurred_at=now - timedelta(days=3),
    )

    # then it applies, as it would have without the merge, and her page says
    # which address the merged-in fact was about
    yara.refresh_from_db()
    assert yara.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    merged_in = ConsentRecord.objects.get(address="yara.old@example.com")
    assert merged_in.profile_id == yara.pk
    client.force_login(UserFactory())
    page = client.get(f"/profiles/{yara.pk}/").content.decode()
    assert "another address, merged in" in page


def test_a_merge_moves_segment_stays_so_no_one_enters_a_segment_twice(db):
    from profiles.processing_identities import profile_merge
    from segments.models import SegmentMembership
    from tests.factories import SegmentFactory

    hats, boots, old = SegmentFactory(), SegmentFactory(), SegmentFactory()
    kept, merged = ProfileFactory(email="kept@example.com"), Profile.objects.create()
    since = utc("2025-03-01T09:00:00Z")
    SegmentMembership.objects.create(segment=boots, profile=kept, entered_at=since)
    for segment in (hats, boots):
        SegmentMembership.objects.create(
            segment=segment, profile=merged, entered_at=since
        )
    SegmentMembership.objects.create(
        segment=old,
        profile=merged,
        entered_at=since,
        left_at=utc("2025-03-02T09:00:00Z"),
    )

    profile_merge(first=kept, second=merged, reason="by hand", explicit=True)

    stays = set(
        SegmentMembership.objects.values_list("segment_id", "profile_id", "left_at")
    )
    assert stays == {
        (hats.pk, kept.pk, None),
        (boots.pk, kept.pk, None),
        (old.pk, kept.pk, utc("2025-03-02T09:00:00Z")),
    }
    assert SegmentMembership.objects.get(segment=hats).entered_at == since


def test_a_persons_own_consent_from_before_an_address_change_still_counts(db, client):
    # given Cleo, subscribed first-hand in June, who has changed address since
    cleo = ProfileFactory(email="cleo.old@example.com")
    consent_record(
        profile=cleo,
        status=SubscriptionStatus.SUBSCRIBED,
        source="signup_form",
        occurred_at=utc("2026-06-01T09:00:00Z"),
    )
    Profile.objects.filter(pk=cleo.pk).update(email="cleo.new@example.com")
    cleo.refresh_from_db()

    # when an unsubscribe dated May arrives late
    consent_record(
        profile=cleo,
        status=SubscriptionStatus.UNSUBSCRIBED,
        source="esp:sendgrid",
        occurred_at=utc("2026-05-01T09:00:00Z"),
    )

    # then her own later subscription stands, and her page says whose it was
    cleo.refresh_from_db()
    assert cleo.subscription_status == SubscriptionStatus.SUBSCRIBED
    client.force_login(UserFactory())
    page = client.get(f"/profiles/{cleo.pk}/").content.decode()
    assert "an earlier address of this profile" in page
    assert "another address, merged in" not in page
