"""Deterministic profiles and events for the segment benchmark, loaded with COPY.

Each profile gets a persona (dormant, email reader, browser, buyer, power buyer),
a level of activity with a long tail, a span of activity in the last 180 days
(some have lapsed, some are fading) and then its events; the profile's computed
traits (lifetime value, orders, last order, engagement, last open...) are derived
from those events plus an order history older than the window, so that rules on
traits and rules on behaviour describe the same people.

Profiles are written with COPY as they are generated. Events are spread over one
file per day and copied day after day, so that the event table is in arrival order
as in production: one profile's events are scattered over the table, not clustered.
"""

import json
import random
import tempfile
import time
from bisect import bisect_left
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path

import psycopg

SEED = 20251204
WINDOW_DAYS = 180
WINDOW_SECONDS = WINDOW_DAYS * 86_400
DAY_SECONDS = 86_400
COPY_CHUNK_BYTES = 1 << 20

# (country, share, city, time zone, currency); Europe is 31 of the 98 shares.
COUNTRIES = [
    ("US", 35, "Chicago", "America/Chicago", "USD"),
    ("CA", 5, "Toronto", "America/Toronto", "CAD"),
    ("MX", 2, "Monterrey", "America/Monterrey", "MXN"),
    ("BR", 5, "São Paulo", "America/Sao_Paulo", "BRL"),
    ("AR", 1, "Córdoba", "America/Argentina/Cordoba", "ARS"),
    ("GB", 8, "Leeds", "Europe/London", "GBP"),
    ("DE", 7, "Köln", "Europe/Berlin", "EUR"),
    ("FR", 6, "Lyon", "Europe/Paris", "EUR"),
    ("ES", 3, "Sevilla", "Europe/Madrid", "EUR"),
    ("IT", 3, "Torino", "Europe/Rome", "EUR"),
    ("NL", 2, "Utrecht", "Europe/Amsterdam", "EUR"),
    ("PL", 1, "Kraków", "Europe/Warsaw", "PLN"),
    ("SE", 1, "Göteborg", "Europe/Stockholm", "SEK"),
    ("JP", 4, "Osaka", "Asia/Tokyo", "JPY"),
    ("IN", 4, "Pune", "Asia/Kolkata", "INR"),
    ("SG", 1, "Singapore", "Asia/Singapore", "SGD"),
    ("AU", 4, "Perth", "Australia/Perth", "AUD"),
    ("NZ", 1, "Dunedin", "Pacific/Auckland", "NZD"),
    ("ZA", 2, "Durban", "Africa/Johannesburg", "ZAR"),
    ("NG", 1, "Lagos", "Africa/Lagos", "NGN"),
    ("", 2, "", "", "USD"),  # country unknown
]
FIRST_NAMES = [
    "Ana",
    "Ben",
    "Chloé",
    "Dmitri",
    "Emma",
    "Kenji",
    "Łukasz",
    "Priya",
    "Zoë",
]
LAST_NAMES = ["Souza", "Okafor", "Dubois", "Volkov", "Davis", "Sato", "Nowak", "Iyer"]
CATEGORIES = ["Daypacks", "Tents", "Boots", "Jackets", "Stoves", "Maps", "Socks"]
PAGES = [
    ("Home", "/"),
    ("Journal", "/journal"),
    ("Stores", "/stores"),
    ("Help", "/help"),
]
TAGS = ["VIP", "Newsletter", "Wholesale", "Spring Sale 2025", "Club"]
TIERS = ["bronze", "bronze", "bronze", "silver", "silver", "gold"]
CAMPAIGNS = 120
PRODUCTS = 2_000

VIEWED, ADDED, ORDERED = "Product Viewed", "Product Added", "Order Completed"
OPENED, CLICKED, PAGE = "Email Opened", "Email Link Clicked", "page"
KINDS = [VIEWED, ADDED, ORDERED, OPENED, CLICKED, PAGE]

# persona: (share %, activity factor, event mix in KINDS order, % with older orders)
PERSONAS = {
    "dormant": (14, 0.0, (0, 0, 0, 0, 0, 0), 30),
    "reader": (22, 0.8, (8, 1, 1, 70, 15, 5), 40),
    "browser": (36, 1.2, (78, 8, 0, 4, 1, 9), 15),
    "buyer": (27, 1.1, (62, 12, 6, 11, 3, 6), 80),
    "power": (1, 3.0, (45, 15, 25, 10, 3, 2), 100),
}
PROFILE_COLUMNS = (
    "id, email, email_display, first_name, last_name, phone, city, region, "
    "country_code, timezone, traits, subscription_status, subscription_changed_at, "
    "suppressed_at, lifetime_value, order_count, first_order_at, last_order_at, "
    "last_seen_at, average_order_value, last_opened_at, last_clicked_at, "
    "engagement_score, favourite_category, created_at, updated_at"
)
EVENT_COLUMNS = (
    "message_id, type, event, name, user_id, anonymous_id, previous_id, group_id, "
    "properties, traits, context, integrations, source, timestamp, received_at, "
    "processed_at, profile_id, processing_error"
)
NULL = "\\N"


@dataclass
class Activity:
    """What one profile did in the window, summed up for its computed traits."""

    orders: list = field(default_factory=list)  # (offset, total)
    last_seen: int = -1
    last_opened: int = -1
    last_clicked: int = -1
    recent_points: int = 0
    categories: dict = field(default_factory=dict)


class Clock:
    """Turns a second offset from the window's start into COPY timestamp text, fast."""

    def __init__(self, now: datetime) -> None:
        self.start = now - timedelta(days=WINDOW_DAYS)
        midnight = self.start.replace(hour=0, minute=0, second=0, microsecond=0)
        self.shift = int((self.start - midnight).total_seconds())
        self.days = [
            f"{(midnight + timedelta(days=d)).date().isoformat()} "
            for d in range(WINDOW_DAYS + 2)
        ]
        self.hms = [
            f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+00"
            for s in range(DAY_SECONDS)
        ]

    def text(self, offset: int) -> str:
        moment = offset + self.shift
        return self.days[moment // DAY_SECONDS] + self.hms[moment % DAY_SECONDS]

    def day(self, offset: int) -> int:
        return (offset + self.shift) // DAY_SECONDS

    def before(self, seconds_before_start: int) -> str:
        moment = self.start - timedelta(seconds=seconds_before_start)
        return moment.isoformat()


class Generator:
    """Deterministic rows for `profiles` profiles and exactly `events` events."""

    def __init__(self, *, profiles: int, events: int, now: datetime) -> None:
        self.rng = random.Random(SEED)
        self.profiles = profiles
        self.events = events
        self.clock = Clock(now)
        self.country_cum = list(accumulate(c[1] for c in COUNTRIES))
        self.persona_names = list(PERSONAS)
        self.persona_cum = list(accumulate(p[0] for p in PERSONAS.values()))
        self.kind_cum = {
            name: list(accumulate(p[2])) for name, p in PERSONAS.items() if p[1]
        }
        self.catalog = [
            (f"P{n:04d}", CATEGORIES[n % len(CATEGORIES)], round(8 + (n * 37 % 290), 2))
            for n in range(PRODUCTS)
        ]
        self.product_json = [
            f'"product_id": "{p}", "category": "{c}", "price": {price}'
            for p, c, price in self.catalog
        ]
        self.tag_lines: list[str] = []

    # Plan: persona and number of events per profile ---------------------------

    def plan(self) -> tuple[list[str], list[int]]:
        """Return each profile's persona and event count, summing to `events`."""
        rng = self.rng
        personas, weights = [], []
        for _ in range(self.profiles):
            name = self.persona_names[
                bisect_left(self.persona_cum, rng.random() * self.persona_cum[-1])
            ]
            personas.append(name)
            # Long tail: most people do a little, a few do a great deal.
            factor = PERSONAS[name][1]
            weights.append(factor * rng.lognormvariate(0, 1.0) if factor else 0.0)

        scale = self.events / sum(weights)
        counts = [int(w * scale) for w in weights]
        active = [i for i, w in enumerate(weights) if w]
        for i in rng.sample(active, self.events - sum(counts)):
            counts[i] += 1
        return personas, counts

    # One profile --------------------------------------------------------------

    def profile(self, pid: int, persona: str, count: int, buckets: list) -> str:
        """Write the profile's events into day buckets; return its COPY line."""
        rng = self.rng
        country, _, city, zone, currency = COUNTRIES[
            bisect_left(self.country_cum, rng.random() * self.country_cum[-1])
        ]
        # 15% arrived during the window; their events start when they did.
        created = rng.randrange(WINDOW_SECONDS) if rng.random() < 0.15 else None
        begin = created or 0
        activity = Activity()
        if count:
            self.events_write(pid, persona, count, begin, currency, activity, buckets)
        return self.profile_line(pid, persona, country, city, zone, created, activity)

    def events_write(
        self,
        pid: int,
        persona: str,
        count: int,
        begin: int,
        currency: str,
        activity: Activity,
        buckets: list,
    ) -> None:
        rng = self.rng
        clock = self.clock
        end = WINDOW_SECONDS - 1
        shape = rng.random()
        if shape < 0.15:  # lapsed: stopped some time ago
            end = begin + int((end - begin) * rng.random() ** 0.5)
        span = max(end - begin, 1)
        fading = 0.15 <= shape < 0.40  # more activity early in the span than late
        recent_from = WINDOW_SECONDS - 30 * DAY_SECONDS

        kinds = rng.choices(KINDS, cum_weights=self.kind_cum[persona], k=count)
        for n, kind in enumerate(kinds):
            u = rng.random()
            offset = begin + int(span * ((1 - u**0.5) if fading else u))
            props, typ, name = self.properties(kind, currency, activity, offset)
            stamp = clock.text(offset)
            event = "" if typ == "page" else kind
            buckets[clock.day(offset)].write(
                f"m{pid}.{n}\t{typ}\t{event}\t{name}\tu{pid}\t\t\t\t{props}\t{{}}\t{{}}"
                f"\t{{}}\tbench\t{stamp}\t{stamp}\t{stamp}\t{pid}\t\n"
            )
            if offset > activity.last_seen:
                activity.last_seen = offset
            if offset >= recent_from:
                activity.recent_points += _POINTS[kind]

    def properties(
        self, kind: str, currency: str, activity: Activity, offset: int
    ) -> tuple[str, str, str]:
        rng = self.rng
        if kind in (VIEWED, ADDED):
            item = rng.randrange(PRODUCTS)
            category = self.catalog[item][1]
            activity.categories[category] = activity.categories.get(category, 0) + 1
            extra = ', "quantity": 1' if kind == ADDED else ""
            return "{" + self.product_json[item] + extra + "}", "track", ""
        if kind == ORDERED:
            return self.order(currency, activity, offset), "track", ""
        if kind == OPENED:
            campaign = rng.randrange(1, CAMPAIGNS + 1)
            if rng.random() < 0.04:  # Apple Mail privacy protection and the like
                return (
                    f'{{"campaign_id": "{campaign}", "machine_open": true}}',
                    "track",
                    "",
                )
            activity.last_opened = max(activity.last_opened, offset)
            return f'{{"campaign_id": "{campaign}"}}', "track", ""
        if kind == CLICKED:
            campaign = rng.randrange(1, CAMPAIGNS + 1)
            activity.last_clicked = max(activity.last_clicked, offset)
            return (
                f'{{"campaign_id": "{campaign}", '
                f'"url": "https://shop.example.com/c/{campaign}"}}',
                "track",
                "",
            )
        title, path = PAGES[rng.randrange(len(PAGES))]
        return f'{{"path": "{path}", "title": "{title}"}}', "page", title

    def order(self, currency: str, activity: Activity, offset: int) -> str:
        rng = self.rng
        items = [rng.randrange(PRODUCTS) for _ in range(1 + int(rng.random() ** 3 * 4))]
        total = round(sum(self.catalog[i][2] for i in items) + 4.95, 2)
        activity.orders.append((offset, total))
        # Some shops send the total as text: rules must read both.
        total_json = f'"{total:.2f}"' if rng.random() < 0.05 else f"{total:.2f}"
        products = ", ".join("{" + self.product_json[i] + "}" for i in items)
        return (
            f'{{"order_id": "O{rng.randrange(10**9)}", "total": {total_json}, '
            f'"currency": "{currency}", "products": [{products}]}}'
        )

    def profile_line(
        self,
        pid: int,
        persona: str,
        country: str,
        city: str,
        zone: str,
        created: int | None,
        activity: Activity,
    ) -> str:
        rng = self.rng
        clock = self.clock
        old_orders = 0
        old_value = 0.0
        if rng.random() * 100 < PERSONAS[persona][3]:
            old_orders = 1 + int(rng.paretovariate(1.6)) if created is None else 0
            old_value = sum(rng.lognormvariate(4.2, 0.8) for _ in range(old_orders))
        orders = activity.orders
        value = round(old_value + sum(t for _, t in orders), 2)
        order_count = old_orders + len(orders)
        last_old = rng.randrange(1, 900 * DAY_SECONDS)
        first_old = last_old + rng.randrange(0, 400 * DAY_SECONDS)
        if orders:
            first_order = (
                clock.before(first_old) if old_orders else clock.text(min(orders)[0])
            )
            last_order = clock.text(max(orders)[0])
        elif old_orders:
            first_order, last_order = clock.before(first_old), clock.before(last_old)
        else:
            first_order = last_order = NULL
        average = f"{value / order_count:.2f}" if order_count else NULL

        created_text = (
            clock.text(created)
            if created is not None
            else clock.before(rng.randrange(1, 1_100 * DAY_SECONDS))
        )
        status, suppressed = self.consent(rng)
        engagement = min(100, activity.recent_points + rng.randrange(0, 8))
        favourite = (
            max(activity.categories, key=activity.categories.get)
            if activity.categories
            else ""
        )
        email = f"person{pid}@example.com" if rng.random() > 0.04 else NULL
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        traits = self.traits(rng)
        self.tags(pid, rng)

        def when(offset: int) -> str:
            return clock.text(offset) if offset >= 0 else NULL

        return (
            "\t".join(
                (
                    str(pid),
                    email,
                    "" if email == NULL else email,
                    first,
                    last,
                    "",
                    city,
                    "",
                    country,
                    zone,
                    traits,
                    status,
                    created_text,
                    suppressed,
                    f"{value:.2f}",
                    str(order_count),
                    first_order,
                    last_order,
                    when(activity.last_seen),
                    average,
                    when(activity.last_opened),
                    when(activity.last_clicked),
                    str(engagement),
                    favourite,
                    created_text,
                    clock.text(WINDOW_SECONDS - 1),
                )
            )
            + "\n"
        )

    def consent(self, rng: random.Random) -> tuple[str, str]:
        roll = rng.random()
        if roll < 0.05:
            return "cleaned", self.clock.before(rng.randrange(1, 300 * DAY_SECONDS))
        status = (
            "subscribed"
            if roll < 0.72
            else "unsubscribed"
            if roll < 0.85
            else "not_subscribed"
        )
        suppressed = (
            self.clock.before(rng.randrange(1, 300 * DAY_SECONDS))
            if rng.random() < 0.01
            else NULL
        )
        return status, suppressed

    def traits(self, rng: random.Random) -> str:
        traits: dict = {}
        if rng.random() < 0.45:
            traits["tier"] = rng.choice(TIERS)
        if rng.random() < 0.35:
            points = rng.randrange(0, 20_000)
            # Imports send numbers as text; the API sends them as numbers.
            traits["loyalty_points"] = str(points) if rng.random() < 0.4 else points
        if rng.random() < 0.2:
            traits["birthday"] = (
                f"{rng.randrange(1950, 2006)}-{rng.randrange(1, 13):02d}-"
                f"{rng.randrange(1, 29):02d}"
            )
        if rng.random() < 0.1:
            traits["preferred_store"] = rng.choice(["Leeds", "Lyon", "Osaka", "Perth"])
        return json.dumps(traits, ensure_ascii=False)

    def tags(self, pid: int, rng: random.Random) -> None:
        if rng.random() < 0.2:
            for name in rng.sample(TAGS, 1 + int(rng.random() ** 2 * 3)):
                self.tag_lines.append(f"{pid}\t{name}\n")


_POINTS = {VIEWED: 5, ADDED: 10, ORDERED: 40, OPENED: 12, CLICKED: 20, PAGE: 2}


def data_load(
    url: str, *, profiles: int, events: int, now: datetime, log=print
) -> dict:
    """Generate and COPY the rows into a migrated database at `url`; ANALYZE; return sizes."""
    generator = Generator(profiles=profiles, events=events, now=now)
    started = time.perf_counter()
    personas, counts = generator.plan()

    with tempfile.TemporaryDirectory(prefix="bespoke-segments-") as tmp:
        paths = [Path(tmp) / f"day{d:03d}.tsv" for d in range(WINDOW_DAYS + 2)]
        buckets = [
            path.open("w", encoding="utf-8", buffering=1 << 20) for path in paths
        ]
        with psycopg.connect(url) as conn:
            with (
                conn.cursor() as cursor,
                cursor.copy(
                    f"COPY profiles_profile ({PROFILE_COLUMNS}) FROM STDIN"
                ) as copy,
            ):
                for pid in range(1, profiles + 1):
                    copy.write(
                        generator.profile(
                            pid, personas[pid - 1], counts[pid - 1], buckets
                        )
                    )
            for bucket in buckets:
                bucket.close()
            log(
                f"profiles generated and copied in {time.perf_counter() - started:.0f} s"
            )

            with (
                conn.cursor() as cursor,
                cursor.copy(
                    "COPY profiles_profiletag (profile_id, name) FROM STDIN"
                ) as copy,
            ):
                copy.write("".join(generator.tag_lines))
            conn.execute(
                "SELECT setval(pg_get_serial_sequence('profiles_profile', 'id'), %s)",
                [profiles],
            )
            conn.commit()

            copied = time.perf_counter()
            with _without_secondary_indexes(conn, "profiles_event", log):
                with (
                    conn.cursor() as cursor,
                    cursor.copy(
                        f"COPY profiles_event ({EVENT_COLUMNS}) FROM STDIN"
                    ) as copy,
                ):
                    for path in paths:
                        with path.open("rb") as handle:
                            while chunk := handle.read(COPY_CHUNK_BYTES):
                                copy.write(chunk)
                log(f"events copied in {time.perf_counter() - copied:.0f} s")
            conn.commit()
            log(f"events copied and indexed in {time.perf_counter() - copied:.0f} s")

    with psycopg.connect(url, autocommit=True) as conn:
        analyzed = time.perf_counter()
        conn.execute(
            "VACUUM (ANALYZE) profiles_profile, profiles_event, profiles_profiletag"
        )
        log(f"vacuum analyze in {time.perf_counter() - analyzed:.0f} s")
    return {
        "profiles": profiles,
        "events": events,
        "tags": len(generator.tag_lines),
        "seconds": round(time.perf_counter() - started, 1),
    }


@contextmanager
def _without_secondary_indexes(
    conn: psycopg.Connection, table: str, log
) -> Iterator[None]:
    """Drop a table's keys and indexes (not its primary key) and build them again after.

    Building an index once over ten million rows is many times faster than growing
    it row by row; the same definitions, under the same names, are restored, so the
    table is exactly the migrated one. All of it happens in the caller's transaction.
    """
    constraints = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype IN ('u', 'f')",
        [table],
    ).fetchall()
    indexes = conn.execute(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
        "WHERE indrelid = %s::regclass AND NOT indisprimary AND indexrelid NOT IN "
        "(SELECT conindid FROM pg_constraint WHERE conrelid = %s::regclass)",
        [table, table],
    ).fetchall()
    for name, _ in constraints:
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")

    yield

    started = time.perf_counter()
    conn.execute("SET LOCAL maintenance_work_mem = '1GB'")
    for _, definition in indexes:
        conn.execute(definition)
    for name, definition in constraints:
        conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    log(f"{table}: keys and indexes rebuilt in {time.perf_counter() - started:.0f} s")


def now_default() -> datetime:
    """Return the present, to the second, as the window's end."""
    return datetime.now(tz=UTC).replace(microsecond=0)
