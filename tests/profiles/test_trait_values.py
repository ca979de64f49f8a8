"""The run that brings a declared trait's stored values to its type, batch by batch."""

from datetime import timedelta

import pytest
from django.utils import timezone

from profiles import trait_values
from profiles.models import Profile, TraitDefinition, TraitType
from profiles.tasks import trait_values_sweep_task
from profiles.trait_values import (
    trait_values_conform_batch,
    trait_values_conform_request,
    trait_values_sweep,
)

pytestmark = pytest.mark.django_db(databases=["default", "sqlite"])


def run_asked(name: str, kind: str, *, using: str = "default") -> TraitDefinition:
    return TraitDefinition.objects.using(using).create(
        name=name,
        type=kind,
        values_status="pending",
        values_requested_at=timezone.now(),
    )


def figures(definition: TraitDefinition) -> tuple:
    definition.refresh_from_db()
    return (
        definition.values_status,
        definition.values_after_id,
        definition.values_checked,
        definition.values_converted,
        definition.values_kept,
    )


@pytest.mark.parametrize("database", ["default", "sqlite"])
def test_it_converts_one_key_and_leaves_the_rest_of_the_profile(database):
    definition = run_asked("pts", TraitType.NUMBER, using=database)
    times = {"pts": "2026-01-01T00:00:00+00:00"}
    profiles = Profile.objects.using(database)
    spaced = profiles.create(
        email="a@example.com", traits={"pts": "1 000", "pet": "cat"}, value_times=times
    )
    words = profiles.create(email="b@example.com", traits={"pts": "abc"})
    listed = profiles.create(email="c@example.com", traits={"pts": [1, 2]})
    typed = profiles.create(email="d@example.com", traits={"pts": 7.0})
    blank = profiles.create(email="e@example.com", traits={"pts": ""})
    profiles.create(email="f@example.com", traits={"pet": "dog"})

    more = trait_values_conform_batch(trait_definition_id=definition.pk, using=database)

    assert more is False
    assert profiles.get(pk=spaced.pk).traits == {"pts": 1000, "pet": "cat"}
    assert profiles.get(pk=spaced.pk).value_times == times
    # Kept as they were: no number.
    assert profiles.get(pk=words.pk).traits == {"pts": "abc"}
    assert profiles.get(pk=listed.pk).traits == {"pts": [1, 2]}
    assert profiles.get(pk=blank.pk).traits == {"pts": ""}
    assert profiles.get(pk=typed.pk).traits == {"pts": 7.0}
    definition = TraitDefinition.objects.using(database).get(pk=definition.pk)
    assert (
        definition.values_status,
        definition.values_checked,
        definition.values_converted,
        definition.values_kept,
    ) == ("done", 5, 1, 3)
    assert definition.values_finished_at is not None


def test_a_run_goes_on_from_where_its_last_batch_ended(monkeypatch):
    monkeypatch.setattr(trait_values, "TRAIT_VALUES_BATCH_SIZE", 2)
    definition = run_asked("loyal", TraitType.BOOLEAN)
    ids = [
        Profile.objects.create(email=f"p{i}@example.com", traits={"loyal": "yes"}).pk
        for i in range(5)
    ]
    Profile.objects.create(email="none@example.com", traits={})

    batches = [trait_values_conform_batch(trait_definition_id=definition.pk)]
    assert figures(definition) == ("pending", ids[1], 2, 2, 0)
    batches += [trait_values_conform_batch(trait_definition_id=definition.pk)]
    batches += [trait_values_conform_batch(trait_definition_id=definition.pk)]

    assert batches == [True, True, False]
    assert figures(definition) == ("done", ids[4], 5, 5, 0)
    assert set(Profile.objects.values_list("traits__loyal", flat=True)) == {
        True,
        None,
    }
    # A finished run does nothing more until it is asked again.
    assert trait_values_conform_batch(trait_definition_id=definition.pk) is False


def test_asking_again_starts_the_run_over_under_the_rule_saved(
    monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(trait_values, "TRAIT_VALUES_BATCH_SIZE", 1)
    definition = run_asked("plan", TraitType.NUMBER)
    first = Profile.objects.create(email="a@example.com", traits={"plan": "12"})
    second = Profile.objects.create(email="b@example.com", traits={"plan": "7"})
    trait_values_conform_batch(trait_definition_id=definition.pk)

    TraitDefinition.objects.filter(pk=definition.pk).update(type=TraitType.TEXT)
    with django_capture_on_commit_callbacks() as queued:
        trait_values_conform_request(trait_definition_id=definition.pk)
    assert figures(definition) == ("pending", 0, 0, 0, 0)
    while trait_values_conform_batch(trait_definition_id=definition.pk):
        pass

    assert len(queued) == 1
    assert Profile.objects.get(pk=first.pk).traits == {"plan": "12"}
    assert Profile.objects.get(pk=second.pk).traits == {"plan": "7"}
    # 12 goes back to "12"; "7" was never converted.
    assert figures(definition)[2:] == (2, 1, 0)


def test_a_finished_run_that_converted_values_refreshes_every_segment(
    django_capture_on_commit_callbacks,
):
    from profiles.signals import profiles_changed

    heard = []

    def listen(sender, **kwargs):
        heard.append((sender, kwargs["profile_ids"], kwargs["changed"]))

    profiles_changed.connect(listen)
    try:
        converting = run_asked("loyal", TraitType.BOOLEAN)
        typed = run_asked("vip", TraitType.BOOLEAN)
        Profile.objects.create(email="a@example.com", traits={"loyal": "y"})
        Profile.objects.create(email="b@example.com", traits={"vip": True})
        with django_capture_on_commit_callbacks(execute=True):
            trait_values_conform_batch(trait_definition_id=converting.pk)
            trait_values_conform_batch(trait_definition_id=typed.pk)
    finally:
        profiles_changed.disconnect(listen)

    assert heard == [(TraitDefinition, None, None)]


def test_the_sweep_queues_again_a_run_that_stopped_making_progress(
    tasks_inline, django_capture_on_commit_callbacks
):
    long_ago = timezone.now() - timedelta(minutes=5)
    stalled = run_asked("loyal", TraitType.BOOLEAN)
    lost = run_asked("vip", TraitType.BOOLEAN)
    going = run_asked("pts", TraitType.NUMBER)
    done = run_asked("plan", TraitType.TEXT)
    TraitDefinition.objects.filter(pk=stalled.pk).update(values_touched_at=long_ago)
    TraitDefinition.objects.filter(pk=lost.pk).update(values_requested_at=long_ago)
    TraitDefinition.objects.filter(pk=going.pk).update(values_touched_at=timezone.now())
    TraitDefinition.objects.filter(pk=done.pk).update(
        values_status="done", values_touched_at=long_ago
    )
    Profile.objects.create(email="a@example.com", traits={"loyal": "yes", "vip": 1})

    with django_capture_on_commit_callbacks(execute=True):
        queued = trait_values_sweep_task()

    assert queued == 2
    assert Profile.objects.get().traits == {"loyal": True, "vip": True}
    assert figures(stalled)[0] == figures(lost)[0] == "done"
    assert figures(going)[0] == "pending"
    assert trait_values_sweep() == []


@pytest.mark.parametrize("database", ["default", "sqlite"])
def test_a_value_held_under_another_case_moves_to_the_declared_name(database):
    definition = run_asked("loyaltyTier", TraitType.NUMBER, using=database)
    profiles = Profile.objects.using(database)
    old = profiles.create(
        email="a@example.com",
        traits={"LOYALTYTIER": "3", "pet": "cat"},
        value_times={"LOYALTYTIER": "2025-01-01T00:00:00.000000+00:00"},
    )
    both = profiles.create(
        email="b@example.com",
        traits={"loyaltyTier": 1, "loyaltytier": "2"},
        value_times={
            "loyaltyTier": "2025-01-01T00:00:00.000000+00:00",
            "loyaltytier": "2025-06-01T00:00:00.000000+00:00",
        },
    )
    words = profiles.create(email="c@example.com", traits={"LoyaltyTier": "gold"})

    trait_values_conform_batch(trait_definition_id=definition.pk, using=database)

    old = profiles.get(pk=old.pk)
    assert old.traits == {"loyaltyTier": 3, "pet": "cat"}
    assert old.value_times == {"loyaltyTier": "2025-01-01T00:00:00.000000+00:00"}
    # The value said last wins, under the declared name.
    both = profiles.get(pk=both.pk)
    assert both.traits == {"loyaltyTier": 2}
    assert both.value_times == {"loyaltyTier": "2025-06-01T00:00:00.000000+00:00"}
    # No number: kept where it was, and counted.
    assert profiles.get(pk=words.pk).traits == {"LoyaltyTier": "gold"}
    assert figures(definition)[2:] == (3, 2, 1)


def test_a_profile_whose_traits_are_no_object_is_passed_over():
    definition = run_asked("pts", TraitType.NUMBER)
    odd = Profile.objects.create(email="a@example.com", traits=[1, 2])
    held = Profile.objects.create(email="b@example.com", traits={"PTS": "4"})

    trait_values_conform_batch(trait_definition_id=definition.pk)

    assert Profile.objects.get(pk=odd.pk).traits == [1, 2]
    assert Profile.objects.get(pk=held.pk).traits == {"pts": 4}
