"""How long the Sources page's figures take to read beside big event tables.

Run: python -m bench.sources_page [--events 3000000] [--deliveries 3000000]

It creates and migrates its own database (bespoke_bench_sources on the server named
by BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432) and writes, with
one INSERT ... SELECT each, --events events from three write keys and --deliveries
webhook deliveries (nine in ten from an ESP, one from the shop), each spread over
the last 30 days in the order they arrived: one event in a hundred failed, one
delivery in five hundred noted, the last thousand of each still waiting. Each
source's hours are then counted as the migration that made them counts them
(profiles/source_counts.py), and it measures, in the same run:

(a) sources_health(), everything the Sources page shows: the median of five runs;
(b) the baseline: one count of the last 30 days' events by source and day from the
    event table, the least that counting volume from the events costs (the page
    did so for each source, and for each of its figures, before SourceHour).

The row `sources-page-ms` has (a) in milliseconds as its figure and (b) beside it.
The database is dropped after.
"""

import argparse
import statistics
import time

import psycopg

from bench.database import SERVER_URL, database_create, database_drop, django_setup

BENCH_DB = "bespoke_bench_sources"
SOURCES = ("Web", "App", "Shop site")
RUNS = 5

_EVENTS_SQL = """
INSERT INTO profiles_event (message_id, type, event, name, user_id, anonymous_id,
    previous_id, group_id, properties, traits, context, integrations, source,
    timestamp, received_at, processed_at, processing_error)
SELECT 'm-' || g, 'track', 'Product Viewed', '', 'usr_' || (g %% 50000), '', '', '',
    '{"category": "Tents", "price": "12.50"}', '{}', '{"ip": "198.51.100.23"}', '{}',
    'segment:' || (%(sources)s::text[])[1 + g %% 3], at, at, CASE
        WHEN g > %(events)s - 1000 THEN NULL
        ELSE at + interval '2 seconds' END,
    CASE WHEN g %% 100 = 7 THEN 'ValueError: bench' ELSE '' END
FROM generate_series(1, %(events)s) AS g,
    LATERAL (SELECT now() - interval '30 days' * (%(events)s - g) / %(events)s AS at) t
"""

_DELIVERIES_SQL = """
INSERT INTO profiles_webhookdelivery (source, delivery_id, topic, shop_domain,
    api_version, payload, received_at, processed_at, error)
SELECT CASE WHEN g %% 10 = 0 THEN 'shopify' ELSE 'esp:mailgun' END, 'd-' || g,
    CASE WHEN g %% 10 = 0 THEN 'orders/create' ELSE 'opened' END, '', '',
    '{"event": "opened", "recipient": "kim@example.com"}', at, CASE
        WHEN g > %(deliveries)s - 1000 THEN NULL
        ELSE at + interval '1 second' END,
    CASE WHEN g %% 500 = 3 THEN 'No message of Bespoke''s has this id.' ELSE '' END
FROM generate_series(1, %(deliveries)s) AS g,
    LATERAL (SELECT now() - interval '30 days' * (%(deliveries)s - g)
        / %(deliveries)s AS at) t
"""

_BASELINE_SQL = """
SELECT source, date_trunc('day', received_at, 'UTC'), count(*)
FROM profiles_event WHERE received_at >= now() - interval '30 days'
GROUP BY 1, 2
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--deliveries", type=int, default=3_000_000)
    args = parser.parse_args()

    database_create(BENCH_DB)
    try:
        django_setup(BENCH_DB)
        _rows_write(events=args.events, deliveries=args.deliveries)
        page_ms, baseline_ms = _measure()
    finally:
        database_drop(BENCH_DB)

    print(
        f"Sources page {page_ms:.0f} ms; one count of the events {baseline_ms:.0f} ms"
    )
    from bench.report import bench_row_write

    bench_row_write(
        name="sources-page-ms",
        figure=f"{page_ms:.0f}",
        baseline=(
            f"one count of the last 30 days' events by source and day from the "
            f"event table {baseline_ms:.0f} ms; {args.events:,} events of "
            f"{len(SOURCES)} write keys, {args.deliveries:,} webhook deliveries"
        ),
        command="python -m bench.sources_page",
    )


def _rows_write(*, events: int, deliveries: int) -> None:
    from profiles.models import WriteKey
    from profiles.source_counts import source_hours_rebuild

    for name in SOURCES:
        WriteKey.objects.create(name=name, key=f"bench-{name}")
    with psycopg.connect(f"{SERVER_URL}/{BENCH_DB}") as conn:
        conn.execute(_EVENTS_SQL, {"events": events, "sources": list(SOURCES)})
        conn.execute(_DELIVERIES_SQL, {"deliveries": deliveries})
        conn.commit()
        conn.execute("ANALYZE")
    source_hours_rebuild()


def _measure() -> tuple[float, float]:
    from profiles.health import sources_health

    page = []
    for _ in range(RUNS):
        started = time.perf_counter()
        sources_health()
        page.append(time.perf_counter() - started)

    with psycopg.connect(f"{SERVER_URL}/{BENCH_DB}") as conn:
        baseline = []
        for _ in range(RUNS):
            started = time.perf_counter()
            conn.execute(_BASELINE_SQL).fetchall()
            baseline.append(time.perf_counter() - started)
    return statistics.median(page) * 1000, statistics.median(baseline) * 1000


if __name__ == "__main__":
    main()
