"""Bringing the values profiles already hold to their trait's declared type.

A value stored before its trait was declared, or before its type or rules changed,
is as it was sent ("yes", "1 000"), and segments compare the stored JSON: declaring
the trait asks for a run that converts each such value as a new one would be
(traits.trait_convert, trait_coerce's conversion). A value that cannot be converted
is kept as it is and counted; the Traits page lists it as breaking the rule.

The run goes through the profiles holding the trait in batches, by id, each batch
in one transaction that holds the definition's row, so that two tasks never do one
batch twice and a rule saved meanwhile waits for the batch and then starts the run
again. The definition's row remembers how far the run got: a task lost with its
broker is started again by trait_values_sweep after TRAIT_VALUES_STALLED_SECONDS.
"""

import json
import logging
from datetime import timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import BooleanField, JSONField, Q
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.utils import timezone

from profiles.models import Profile, TraitDefinition, TraitValuesStatus
from profiles.signals import profiles_changed
from profiles.traits import (
    TraitInvalid,
    TraitRule,
    trait_convert,
    trait_rule_of,
    trait_value_same,
    value_caseless,
)
from profiles.value_times import value_time

logger = logging.getLogger(__name__)

TRAIT_VALUES_BATCH_SIZE = 500
TRAIT_VALUES_STALLED_SECONDS = 120


def trait_values_conform_request(*, trait_definition_id: int) -> None:
    """Start converting a trait's stored values afresh; the task is queued on commit."""
    now = timezone.now()
    TraitDefinition.objects.filter(pk=trait_definition_id).update(
        values_status=TraitValuesStatus.PENDING,
        values_requested_at=now,
        values_touched_at=now,
        values_finished_at=None,
        values_after_id=0,
        values_checked=0,
        values_converted=0,
        values_kept=0,
    )
    transaction.on_commit(lambda: trait_values_conform_enqueue(trait_definition_id))


def trait_values_conform_enqueue(trait_definition_id: int) -> None:
    """Queue a batch of the run; if the broker is down, the sweep starts it later."""
    # Imported here: the tasks module imports this one.
    from profiles.tasks import trait_values_conform_task

    try:
        trait_values_conform_task.delay(trait_definition_id)
    except Exception:
        logger.warning(
            "Could not queue the conversion of a trait's values; the sweep will",
            exc_info=True,
            extra={"trait_definition_id": trait_definition_id},
        )


def trait_values_conform_batch(
    *, trait_definition_id: int, using: str = DEFAULT_DB_ALIAS
) -> bool:
    """Convert the next batch of a trait's stored values; return whether more remain.

    False as well when no run is under way, or another worker holds the batch (its
    task goes on with the run).
    """
    with transaction.atomic(using=using):
        definition = (
            TraitDefinition.objects.using(using)
            .select_for_update(skip_locked=True)
            .filter(pk=trait_definition_id, values_status=TraitValuesStatus.PENDING)
            .first()
        )
        if definition is None:
            return False

        rows = _batch_read(definition, using=using)
        converted, kept = _values_convert(trait_rule_of(definition), rows, using=using)
        return _progress_save(definition, rows, converted, kept, using=using)


def _batch_read(
    definition: TraitDefinition, *, using: str
) -> list[tuple[int, dict[str, Any], dict[str, str]]]:
    # Locked in id order, as event processing locks profiles: a chunk that changes
    # one of them waits for the batch, then reads the converted value. A profile
    # holding the trait in another case only ("LOYALTYTIER", stored before the
    # trait was declared) is read too: its value is the declared trait's.
    holding = (
        Profile.objects.using(using)
        .select_for_update()
        .filter(
            Q(traits__has_key=definition.name)
            | Q(_key_caseless(definition.name, using=using)),
            pk__gt=definition.values_after_id,
        )
        .order_by("pk")
        .values_list("pk", "traits", "value_times")
    )
    return list(holding[:TRAIT_VALUES_BATCH_SIZE])


def _key_caseless(name: str, *, using: str) -> RawSQL:
    # A first sieve, in SQL's lower case; value_caseless decides (_spellings_of).
    if connections[using].vendor == "postgresql":
        # Keys of an object only: jsonb_object_keys refuses any other value.
        sql = (
            "CASE WHEN jsonb_typeof(profiles_profile.traits) = 'object' THEN EXISTS "
            "(SELECT 1 FROM jsonb_object_keys(profiles_profile.traits) AS k "
            "WHERE lower(k) = lower(%s)) ELSE false END"
        )
    else:
        sql = (
            "EXISTS (SELECT 1 FROM json_each(profiles_profile.traits) AS k "
            "WHERE lower(k.key) = lower(%s))"
        )
    return RawSQL(sql, [name], output_field=BooleanField())  # noqa: S611 - bound


def _spellings_of(name: str, traits: dict[str, Any]) -> list[str]:
    """Return the names under which `traits` holds the trait `name`, in any case."""
    if not isinstance(traits, dict):
        return []
    key = value_caseless(name)
    return [held for held in traits if value_caseless(held) == key]


def _values_convert(
    rule: TraitRule,
    rows: list[tuple[int, dict[str, Any], dict[str, str]]],
    *,
    using: str,
) -> tuple[int, int]:
    """Store each value as its type stores it; return how many changed and were kept.

    A value held under another spelling is moved to the declared name; of several,
    the one said last is kept, as an identify's newest word is.
    """
    converted = kept = 0
    for pk, traits, times in rows:
        spellings = _spellings_of(rule.name, traits)
        if not spellings:
            continue
        said = times if isinstance(times, dict) else {}
        newest = max(
            spellings, key=lambda held: (value_time(said, held), held == rule.name)
        )
        try:
            typed = trait_convert(rule, traits[newest])
        except TraitInvalid:
            # Nothing valid is lost: the page lists it as breaking the rule.
            kept += 1
            continue
        if spellings == [rule.name]:
            if trait_value_same(typed, traits[rule.name]):
                continue
            Profile.objects.using(using).filter(pk=pk).update(
                traits=_trait_set(rule.name, typed, using=using)
            )
        else:
            _spellings_join(
                pk, rule.name, typed, spellings, newest, traits, said, using
            )
        converted += 1
    return converted, kept


def _spellings_join(
    pk: int,
    name: str,
    typed: Any,
    spellings: list[str],
    newest: str,
    traits: dict[str, Any],
    said: dict[str, str],
    using: str,
) -> None:
    # The row is locked by the batch: its traits are written whole, the other
    # spellings gone and the newest value under the declared name, with its time.
    traits = {held: v for held, v in traits.items() if held not in spellings}
    traits[name] = typed
    times = {held: at for held, at in said.items() if held not in spellings}
    if newest in said:
        times[name] = said[newest]
    Profile.objects.using(using).filter(pk=pk).update(traits=traits, value_times=times)


def _trait_set(name: str, value: Any, *, using: str) -> RawSQL:
    # One key of the column set in SQL: the profile's other traits as they are.
    # A profile's value times stay: the person said nothing new.
    encoded = json.dumps(value)
    if connections[using].vendor == "postgresql":
        return RawSQL(
            "jsonb_set(traits, %s, %s::jsonb)", ([name], encoded), JSONField()
        )
    path = "$." + json.dumps(name)
    return RawSQL("json_set(traits, %s, json(%s))", (path, encoded), JSONField())


def _progress_save(
    definition: TraitDefinition,
    rows: list[tuple[int, Any]],
    converted: int,
    kept: int,
    *,
    using: str,
) -> bool:
    now = timezone.now()
    more = len(rows) == TRAIT_VALUES_BATCH_SIZE
    definition.values_after_id = rows[-1][0] if rows else definition.values_after_id
    definition.values_checked += len(rows)
    definition.values_converted += converted
    definition.values_kept += kept
    definition.values_touched_at = now
    if not more:
        definition.values_status = TraitValuesStatus.DONE
        definition.values_finished_at = now
    # An update, not save(): progress is no change of the rule, which the schema
    # cache and updated_at follow.
    TraitDefinition.objects.using(using).filter(pk=definition.pk).update(
        **{field: getattr(definition, field) for field in PROGRESS_FIELDS}
    )

    if not more:
        _run_finished(definition, using=using)
    return more


PROGRESS_FIELDS = (
    "values_status",
    "values_touched_at",
    "values_finished_at",
    "values_after_id",
    "values_checked",
    "values_converted",
    "values_kept",
)


def _run_finished(definition: TraitDefinition, *, using: str) -> None:
    logger.info(
        "Trait values converted to the declared type",
        extra={
            "trait_definition_id": definition.pk,
            "checked": definition.values_checked,
            "converted": definition.values_converted,
            "kept": definition.values_kept,
        },
    )
    if not definition.values_converted:
        return

    # Segments reading the trait may name it in any case: every one is refreshed
    # in SQL, as after an import.
    transaction.on_commit(
        lambda: profiles_changed.send(
            sender=TraitDefinition, profile_ids=None, changed=None
        ),
        using=using,
    )


def trait_values_sweep(
    *, stalled_seconds: int = TRAIT_VALUES_STALLED_SECONDS
) -> list[int]:
    """Return the runs under way that made no progress for a while, marked as touched.

    The caller queues their tasks again: a task lost with the broker, or never
    queued, leaves its run pending in the database.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=stalled_seconds)
    stalled = TraitDefinition.objects.annotate(
        touched_at=Coalesce("values_touched_at", "values_requested_at")
    ).filter(
        Q(touched_at__lt=cutoff) | Q(touched_at__isnull=True),
        values_status=TraitValuesStatus.PENDING,
    )
    # Locked, so that two sweeps at once queue a run once; one a batch holds is
    # making progress and is left alone.
    with transaction.atomic():
        ids = list(
            stalled.select_for_update(skip_locked=True).values_list("pk", flat=True)
        )
        TraitDefinition.objects.filter(pk__in=ids).update(values_touched_at=now)
    if ids:
        logger.warning(
            "Trait value conversions queued again, no worker having gone on: %s", ids
        )
    return ids
