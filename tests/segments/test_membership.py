"""Segment membership: stays opened and closed by whole refreshes, rebuilds and
one-profile refreshes, on PostgreSQL and SQLite."""

from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from django.db import connections
from django.test.utils import CaptureQueriesContext

from config.celery import app
from profiles.models import Event, Profile
from segments import membership
from segments.membership import (
    MembershipChange,
    SegmentBusy,
    profile_memberships_refresh,
    profiles_memberships_refresh,
    segment_rebuild_batch,
    segment_rebuild_cancel,
    segment_rebuild_start,
    segment_refresh,
    segment_refreshes_reap,
)
from segments.models import Segment, SegmentMembership
from segments.selectors import segment_recent_changes, segment_size_history
from segments.services import segment_save
from segments.signals import segment_membership_changed
from segments.tasks import segments_time_refresh_task

pytestmark = pytest.mark.django_db(databases=["default", "sqlite"])

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=2)
FRANCE = {"attribute": "country_code", "op": "eq", "value": "FR"}


@pytest.fixture
def eager_celery():
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def person(email: str, *, using: str = "default", **fields) -> Profile:
    return Profile.objects.using(using).create(email=email, **fields)


def segment(slug: str, rule: dict, *, using: str = "default", **fields) -> Segment:
    return Segment.objects.using(using).create(
        name=slug, slug=slug, rule=rule, **fields
    )


def track(profile: Profile, name: str, *, at: datetime, using: str = "default") -> None:
    Event.objects.using(using).create(
        message_id=f"{profile.pk}-{name}-{at.isoformat()}",
        type="track",
        event=name,
        profile=profile,
        properties={},
        timestamp=at,
        received_at=at,
    )


def stays(segment_id: int, *, using: str = "default") -> list[tuple]:
    return list(
        SegmentMembership.objects.using(using)
        .filter(segment_id=segment_id)
        .order_by("profile__email", "entered_at")
        .values_list("profile__email", "entered_at", "left_at")
    )


# Whole refresh -------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["default", "sqlite"])
def test_a_refresh_opens_stays_for_newcomers_and_closes_those_of_leavers(alias):
    ana = person("ana@example.com", country_code="FR", using=alias)
    person("ben@example.com", country_code="DE", using=alias)
    person("chloe@example.com", country_code="FR", using=alias)
    french = segment("french", FRANCE, using=alias)

    first = segment_refresh(segment_id=french.pk, now=NOW, using=alias)
    Profile.objects.using(alias).filter(pk=ana.pk).update(country_code="DE")
    Profile.objects.using(alias).filter(email="ben@example.com").update(
        country_code="FR"
    )
    second = segment_refresh(segment_id=french.pk, now=LATER, using=alias)

    assert (first.entered, first.left, first.size) == (2, 0, 2)
    assert (second.entered, second.left, second.size) == (1, 1, 2)
    assert stays(french.pk, using=alias) == [
        ("ana@example.com", NOW, LATER),
        ("ben@example.com", LATER, None),
        ("chloe@example.com", NOW, None),
    ]
    french.refresh_from_db(using=alias)
    assert french.member_count == 2
    assert french.refreshed_at == LATER
    assert french.refresh_started_at is None
    assert french.refresh_error == ""


@pytest.mark.parametrize("alias", ["default", "sqlite"])
def test_a_profile_that_comes_back_gets_a_second_stay(alias):
    ana = person("ana@example.com", country_code="FR", using=alias)
    french = segment("french", FRANCE, using=alias)
    profiles = Profile.objects.using(alias).filter(pk=ana.pk)

    segment_refresh(segment_id=french.pk, now=NOW, using=alias)
    profiles.update(country_code="DE")
    segment_refresh(segment_id=french.pk, now=LATER, using=alias)
    profiles.update(country_code="FR")
    back = segment_refresh(
        segment_id=french.pk, now=LATER + timedelta(days=1), using=alias
    )

    assert (back.entered, back.left, back.size) == (1, 0, 1)
    assert stays(french.pk, using=alias) == [
        ("ana@example.com", NOW, LATER),
        ("ana@example.com", LATER + timedelta(days=1), None),
    ]


@pytest.mark.parametrize("alias", ["default", "sqlite"])
def test_a_refresh_with_nothing_new_writes_nothing(alias):
    person("ana@example.com", country_code="FR", using=alias)
    french = segment("french", FRANCE, using=alias)
    segment_refresh(segment_id=french.pk, now=NOW, using=alias)

    again = segment_refresh(segment_id=french.pk, now=LATER, using=alias)

    assert (again.entered, again.left, again.size) == (0, 0, 1)
    assert stays(french.pk, using=alias) == [("ana@example.com", NOW, None)]


@pytest.mark.parametrize("alias", ["default", "sqlite"])
def test_a_rule_that_matches_no_one_closes_every_stay(alias):
    person("ana@example.com", country_code="FR", using=alias)
    french = segment("french", FRANCE, using=alias)
    segment_refresh(segment_id=french.pk, now=NOW, using=alias)
    Segment.objects.using(alias).filter(pk=french.pk).update(rule={"any": []})

    emptied = segment_refresh(segment_id=french.pk, now=LATER, using=alias)

    assert (emptied.entered, emptied.left, emptied.size) == (0, 1, 0)
    assert stays(french.pk, using=alias) == [("ana@example.com", NOW, LATER)]


def test_a_refresh_is_refused_while_another_worker_holds_the_claim():
    person("ana@example.com", country_code="FR")
    claimed_at = datetime.now(UTC) - timedelta(minutes=1)
    french = segment("french", FRANCE, refresh_started_at=claimed_at)

    with pytest.raises(SegmentBusy):
        segment_refresh(segment_id=french.pk, now=NOW)

    french.refresh_from_db()
    assert french.refresh_started_at == claimed_at
    assert french.member_count == 0
    assert SegmentMembership.objects.count() == 0


def test_a_claim_older_than_ten_minutes_is_taken_over_by_the_next_refresh():
    person("ana@example.com", country_code="FR")
    abandoned = datetime.now(UTC) - timedelta(minutes=11)
    french = segment("french", FRANCE, refresh_started_at=abandoned)

    result = segment_refresh(segment_id=french.pk, now=NOW)

    assert result.size == 1
    french.refresh_from_db()
    assert french.refresh_started_at is None


def test_a_rule_that_fails_records_the_error_and_releases_the_claim():
    french = segment("french", {"segment": "deleted-since"})

    with pytest.raises(Exception, match="there is no segment 'deleted-since'"):
        segment_refresh(segment_id=french.pk, now=NOW)

    french.refresh_from_db()
    assert french.refresh_error == "rule: there is no segment 'deleted-since'"
    assert french.refresh_started_at is None
    assert french.refreshed_at is None


def test_the_reaper_releases_only_claims_held_over_ten_minutes_and_names_them():
    stuck = segment("stuck", FRANCE, refresh_started_at=NOW - timedelta(minutes=11))
    busy = segment("busy", FRANCE, refresh_started_at=NOW - timedelta(minutes=9))

    reaped = segment_refreshes_reap(now=NOW)

    stuck.refresh_from_db()
    busy.refresh_from_db()
    assert reaped == 1
    assert stuck.refresh_started_at is None
    assert stuck.refresh_error == (
        "The refresh of segment 'stuck' started at 2026-06-15T11:49:00+00:00 "
        "did not finish within 600 seconds and was released."
    )
    assert busy.refresh_started_at == NOW - timedelta(minutes=9)
    assert busy.refresh_error == ""


# Time windows --------------------------------------------------------------------


def test_a_window_that_lapses_with_no_event_moves_the_profile_out_on_the_beat(
    eager_celery,
):
    ana = person("ana@example.com")
    track(ana, "Order Completed", at=NOW)
    recent = segment_save(
        name="Recent buyers",
        rule={"event": "Order Completed", "within_days": 7},
    )
    segment("timeless", FRANCE)

    with time_machine.travel(NOW + timedelta(days=1), tick=False):
        first = segments_time_refresh_task()
    with time_machine.travel(NOW + timedelta(days=7, minutes=5), tick=False):
        second = segments_time_refresh_task()

    assert recent.time_dependent is True
    assert (first, second) == (1, 1)
    assert stays(recent.pk) == [
        ("ana@example.com", NOW + timedelta(days=1), NOW + timedelta(days=7, minutes=5))
    ]
    recent.refresh_from_db()
    assert recent.member_count == 0


# One profile in real time --------------------------------------------------------


def test_only_segments_that_read_what_changed_are_re_evaluated():
    ana = person("ana@example.com", country_code="FR", traits={"tier": "gold"})
    french = segment("french", FRANCE, dependencies=["field:country_code"])
    gold = segment(
        "gold",
        {"attribute": "traits.tier", "op": "eq", "value": "gold"},
        dependencies=["trait:tier"],
    )

    with CaptureQueriesContext(connections["default"]) as queries:
        changes = profile_memberships_refresh(
            profile_id=ana.pk, changed={"trait:tier"}, now=NOW
        )

    assert changes == [MembershipChange(gold.pk, ana.pk, "entered", NOW)]
    assert stays(gold.pk) == [("ana@example.com", NOW, None)]
    # Ana matches 'french' too, but nothing it reads changed: it was not evaluated.
    assert stays(french.pk) == []
    statements = [
        q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]
    ]
    # The rule reads a trait, so compiling it reads the trait schema once.
    schema = [sql for sql in statements if "profiles_traitdefinition" in sql]
    statements = [sql for sql in statements if sql not in schema]
    assert len(schema) == 1
    assert len(statements) == 3  # the segments, one evaluation, one insert
    assert f"stay.segment_id = {gold.pk} " in statements[1]
    assert f"stay.segment_id = {french.pk} " not in statements[1]


def test_a_change_that_no_segment_reads_costs_one_query(django_assert_num_queries):
    ana = person("ana@example.com", country_code="FR")
    segment("french", FRANCE, dependencies=["field:country_code"])

    with django_assert_num_queries(1):  # the segments
        changes = profile_memberships_refresh(
            profile_id=ana.pk, changed={"event:Page Viewed"}, now=NOW
        )

    assert changes == []


@pytest.mark.parametrize("alias", ["default", "sqlite"])
def test_one_profile_enters_and_leaves_with_its_stays_kept(alias):
    ana = person("ana@example.com", country_code="FR", using=alias)
    french = segment("french", FRANCE, dependencies=["field:country_code"], using=alias)

    entered = profile_memberships_refresh(
        profile_id=ana.pk, changed={"field:country_code"}, now=NOW, using=alias
    )
    Profile.objects.using(alias).filter(pk=ana.pk).update(country_code="DE")
    left = profile_memberships_refresh(
        profile_id=ana.pk, changed={"field:country_code"}, now=LATER, using=alias
    )
    unchanged = profile_memberships_refresh(
        profile_id=ana.pk, changed=None, now=LATER, using=alias
    )

    assert entered == [MembershipChange(french.pk, ana.pk, "entered", NOW)]
    assert left == [MembershipChange(french.pk, ana.pk, "left", LATER)]
    assert unchanged == []
    assert stays(french.pk, using=alias) == [("ana@example.com", NOW, LATER)]


def test_a_move_cascades_to_segments_built_on_that_segment(
    django_capture_on_commit_callbacks,
):
    # 'vip' was saved while 'europe' meant subscribed: its recorded dependencies do
    # not name country_code, so only the cascade through 'segment:europe' reaches it.
    segment_save(name="Europe", slug="europe", rule={"consent": "subscribed"})
    vip = segment_save(
        name="VIP",
        slug="vip",
        rule={
            "all": [
                {"segment": "europe"},
                {"metric": "order_count", "op": "gte", "value": 2},
            ]
        },
    )
    europe = segment_save(name="Europe", slug="europe", rule=FRANCE)
    ana = person("ana@example.com", country_code="FR", order_count=3)
    heard = []

    def listener(sender, changes, **kwargs):
        heard.extend(changes)

    segment_membership_changed.connect(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            changes = profile_memberships_refresh(
                profile_id=ana.pk, changed={"field:country_code"}, now=NOW
            )
    finally:
        segment_membership_changed.disconnect(listener)

    assert "field:country_code" not in vip.dependencies
    assert changes == [
        MembershipChange(europe.pk, ana.pk, "entered", NOW),
        MembershipChange(vip.pk, ana.pk, "entered", NOW),
    ]
    assert heard == changes


def test_no_signal_is_sent_when_nothing_moved(django_capture_on_commit_callbacks):
    ana = person("ana@example.com", country_code="DE")
    segment("french", FRANCE, dependencies=["field:country_code"])

    with django_capture_on_commit_callbacks() as callbacks:
        changes = profile_memberships_refresh(profile_id=ana.pk, now=NOW)

    assert changes == []
    assert callbacks == []


# Rebuild -------------------------------------------------------------------------


def test_cancelling_a_rebuild_stops_it_with_the_ranges_done_consistent(
    django_capture_on_commit_callbacks,
):
    people = [person(f"p{n}@example.com", country_code="FR") for n in range(5)]
    french = segment("french", FRANCE)
    # A stale stay the rebuild must close: p4 is French, p0's stay is wrong later.
    Profile.objects.filter(pk=people[0].pk).update(country_code="DE")
    SegmentMembership.objects.create(
        segment=french, profile=people[0], entered_at=NOW - timedelta(days=3)
    )
    with django_capture_on_commit_callbacks() as enqueued:
        claimed_at = segment_rebuild_start(segment_id=french.pk)

    first = segment_rebuild_batch(
        segment_id=french.pk,
        after_id=0,
        claimed_at=claimed_at,
        now=NOW,
        batch_size=2,
    )
    asked = segment_rebuild_cancel(segment_id=french.pk)
    second = segment_rebuild_batch(
        segment_id=french.pk,
        after_id=first.after_id,
        claimed_at=first.claimed_at,
        now=LATER,
        batch_size=2,
    )

    assert len(enqueued) == 1
    assert (first.done, first.after_id) == (False, people[1].pk)
    assert asked is True
    assert (second.done, second.after_id) == (True, people[1].pk)
    assert stays(french.pk) == [
        ("p0@example.com", NOW - timedelta(days=3), NOW),
        ("p1@example.com", NOW, None),
    ]
    french.refresh_from_db()
    assert french.refresh_started_at is None
    assert french.refresh_cancel_requested is False
    assert french.refresh_error == (
        f"Rebuild cancelled: profiles up to id {people[1].pk} were rebuilt, "
        "those after it were not."
    )
    assert french.member_count == 1
    assert french.refreshed_at is None


def test_a_rebuild_runs_batch_after_batch_to_the_end():
    people = [person(f"p{n}@example.com", country_code="FR") for n in range(5)]
    french = segment("french", FRANCE)
    claimed_at = segment_rebuild_start(segment_id=french.pk)

    progress = segment_rebuild_batch(
        segment_id=french.pk, after_id=0, claimed_at=claimed_at, now=NOW, batch_size=2
    )
    ends = [progress.after_id]
    while not progress.done:
        progress = segment_rebuild_batch(
            segment_id=french.pk,
            after_id=progress.after_id,
            claimed_at=progress.claimed_at,
            now=NOW,
            batch_size=2,
        )
        ends.append(progress.after_id)

    assert ends == [people[1].pk, people[3].pk, people[4].pk + 1, people[4].pk + 1]
    french.refresh_from_db()
    assert french.member_count == 5
    assert french.refreshed_at == NOW
    assert french.refresh_started_at is None


def test_a_rebuild_cannot_start_while_a_refresh_holds_the_segment(
    django_capture_on_commit_callbacks,
):
    french = segment("french", FRANCE, refresh_started_at=datetime.now(UTC))

    with django_capture_on_commit_callbacks() as enqueued, pytest.raises(SegmentBusy):
        segment_rebuild_start(segment_id=french.pk)

    assert enqueued == []


def test_a_batch_whose_claim_was_lost_writes_nothing():
    person("ana@example.com", country_code="FR")
    french = segment("french", FRANCE)
    claimed_at = segment_rebuild_start(segment_id=french.pk)
    segment_refreshes_reap(now=datetime.now(UTC) + timedelta(minutes=11))

    progress = segment_rebuild_batch(
        segment_id=french.pk, after_id=0, claimed_at=claimed_at, now=NOW
    )

    assert progress.done is True
    assert SegmentMembership.objects.count() == 0


# Saving a rule -------------------------------------------------------------------


def test_saving_a_new_or_changed_rule_refreshes_the_segment_after_commit(
    eager_celery, django_capture_on_commit_callbacks
):
    person("ana@example.com", country_code="FR")
    person("ben@example.com", country_code="DE")
    europe = Segment.objects.filter(slug="europe")

    with django_capture_on_commit_callbacks(execute=True):
        segment_save(name="Europe", slug="europe", rule=FRANCE)
    after_create = europe.values_list("member_count", "refreshed_at").get()
    with django_capture_on_commit_callbacks(execute=True):
        segment_save(name="Europe, renamed", slug="europe", rule=FRANCE)
    after_rename = europe.values_list("member_count", "refreshed_at").get()
    with django_capture_on_commit_callbacks(execute=True):
        segment_save(
            name="Europe",
            slug="europe",
            rule={"attribute": "continent", "op": "eq", "value": "Europe"},
        )

    saved = europe.get()
    assert after_create[0] == 1
    assert after_rename == after_create
    assert saved.version == 2
    assert saved.member_count == 2
    assert saved.refreshed_at > after_create[1]
    assert [row[0] for row in stays(saved.pk)] == ["ana@example.com", "ben@example.com"]


def test_changing_a_segment_refreshes_the_segments_built_on_it(
    eager_celery, django_capture_on_commit_callbacks
):
    person("ana@example.com", country_code="FR")
    person("ben@example.com", country_code="DE")
    with django_capture_on_commit_callbacks(execute=True):
        segment_save(name="Inner", slug="inner", rule=FRANCE)
        segment_save(name="Outer", slug="outer", rule={"segment": "inner"})
    outer = Segment.objects.filter(slug="outer")
    assert outer.get().member_count == 1

    # when the inner rule changes to one the clock moves
    ordered = {"event": "Order Completed", "count": {"op": "gte", "value": 0}}
    with django_capture_on_commit_callbacks(execute=True):
        segment_save(
            name="Inner",
            slug="inner",
            rule={"any": [{"attribute": "continent", "op": "eq", "value": "Europe"},
                          {**ordered, "within_days": 30}]},
        )  # fmt: skip

    # then the outer one reads what the inner one now reads, and has its members
    saved = outer.get()
    assert saved.member_count == 2
    assert saved.time_dependent is True
    assert "event:Order Completed" in saved.dependencies
    assert [row[0] for row in stays(saved.pk)] == ["ana@example.com", "ben@example.com"]


def test_saving_a_rule_enqueues_nothing_before_commit(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks() as callbacks:
        saved = segment_save(name="Europe", slug="europe", rule=FRANCE)

    assert len(callbacks) == 1
    assert SegmentMembership.objects.filter(segment=saved).count() == 0


# Selectors -----------------------------------------------------------------------


def test_size_history_counts_the_stays_open_at_the_end_of_each_day(settings):
    settings.BESPOKE_ACCOUNT_TIME_ZONE = "UTC"
    french = segment("french", FRANCE)
    ana, ben, chloe = (person(f"{n}@example.com") for n in ("ana", "ben", "chloe"))
    day = datetime(2026, 6, 12, 9, 0, tzinfo=UTC)
    for profile, entered_at, left_at in (
        (ana, day, day + timedelta(days=1)),
        (ben, day + timedelta(hours=14, minutes=59, seconds=59), None),
        (chloe, day + timedelta(days=2), None),
        (ana, day + timedelta(days=3), None),
    ):
        SegmentMembership.objects.create(
            segment=french, profile=profile, entered_at=entered_at, left_at=left_at
        )

    history = segment_size_history(segment_id=french.pk, days=5, now=NOW)

    assert history == [
        {"day": date(2026, 6, 11), "size": 0},
        {"day": date(2026, 6, 12), "size": 2},
        {"day": date(2026, 6, 13), "size": 1},
        {"day": date(2026, 6, 14), "size": 2},
        {"day": date(2026, 6, 15), "size": 3},
    ]


def test_recent_changes_list_entries_and_exits_newest_first():
    french = segment("french", FRANCE)
    ana, ben = person("ana@example.com"), person("ben@example.com")
    SegmentMembership.objects.create(
        segment=french, profile=ana, entered_at=NOW, left_at=LATER
    )
    SegmentMembership.objects.create(
        segment=french, profile=ben, entered_at=NOW + timedelta(hours=1)
    )

    changes = segment_recent_changes(segment_id=french.pk, limit=2)

    assert changes == [
        {
            "profile_id": ana.pk,
            "email": "ana@example.com",
            "change": "left",
            "at": LATER,
        },
        {
            "profile_id": ben.pk,
            "email": "ben@example.com",
            "change": "entered",
            "at": NOW + timedelta(hours=1),
        },
    ]


def test_many_profiles_read_the_segments_once(django_assert_num_queries):
    ana = person("ana@example.com", country_code="FR")
    bo = person("bo@example.com", country_code="DE")
    segment("french", FRANCE, dependencies=["field:country_code"])

    # A change no segment reads: the segments, and nothing per profile.
    with django_assert_num_queries(1):
        changes = profiles_memberships_refresh(
            profile_ids=[ana.pk, bo.pk], changed={"event:Page Viewed"}, now=NOW
        )

    assert changes == []


def test_many_profiles_each_enter_what_they_match():
    ana = person("ana@example.com", country_code="FR")
    bo = person("bo@example.com", country_code="DE")
    french = segment("french", FRANCE, dependencies=["field:country_code"])

    changes = profiles_memberships_refresh(
        profile_ids=[ana.pk, bo.pk], changed={"field:country_code"}, now=NOW
    )

    assert changes == [MembershipChange(french.pk, ana.pk, "entered", NOW)]


def test_a_profile_merged_away_during_its_refresh_moves_nothing(
    transactional_db, monkeypatch
):
    # The state was read while the profile existed; a merge then deleted it before
    # the new stay was written, whose foreign key fails at commit.
    segment = segment_save(
        name="Everyone", slug="everyone", rule={"consent": "subscribed"}
    )
    gone = Profile.objects.create(email="gone@example.com")
    gone_id = gone.pk
    gone.delete()
    monkeypatch.setattr(
        membership,
        "_profile_state",
        lambda *args, **kwargs: {segment.pk: (True, False)},
    )

    assert profiles_memberships_refresh(profile_ids=[gone_id]) == []
    assert not SegmentMembership.objects.exists()
