"""Computed traits of a chunk of events: added to what profiles keep, or from history.

Run: python -m bench.traits [--profiles 2000] [--history 500] [--chunk 10000]

It creates and migrates its own database (bespoke_bench_traits on the server named
by BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432) and writes, with
COPY, --profiles profiles with --history processed events each, spread over two
years (site visits, product views with categories, email opens and clicks,
orders), then brings every profile's computed traits up to date once. A chunk of
--chunk new events for the same people is then written, and its traits refresh is
timed two ways, alternately, each rolled back, median of --runs:

(a) as event processing does it: the chunk's events added to what each profile
    keeps (profiles_traits_refresh with the chunk's events);
(b) the baseline: the same profiles computed in full from every event they have,
    as every chunk did before the figures were kept.

The row `traits-kept-ms` gives (a) in milliseconds; the baseline column gives (b)
and the ratio. The database is dropped after.
"""

import argparse
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from psycopg.types.json import Jsonb

from bench.batch_ingest import COPY_COLUMNS
from bench.database import database_create, database_drop, django_setup

BENCH_DB = "bespoke_bench_traits"
SEED = 20250316
CATEGORIES = ["Daypacks", "Tents", "Boots", "Jackets", "Stoves", "Maps", "Socks"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=2000)
    parser.add_argument("--history", type=int, default=500)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    database_create(BENCH_DB)
    try:
        django_setup(BENCH_DB)
        kept_ms, full_ms = _measure(args)
    finally:
        database_drop(BENCH_DB)

    print(f"kept: {kept_ms:.0f} ms a chunk; computed in full: {full_ms:.0f} ms")
    from bench.report import bench_row_write

    bench_row_write(
        name="traits-kept-ms",
        figure=f"{kept_ms:.0f}",
        baseline=(
            f"the same profiles computed in full from every event {full_ms:.0f} ms "
            f"({full_ms / kept_ms:.1f} x); a chunk of {args.chunk:,} events for "
            f"{args.profiles:,} profiles with {args.history:,} events of history each"
        ),
        command="python -m bench.traits",
    )


def _measure(args: argparse.Namespace) -> tuple[float, float]:
    from django.db import connection, transaction

    from profiles.models import Event, Profile
    from profiles.processing_traits import TraitsRefresh, profiles_traits_refresh

    rng = random.Random(SEED)
    now = datetime.now(tz=UTC)
    ids = [Profile.objects.create().pk for _ in range(args.profiles)]
    history = now - timedelta(days=730)
    _events_copy(rng, ids, count=args.history, since=history, until=now, now=now)
    connection.cursor().execute("ANALYZE")
    everyone = set(ids)
    with transaction.atomic():
        profiles_traits_refresh(
            refresh=TraitsRefresh(profile_ids=everyone, full_profile_ids=everyone)
        )

    first_new = Event.objects.order_by("-pk").values_list("pk", flat=True).first()
    per_profile = max(1, args.chunk // args.profiles)
    _events_copy(rng, ids, count=per_profile, since=now, until=now, now=now)
    chunk = list(Event.objects.filter(pk__gt=first_new).values_list("pk", "profile_id"))
    kinds = dict(Event.objects.filter(pk__gt=first_new).values_list("pk", "event"))
    kept = TraitsRefresh(
        profile_ids=everyone,
        event_ids=[pk for pk, _ in chunk],
        order_profile_ids={p for pk, p in chunk if kinds[pk] == "Order Completed"},
        category_profile_ids={
            p for pk, p in chunk if kinds[pk] in ("Product Viewed", "Order Completed")
        },
        visit_profile_ids={p for pk, p in chunk if kinds[pk] == ""},
    )
    full = TraitsRefresh(
        profile_ids=everyone, event_ids=kept.event_ids, full_profile_ids=everyone
    )

    times: dict[str, list[float]] = {"kept": [], "full": []}
    for _ in range(args.runs):
        for name, refresh in (("kept", kept), ("full", full)):
            with transaction.atomic():
                started = time.perf_counter()
                profiles_traits_refresh(refresh=refresh)
                times[name].append(time.perf_counter() - started)
                transaction.set_rollback(True)
    return (
        statistics.median(times["kept"]) * 1000,
        statistics.median(times["full"]) * 1000,
    )


def _events_copy(
    rng: random.Random,
    profile_ids: list[int],
    *,
    count: int,
    since: datetime,
    until: datetime,
    now: datetime,
) -> None:
    from django.db import connection

    span = (until - since).total_seconds()
    columns = ", ".join(COPY_COLUMNS)
    with connection.cursor() as cursor:
        raw = cursor.cursor
        with raw.copy(f"COPY profiles_event ({columns}) FROM STDIN") as copy:
            for profile_id in profile_ids:
                for _ in range(count):
                    at = since + timedelta(seconds=rng.random() * span)
                    copy.write_row(_event_row(rng, profile_id, at, now))


def _event_row(rng: random.Random, profile_id: int, at: datetime, now: datetime):
    roll = rng.random()
    kind, name, properties = "track", "", {}
    if roll < 0.35:
        kind = "page"
    elif roll < 0.7:
        name, properties = "Product Viewed", {"category": rng.choice(CATEGORIES)}
    elif roll < 0.85:
        name = "Email Opened"
    elif roll < 0.93:
        name = "Email Link Clicked"
    else:
        name = "Order Completed"
        properties = {
            "order_id": str(rng.getrandbits(40)),
            "total": f"{rng.randint(5, 300)}.00",
            "products": [{"category": rng.choice(CATEGORIES)}],
        }
    return (
        str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        kind,
        name,
        "",
        "",
        "",
        "",
        "",
        profile_id,
        Jsonb(properties),
        Jsonb({}),
        Jsonb({}),
        Jsonb({}),
        "bench",
        at,
        None,
        None,
        at,
        now,
        "",
    )


if __name__ == "__main__":
    main()
