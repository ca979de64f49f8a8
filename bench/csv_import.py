"""Bespoke's contact import against PostgreSQL's COPY of the same rows.

Generates a realistic generic CSV (deterministic seed: a few per cent invalid
addresses, the same address again in another case, plus-addresses, internationalised
domains, a tags column, a status column and a declared number trait), then in one
run on one fresh database measures (a) COPY of the file into a plain table with the
same columns (the fastest of three runs, so that a run the host slowed cannot
flatter the ratio) and (b) contact_import_run of the same file. The figure is
(b) / (a).

It then measures (c), the floor under any import on Bespoke's schema: the rows the
import wrote (profiles, tags, consent records) are copied out, the tables emptied,
and the same rows written back with binary COPY in one transaction, through the
tables' indexes and foreign keys. No import can store those rows faster than (c);
it is printed and kept beside the figure so the goal can be read against it, with
the part of it the profile rows alone take: every import writes those at least.

    python -m bench.csv_import              # 1,000,000 rows, writes docs/benchmarks.md
    python -m bench.csv_import --rows 100000 --profile   # where the time goes
"""

import argparse
import cProfile
import csv
import os
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path

import psycopg

SEED = 20250314
SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
BENCH_DATABASE = "bespoke_bench"
COLUMNS = ["email", "first_name", "last_name", "city", "country", "tags", "status"]
COLUMNS += ["orders"]
FIRST_NAMES = ["Ana", "Ben", "Chloé", "Dmitri", "Emma", "Kenji", "Łukasz", "Priya"]
LAST_NAMES = ["Souza", "Okafor", "Dubois", "Volkov", "Davis", "Sato", "Nowak"]
CITIES = [("São Paulo", "BR"), ("Chicago", "US"), ("Lyon", "FR"), ("Köln", "DE")]
DOMAINS = ["example.com", "example.net", "mail.example.org", "shop.example.co.uk"]
IDN_DOMAINS = ["bücher.example.com", "xn--bcher-kva.example.com", "münchen.example"]
TAGS = ["VIP", "Newsletter", "Spring Sale 2025", "Expo 2024, Boston", "Club"]
STATUSES = ["subscribed", "subscribed", "subscribed", "unsubscribed", ""]


def rows_generate(count: int, path: Path) -> None:
    """Write `count` data rows (plus the header) to a CSV file."""
    rng = random.Random(SEED)
    seen: list[str] = []
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for number in range(count):
            email = _email(rng, number, seen)
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            city, country = rng.choice(CITIES)
            tags = ",".join(f'"{t}"' for t in rng.sample(TAGS, rng.randint(0, 2)))
            orders = rng.choice([str(rng.randint(0, 40)), "", "12.5", "lots"])
            status = rng.choice(STATUSES)
            writer.writerow([email, first, last, city, country, tags, status, orders])


def _email(rng: random.Random, number: int, seen: list[str]) -> str:
    roll = rng.random()
    if roll < 0.03:
        return rng.choice(["not-an-email", f"user{number}@@example.com", ""])
    if roll < 0.05 and seen:
        return rng.choice(seen).upper()
    if roll < 0.07:
        return f"person{number}+news@{rng.choice(DOMAINS)}"
    if roll < 0.08:
        return f"person{number}@{rng.choice(IDN_DOMAINS)}"

    email = f"person{number}@{rng.choice(DOMAINS)}"
    if len(seen) < 10_000:
        seen.append(email)
    return email


def database_recreate() -> str:
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    return f"{SERVER_URL}/{BENCH_DATABASE}"


def database_drop() -> None:
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")


# COPY is timed this many times and its fastest run kept: one slowed by the host
# (a checkpoint, a neighbour) would make the ratio look better than it is.
COPY_RUNS = 3


def copy_measure(url: str, path: Path) -> float:
    """Return the seconds COPY takes to load the file into a plain table, at best."""
    return min(_copy_time(url, path) for _ in range(COPY_RUNS))


def _copy_time(url: str, path: Path) -> float:
    columns = ", ".join(f"{name} text" for name in COLUMNS)
    with psycopg.connect(url) as conn:
        conn.execute("DROP TABLE IF EXISTS copy_baseline")
        conn.execute(f"CREATE TABLE copy_baseline ({columns})")
        conn.commit()
        conn.execute("CHECKPOINT")
        started = time.perf_counter()
        with (
            conn.cursor() as cursor,
            cursor.copy(
                "COPY copy_baseline FROM STDIN WITH (FORMAT csv, HEADER)"
            ) as copy,
            path.open("rb") as handle,
        ):
            while chunk := handle.read(1 << 20):
                copy.write(chunk)
        conn.commit()
        return time.perf_counter() - started


def django_setup(url: str, var_dir: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["BESPOKE_VAR_DIR"] = var_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    os.environ["DJANGO_DEBUG"] = "false"  # no query log growing in memory
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def import_measure(path: Path, profile: bool) -> tuple[float, object]:
    """Return the seconds Bespoke takes to import the file, and the import."""
    from profiles.importing import contact_import_create, contact_import_run
    from profiles.models import TraitDefinition, TraitType

    TraitDefinition.objects.create(name="orders", type=TraitType.NUMBER, minimum=0)
    data = path.read_bytes()
    contact_import = contact_import_create(filename=path.name, data=data)

    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    data = path.read_bytes()
    result = contact_import_run(contact_import_id=contact_import.pk, data=data)
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started

    if profiler:
        stats = pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative")
        stats.print_stats(25)
        stats.sort_stats("tottime").print_stats(25)
    return elapsed, result


FLOOR_TABLES = ("profiles_profile", "profiles_profiletag", "profiles_consentrecord")


def floor_measure(url: str) -> tuple[float, float]:
    """Return the seconds binary COPY takes to write the import's output rows again,
    and of those the seconds the profile rows alone take (the first table written,
    before the foreign keys of the others are checked at commit)."""
    with psycopg.connect(url, options="-c jit=off") as conn:
        saved = {}
        for table in FLOOR_TABLES:
            with conn.cursor().copy(f"COPY {table} TO STDOUT (FORMAT BINARY)") as copy:
                saved[table] = b"".join(bytes(chunk) for chunk in copy)
        conn.execute(f"TRUNCATE {', '.join(FLOOR_TABLES)} CASCADE")
        conn.commit()
        conn.execute("CHECKPOINT")

        started = time.perf_counter()
        profiles_written = started
        for table in FLOOR_TABLES:
            sql = f"COPY {table} FROM STDIN (FORMAT BINARY)"
            with conn.cursor().copy(sql) as copy:
                copy.write(saved[table])
            if table == "profiles_profile":
                profiles_written = time.perf_counter()
        conn.commit()  # the deferred foreign-key checks run here
        return time.perf_counter() - started, profiles_written - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--profile", action="store_true", help="print a cProfile")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bespoke-bench-") as tmp:
        path = Path(tmp) / "contacts.csv"
        rows_generate(args.rows, path)
        url = database_recreate()
        try:
            django_setup(url, tmp)
            copy_seconds = copy_measure(url, path)
            import_seconds, result = import_measure(path, args.profile)
            from django.db import connections

            connections.close_all()
            floor_seconds, profiles_seconds = floor_measure(url)
        finally:
            database_drop()

    ratio = import_seconds / copy_seconds
    print(
        f"rows={args.rows} copy={copy_seconds:.2f}s import={import_seconds:.2f}s "
        f"ratio={ratio:.2f} status={result.status} records={result.records} "
        f"rejected={result.rejected} created={result.profiles_created} "
        f"merged={result.duplicates_merged}"
    )
    print(
        f"floor: COPY of the import's own output rows {floor_seconds:.2f}s, "
        f"{floor_seconds / copy_seconds:.2f} x COPY of the file; of the profile rows "
        f"alone {profiles_seconds:.2f}s, {profiles_seconds / copy_seconds:.2f} x"
    )
    if args.rows == 1_000_000 and not args.profile:
        from bench.report import bench_row_write

        bench_row_write(
            name="csv-import-vs-copy",
            figure=f"{ratio:.2f}",
            baseline=(
                f"COPY {copy_seconds:.2f} s, Bespoke {import_seconds:.1f} s "
                "for 1,000,000 rows; binary COPY of the import's output rows into "
                f"Bespoke's tables {floor_seconds:.1f} s "
                f"({floor_seconds / copy_seconds:.1f} x), of the profile rows alone "
                f"{profiles_seconds:.1f} s ({profiles_seconds / copy_seconds:.1f} x)"
            ),
            command="python -m bench.csv_import",
        )


if __name__ == "__main__":
    main()
