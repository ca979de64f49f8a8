"""The figures statement computes each aggregate once, whatever the planner guesses.

On a large profile table the planner guesses that a chunk's profiles, joined to
themselves, are a single row. Joined straight to the updated rows, the aggregates
(categories, orders) then sat inside a nested loop and were computed again for each
profile: a refresh of 2,000 profiles took ten minutes in bench/traits.py. The plan
is read here with EXPLAIN ANALYZE, so the test counts loops, not seconds.
"""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction

from profiles.models import Event, Profile
from profiles.processing_traits import (
    _FIGURES_UPDATE,
    LIFETIME_VALUE_MAX,
    TraitsRefresh,
    _figures_params,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 3, 15, 12, 0, tzinfo=UTC)
# Enough profiles that the chunk's few look like one row to the planner.
TABLE_PROFILES = 10_000
CHUNK_PROFILES = 100
COMPUTED_ONCE = {"Aggregate", "WindowAgg", "Sort", "Unique", "SetOp"}


def events_of(profile_ids: list[int]) -> list[Event]:
    rows = []
    for number, profile_id in enumerate(profile_ids):
        for day in range(3):
            at = NOW - timedelta(days=day, minutes=number)
            common = {"profile_id": profile_id, "timestamp": at, "received_at": at}
            rows += [
                Event(message_id=f"p{profile_id}-{day}", type="page", **common),
                Event(
                    message_id=f"v{profile_id}-{day}",
                    type="track",
                    event="Product Viewed",
                    properties={"category": ["Tents", "Boots"][day % 2]},
                    **common,
                ),
                Event(
                    message_id=f"o{profile_id}-{day}",
                    type="track",
                    event="Order Completed",
                    properties={
                        "order_id": f"{profile_id}-{day}",
                        "total": "30.00",
                        "products": [{"category": "Maps"}],
                    },
                    **common,
                ),
            ]
    return Event.objects.bulk_create(rows, batch_size=1000)


def plan_nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def test_every_aggregate_of_the_figures_statement_runs_once():
    Profile.objects.bulk_create(Profile() for _ in range(TABLE_PROFILES))
    chunk_ids = sorted(Profile.objects.values_list("pk", flat=True))[:CHUNK_PROFILES]
    events = events_of(chunk_ids)
    Event.objects.filter(pk__in=[e.pk for e in events]).update(processed_at=NOW)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE profiles_profile")
        cursor.execute("ANALYZE profiles_event")

    everyone = set(chunk_ids)
    refresh = TraitsRefresh(profile_ids=everyone, full_profile_ids=everyone)
    params = {
        **_figures_params(refresh, full=everyone, now=NOW),
        "value_max": LIFETIME_VALUE_MAX,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + _FIGURES_UPDATE, params)
        (plan,) = cursor.fetchone()[0]
        transaction.set_rollback(True)
    if isinstance(plan, str):
        plan = json.loads(plan)

    rerun = [
        (node["Node Type"], node.get("Group Key"), node["Actual Loops"])
        for node in plan_nodes(plan["Plan"])
        if node["Node Type"] in COMPUTED_ONCE and node["Actual Loops"] > 1
    ]
    assert rerun == []
    # The statement did its work: every profile of the chunk was joined to its row.
    (joined,) = (
        node
        for node in plan["Plan"]["Plans"]
        if node.get("Parent Relationship") == "Outer"
    )
    assert joined["Actual Rows"] == CHUNK_PROFILES
