"""Segment speed: Bespoke's compiled rules against hand-written SQL, and one profile.

Run: python -m bench.segments [--profiles 1000000] [--events 10000000] [--keep] [--reuse]

It creates, migrates and fills its own database (bespoke_bench_segments on the
server named by BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432) with
the deterministic profiles and events of bench/segment_data.py, then:

(a) for each of four seed segments, checks that the query compiled from the Bespoke
    rule and a hand-written SQL query select exactly the same profile ids, then times
    SELECT count(*) over each, alternating, warm, median of --runs runs. The row
    `segment-vs-sql` is the worst ratio (Bespoke / hand-written) of the four;
(b) saves 50 varied segments and times profile_memberships_refresh for 200 random
    profiles with every segment (changed=None, the figure of `profile-reeval-ms`)
    and with only those reading 'event:Order Completed'.

The database is dropped at the end unless --keep is given; --reuse keeps a complete
earlier load (its sizes are in the database's comment) instead of generating again.
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta

import psycopg

from bench.segment_data import data_load, now_default
from segments.seeds import SEED_SEGMENTS

BENCH_DB = "bespoke_bench_segments"
SERVER_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432"
).rstrip("/")
GOAL_RATIO = 1.5
GOAL_REEVAL_MS = 20
REEVAL_PROFILES = 200
REEVAL_SEED = 7

# Hand-written SQL, as an engineer who knows the tables would write each segment.
# %(d14)s, %(d30)s, %(d60)s are now minus that many days.
HAND_SQL = {
    "high-value": """
        SELECT p.id FROM profiles_profile p
        WHERE p.lifetime_value > 500 AND p.engagement_score >= 60
          AND EXISTS (
            SELECT 1 FROM profiles_event e
            WHERE e.profile_id = p.id AND e.event = 'Order Completed'
              AND e.timestamp >= %(d30)s)
    """,
    "at-risk": """
        SELECT p.id FROM profiles_profile p
        JOIN (
          SELECT profile_id FROM profiles_event
          WHERE event = 'Email Opened' AND timestamp >= %(d60)s
          GROUP BY profile_id
          HAVING count(*) FILTER (WHERE timestamp >= %(d30)s)
               < count(*) FILTER (WHERE timestamp < %(d30)s)
             AND bool_or(timestamp >= %(d30)s
                         AND NOT properties @> '{"machine_open": true}')
        ) opens ON opens.profile_id = p.id
        WHERE NOT EXISTS (
          SELECT 1 FROM profiles_event e
          WHERE e.profile_id = p.id AND e.event = 'Order Completed'
            AND e.timestamp >= %(d60)s)
    """,
    "engaged-browsers": """
        SELECT p.id FROM profiles_profile p
        JOIN (
          SELECT profile_id FROM profiles_event
          WHERE event = 'Product Viewed' AND timestamp >= %(d30)s
          GROUP BY profile_id HAVING count(*) >= 5
        ) views ON views.profile_id = p.id
        WHERE NOT EXISTS (
          SELECT 1 FROM profiles_event e
          WHERE e.profile_id = p.id AND e.event = 'Order Completed')
    """,
    "europe-frequent-buyers": """
        SELECT p.id FROM profiles_profile p
        JOIN (
          SELECT profile_id FROM profiles_event
          WHERE event = 'Order Completed' AND timestamp >= %(d30)s
          GROUP BY profile_id
          HAVING count(DISTINCT NULLIF(properties ->> 'order_id', ''))
               + count(*) FILTER (WHERE NULLIF(properties ->> 'order_id', '') IS NULL)
               > 3
        ) orders ON orders.profile_id = p.id
        WHERE p.country_code = ANY(%(europe)s)
    """,
}

# The seed segments exactly as Bespoke ships them (segments/seeds.py).
_SEEDS = {seed["slug"]: seed["rule"] for seed in SEED_SEGMENTS}
SEED_RULES = {
    "high-value": _SEEDS["high-value-customers"],
    "at-risk": _SEEDS["at-risk"],
    "engaged-browsers": _SEEDS["engaged-browsers"],
    "europe-frequent-buyers": _SEEDS["frequent-buyers-in-europe"],
}


# Database ---------------------------------------------------------------------------


def database_ready(
    *, profiles: int, events: int, reuse: bool, log=print
) -> tuple[str, datetime]:
    """Return the bench database's URL and the load's 'now', loading it if needed."""
    url = f"{SERVER_URL}/{BENCH_DB}"
    meta = _database_meta() if reuse else None
    if meta and meta["profiles"] == profiles and meta["events"] == events:
        log(f"reusing {BENCH_DB}: {meta}")
        return url, datetime.fromisoformat(meta["now"])
    if reuse:
        log(f"no complete load of this size in {BENCH_DB}: generating it")

    _database_recreate()
    _migrate(url)
    now = now_default()
    loaded = data_load(url, profiles=profiles, events=events, now=now, log=log)
    meta = {"profiles": profiles, "events": events, "now": now.isoformat()}
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        # Written last: a comment means a complete load that --reuse may trust.
        comment = json.dumps(meta).replace("'", "''")
        conn.execute(f"COMMENT ON DATABASE {BENCH_DB} IS '{comment}'")
    log(f"loaded in {loaded['seconds']} s: {loaded}")
    return url, now


def _database_meta() -> dict | None:
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname = %s",
            [BENCH_DB],
        ).fetchone()
    if not row or not row[0]:
        return None
    return json.loads(row[0])


def _database_recreate() -> None:
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")


def database_drop() -> None:
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


def _migrate(url: str) -> None:
    django_setup(url)
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)
    connections.close_all()


def django_setup(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("BESPOKE_VAR_DIR", tempfile.mkdtemp(prefix="bespoke-bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    os.environ["DJANGO_DEBUG"] = "false"  # no query log growing in memory
    import django

    django.setup()


# (a) Seed segments against hand-written SQL -------------------------------------------


def windows(now: datetime) -> dict:
    from segments.geo import CONTINENTS

    days = {f"d{n}": now - timedelta(days=n) for n in (14, 30, 60)}
    return {**days, "europe": sorted(CONTINENTS["Europe"])}


def compiled_sql(rule: dict, now: datetime) -> tuple[str, tuple]:
    """Return the SQL and parameters of the rule's profile ids, as Bespoke runs them."""
    from profiles.models import Profile
    from segments.compiler import rule_compile

    query = Profile.objects.filter(rule_compile(rule, now=now)).values("id").query
    return query.sql_with_params()


def ids_fetch(sql: str, params) -> list[int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM ({sql}) AS s ORDER BY id", params)  # noqa: S608
        return [pk for (pk,) in cursor.fetchall()]


def count_time(sql: str, params) -> tuple[float, int]:
    """Return the milliseconds SELECT count(*) over the query takes, and the count."""
    from django.db import connection

    with connection.cursor() as cursor:
        started = time.perf_counter()
        cursor.execute(f"SELECT count(*) FROM ({sql}) AS s", params)  # noqa: S608
        (count,) = cursor.fetchone()
        return (time.perf_counter() - started) * 1000, count


def explain(sql: str, params) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"EXPLAIN (ANALYZE, BUFFERS) SELECT count(*) FROM ({sql}) AS s",  # noqa: S608
            params,
        )
        return "\n".join(line for (line,) in cursor.fetchall())


def segment_compare(name: str, now: datetime, *, runs: int, log=print) -> dict:
    """Check both queries select the same ids, then time them alternately."""
    bespoke_sql, bespoke_params = compiled_sql(SEED_RULES[name], now)
    hand_sql, hand_params = HAND_SQL[name], windows(now)

    bespoke_ids = ids_fetch(bespoke_sql, bespoke_params)
    hand_ids = ids_fetch(hand_sql, hand_params)
    if bespoke_ids != hand_ids:
        only_b = sorted(set(bespoke_ids) - set(hand_ids))[:10]
        only_h = sorted(set(hand_ids) - set(bespoke_ids))[:10]
        raise AssertionError(
            f"{name}: Bespoke selects {len(bespoke_ids)} profiles, the hand-written "
            f"SQL {len(hand_ids)}; only Bespoke: {only_b}, only hand: {only_h}"
        )

    bespoke_ms, hand_ms = [], []
    for _ in range(runs):
        bespoke_ms.append(count_time(bespoke_sql, bespoke_params)[0])
        hand_ms.append(count_time(hand_sql, hand_params)[0])
    result = {
        "name": name,
        "members": len(hand_ids),
        "bespoke_ms": statistics.median(bespoke_ms),
        "hand_ms": statistics.median(hand_ms),
    }
    result["ratio"] = result["bespoke_ms"] / result["hand_ms"]
    log(
        f"{name}: {result['members']} profiles, Bespoke {result['bespoke_ms']:.1f} ms,"
        f" hand-written {result['hand_ms']:.1f} ms, ratio {result['ratio']:.2f}"
    )
    if result["ratio"] > GOAL_RATIO:
        log(f"--- {name}: Bespoke's plan\n{explain(bespoke_sql, bespoke_params)}")
        log(f"--- {name}: hand-written plan\n{explain(hand_sql, hand_params)}")
    return result


# (b) One profile after an event, with 50 segments -------------------------------------


def reeval_rules() -> dict[str, dict]:
    """Return 50 varied rules by slug: the seed four and 46 built from parts."""
    leaves = [
        {"attribute": "country_code", "op": "in", "value": ["US", "CA"]},
        {"attribute": "continent", "op": "eq", "value": "Asia"},
        {"attribute": "traits.tier", "op": "eq", "value": "gold"},
        {"attribute": "traits.loyalty_points", "op": "gt", "value": 5000},
        {"attribute": "traits.birthday", "op": "anniversary_in_days", "value": 7},
        {"attribute": "tags", "op": "contains", "value": "VIP"},
        {"attribute": "email", "op": "exists"},
        {"metric": "lifetime_value", "op": "between", "value": [100, 1000]},
        {"metric": "order_count", "op": "gte", "value": 3},
        {"metric": "engagement_score", "op": "lt", "value": 20},
        {"metric": "last_order_at", "op": "more_than_days_ago", "value": 90},
        {"metric": "favourite_category", "op": "eq", "value": "Boots"},
        {"consent": "subscribed"},
        {"suppressed": False},
        {"event": "Order Completed", "within_days": 90},
        {
            "event": "Order Completed",
            "within_days": 60,
            "where": [{"property": "total", "op": "gt", "value": 200}],
        },
        {
            "event": "Order Completed",
            "where": [{"property": "products.category", "op": "eq", "value": "Tents"}],
        },
        {"event": "Product Added", "within_days": 7},
        {
            "event": "Product Viewed",
            "within_days": 14,
            "count": {"op": "gte", "value": 3},
        },
        {"event": "Email Link Clicked", "within_days": 30},
        {"engagement": "opened", "within_days": 7},
        {"engagement": "clicked", "did": False, "within_days": 90},
        {"trend": "Product Viewed", "over_days": 30, "direction": "rising"},
        {
            "event": "Product Added",
            "within_days": 14,
            "followed_by": {
                "event": "Order Completed",
                "did": False,
                "within_days": 3,
                "same": "product_id",
            },
        },
    ]
    rng = random.Random(REEVAL_SEED)
    rules = dict(SEED_RULES)
    while len(rules) < 50:
        parts = rng.sample(leaves, rng.choice([1, 2, 2, 3]))
        if rng.random() < 0.2:
            parts[0] = {"not": parts[0]}
        rule = {"any" if rng.random() < 0.25 else "all": parts}
        rules[f"bench-{len(rules):02d}"] = rule
    return rules


def reeval_measure(now: datetime, *, profiles: int, log=print) -> dict:
    """Time profile_memberships_refresh for random profiles; medians in ms."""
    from segments.membership import profile_memberships_refresh
    from segments.services import segment_save

    for slug, rule in reeval_rules().items():
        segment_save(name=slug.replace("-", " ").capitalize(), slug=slug, rule=rule)
    rng = random.Random(REEVAL_SEED)
    ids = rng.sample(range(1, profiles + 1), min(REEVAL_PROFILES, profiles))

    # Open the stays these profiles belong in first, as whole-segment refreshes would
    # have: the timed calls then do what a call after an ordinary event does.
    for pk in ids:
        profile_memberships_refresh(profile_id=pk, now=now)

    timings: dict[str, list[float]] = {"all": [], "order": []}
    for pk in ids:
        for key, changed in (("order", {"event:Order Completed"}), ("all", None)):
            started = time.perf_counter()
            profile_memberships_refresh(profile_id=pk, changed=changed, now=now)
            timings[key].append((time.perf_counter() - started) * 1000)
    result = {key: statistics.median(values) for key, values in timings.items()}
    result["p90_all"] = statistics.quantiles(timings["all"], n=10)[-1]
    log(
        f"one profile, 50 segments: median {result['all']:.1f} ms (p90 "
        f"{result['p90_all']:.1f}); only 'event:Order Completed' segments "
        f"{result['order']:.1f} ms"
    )
    return result


# Run ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--reuse", action="store_true", help="reuse a complete load")
    args = parser.parse_args()

    started = time.perf_counter()
    url, now = database_ready(
        profiles=args.profiles, events=args.events, reuse=args.reuse
    )
    try:
        django_setup(url)
        measured = time.perf_counter()
        results = [segment_compare(name, now, runs=args.runs) for name in SEED_RULES]
        reeval = reeval_measure(now, profiles=args.profiles)
        from django.db import connections

        connections.close_all()
    finally:
        if not args.keep:
            database_drop()

    total = time.perf_counter() - started
    print(
        f"measured in {time.perf_counter() - measured:.0f} s; whole run {total:.0f} s"
    )
    if args.profiles == 1_000_000 and args.events == 10_000_000:
        report(results, reeval)
    sys.stdout.flush()


def report(results: list[dict], reeval: dict) -> None:
    from bench.report import bench_row_write

    worst = max(results, key=lambda result: result["ratio"])
    bench_row_write(
        name="segment-vs-sql",
        figure=f"{worst['ratio']:.2f}",
        baseline=(
            f"hand-written SQL, worst segment {worst['name']} {worst['hand_ms']:.0f} ms "
            f"(Bespoke {worst['bespoke_ms']:.0f} ms); 1,000,000 profiles, "
            "10,000,000 events"
        ),
        command="python -m bench.segments",
    )
    bench_row_write(
        name="profile-reeval-ms",
        figure=f"{reeval['all']:.1f}",
        baseline=(
            "profile_memberships_refresh, 50 segments, median of 200 profiles; "
            f"only segments reading 'event:Order Completed' {reeval['order']:.1f} ms"
        ),
        command="python -m bench.segments",
    )


if __name__ == "__main__":
    main()
