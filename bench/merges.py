"""How long event processing takes to merge two profiles found to be one person.

Run: python -m bench.merges [--people 2000]

It creates and migrates its own database (bespoke_bench_merges on the server named
by BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432). Through the
tracking API it stores, for each of --people people, an identify that gives a
userId its address, and five anonymous page views; these are processed. Then it
stores and times the processing of two kinds of identify, in the same run:

(a) the merge: an identify naming a person's userId and the anonymousId of their
    browsing, which joins the anonymous profile to the known one (a ProfileMerge);
(b) the baseline: an identify naming a person's userId and an anonymousId nobody
    has yet, which links the new id to the known profile and merges nothing.

The figure of the row `merge-ms` is (a) in milliseconds per identify; the baseline
column gives (b) and the ratio.

It then times (c), --people identifies of new people, each with a userId and an
address nobody has (a shop's customers back-filled, say), beside (d) as many
identifies of known people that change a trait. The row `new-person-ms` gives (c)
in milliseconds per identify, and (d) as its baseline. Last, (e): --people
identifies each with a new userId and the address of a profile an import made (a
customer list imported, then their sign-ins back-filled); the row
`imported-person-ms` gives (e), with (d) as its baseline. The database is dropped
after.
"""

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.database import database_create, database_drop, django_setup

BENCH_DB = "bespoke_bench_merges"
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/14")
WRITE_KEY = "bench-merges-key"
BATCH_EVENTS = 100
PAGE_VIEWS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=2000)
    args = parser.parse_args()

    database_create(BENCH_DB)
    try:
        _django_setup()
        merge_ms, link_ms = _measure(args.people)
        new_ms, known_ms = _newcomers_measure(args.people)
        imported_ms = _imported_measure(args.people)
    finally:
        _database_drop()

    print(f"merge: {merge_ms:.1f} ms per identify; link without a merge {link_ms:.2f}")
    print(f"new person: {new_ms:.2f} ms per identify; known person {known_ms:.2f}")
    print(f"imported person: {imported_ms:.2f} ms per identify")
    from bench.report import bench_row_write

    bench_row_write(
        name="imported-person-ms",
        figure=f"{imported_ms:.2f}",
        baseline=(
            f"an identify of a known person that changes a trait {known_ms:.2f} ms "
            f"({imported_ms / known_ms:.1f} x); {args.people:,} new userIds naming "
            "the addresses of imported profiles"
        ),
        command="python -m bench.merges",
    )

    bench_row_write(
        name="new-person-ms",
        figure=f"{new_ms:.2f}",
        baseline=(
            f"an identify of a known person that changes a trait {known_ms:.2f} ms "
            f"({new_ms / known_ms:.1f} x); {args.people:,} new people with an address"
        ),
        command="python -m bench.merges",
    )

    bench_row_write(
        name="merge-ms",
        figure=f"{merge_ms:.1f}",
        baseline=(
            f"an identify that links a new anonymousId and merges nothing "
            f"{link_ms:.2f} ms ({merge_ms / link_ms:.0f} x); {args.people:,} merges"
        ),
        command="python -m bench.merges",
    )


def _database_drop() -> None:
    from config.celery import app

    app.control.purge()
    database_drop(BENCH_DB)


def _django_setup() -> None:
    # Segment refreshes are queued on their own Redis database, purged after.
    django_setup(BENCH_DB, ALLOWED_HOSTS="testserver", CELERY_BROKER_URL=BROKER_URL)

    from profiles.models import WriteKey

    WriteKey.objects.create(name="bench", key=WRITE_KEY)


def _measure(people: int) -> tuple[float, float]:
    from unittest import mock

    from profiles.models import ProfileMerge

    start = datetime.now(tz=UTC) - timedelta(days=1)
    # Processing is run here and timed; nothing is queued for a worker.
    with mock.patch("profiles.ingestion.events_process_enqueue", return_value=None):
        _post(_known_people(people, start) + _browsing(people, start))
        _process()

        _post(_identifies(people, start, anonymous="link"))
        link = _process() / people
        _post(_identifies(people, start, anonymous="anon"))
        merge = _process() / people

    merges = ProfileMerge.objects.count()
    if merges != people:
        sys.exit(f"{merges} merges, not {people}")
    return merge * 1000, link * 1000


def _newcomers_measure(people: int) -> tuple[float, float]:
    from unittest import mock

    from profiles.models import Profile

    start = datetime.now(tz=UTC) - timedelta(hours=12)
    newcomers = _signed_in(
        people,
        start,
        user="new_",
        traits={"email": "new{n}@example.com", "plan": "pro"},
    )
    known = _signed_in(people, start, user="usr_", traits={"plan": "team"})
    with mock.patch("profiles.ingestion.events_process_enqueue", return_value=None):
        _post(newcomers)
        new = _process() / people
        _post(known)
        again = _process() / people

    made = Profile.objects.filter(email__startswith="new").count()
    if made != people:
        sys.exit(f"{made} new profiles with an address, not {people}")
    return new * 1000, again * 1000


def _imported_measure(people: int) -> float:
    from unittest import mock

    from profiles.models import Profile, ProfileIdentity

    # Made as an import makes them: an address and a name, no ids.
    Profile.objects.bulk_create(
        Profile(email=f"customer{n}@example.com", first_name="Cy")
        for n in range(people)
    )
    start = datetime.now(tz=UTC) - timedelta(hours=6)
    sign_ins = _signed_in(
        people,
        start,
        user="cus_",
        traits={"email": "Customer{n}@example.com", "plan": "pro"},
    )
    with mock.patch("profiles.ingestion.events_process_enqueue", return_value=None):
        _post(sign_ins)
        seconds = _process() / people

    joined = ProfileIdentity.objects.filter(
        value__startswith="cus_", profile__email__startswith="customer"
    ).count()
    if joined != people:
        sys.exit(f"{joined} sign-ins joined an imported profile, not {people}")
    return seconds * 1000


def _signed_in(
    people: int, start: datetime, *, user: str, traits: dict[str, str]
) -> list[dict[str, Any]]:
    """One identify for each person: userId `user` and n, traits with {n} filled."""
    return [
        {
            "type": "identify",
            "userId": f"{user}{n}",
            "messageId": f"{user}identify-{n}",
            "timestamp": start.isoformat(),
            "traits": {
                name: value.format(n=n)
                for name, value in {**traits, "plan": "pro"}.items()
            },
        }
        for n in range(people)
    ]


def _known_people(people: int, start: datetime) -> list[dict[str, Any]]:
    return [
        {
            "type": "identify",
            "userId": f"usr_{n}",
            "messageId": f"known-{n}",
            "timestamp": start.isoformat(),
            "traits": {"email": f"person{n}@example.com", "firstName": "Ana"},
        }
        for n in range(people)
    ]


def _browsing(people: int, start: datetime) -> list[dict[str, Any]]:
    return [
        {
            "type": "page",
            "anonymousId": f"anon-{n}",
            "messageId": f"page-{n}-{view}",
            "timestamp": (start + timedelta(minutes=view)).isoformat(),
            "properties": {"path": "/"},
        }
        for n in range(people)
        for view in range(PAGE_VIEWS)
    ]


def _identifies(people: int, start: datetime, *, anonymous: str) -> list[dict]:
    return [
        {
            "type": "identify",
            "userId": f"usr_{n}",
            "anonymousId": f"{anonymous}-{n}",
            "messageId": f"{anonymous}-identify-{n}",
            "timestamp": (start + timedelta(hours=1)).isoformat(),
            "traits": {"plan": "pro"},
        }
        for n in range(people)
    ]


def _post(items: list[dict[str, Any]]) -> None:
    from django.test import Client

    client = Client()
    for first in range(0, len(items), BATCH_EVENTS):
        body = {"batch": items[first : first + BATCH_EVENTS], "writeKey": WRITE_KEY}
        response = client.post(
            "/v1/batch", data=json.dumps(body), content_type="application/json"
        )
        if response.status_code != 200 or response.json()["rejected"]:
            sys.exit(f"a batch was not taken whole: {response.content[:300]!r}")


def _process() -> float:
    from profiles.processing import events_process_pending

    started = time.perf_counter()
    while events_process_pending():
        pass
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
