"""The COPY path on PostgreSQL writes exactly what the reference ORM path writes."""

import csv
import io
import random
from datetime import UTC, datetime

import pytest
import time_machine

from profiles.importing import contact_import_file, copying, runs
from profiles.models import (
    ConsentRecord,
    ContactImport,
    Profile,
    ProfileTag,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
    TraitDefinition,
    TraitType,
)
from profiles.services import suppression_hash

MAILCHIMP = [
    "mailchimp/subscribed_members_export.csv",
    "mailchimp/unsubscribed_members_export.csv",
    "mailchimp/cleaned_members_export.csv",
]
HEADER = ["email", "first_name", "last_name", "city", "country", "tags", "status"]
HEADER += ["orders"]
LONG_TAG = "T" * 120
# COPY's text format escapes backslash and tab (a tag reads its tab as a space).
TAG_NAMES = ["VIP", "Club, Lyon", LONG_TAG, "back\\slash\tand tab"]
PROFILE_READ = (
    "email",
    "email_display",
    "first_name",
    "last_name",
    "phone",
    "city",
    "region",
    "country_code",
    "timezone",
    "traits",
    "subscription_status",
    "subscription_changed_at",
    "suppressed_at",
    "created_at",
    "updated_at",
)


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def generated_file(count: int, *, seed: int) -> bytes:
    """Return a generic CSV with every kind of row the importer treats differently."""
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    for number in range(count):
        writer.writerow(_generated_row(rng, number))
    return out.getvalue().encode()


def _generated_row(rng: random.Random, number: int) -> list[str]:
    person = number % 150  # each person comes four times, in any of these forms
    email = rng.choice(
        [
            f"person{person}@example.com",
            f"Person{person}@EXAMPLE.com",
            f" person{person}+news@example.net ",
            f"person{person}@bücher.example.com",
            f"josé{person}@example.org",
            "not-an-email",
            f"person{person}@@example.com",
            "",
        ]
    )
    tags = ",".join(f'"{t}"' for t in rng.sample(TAG_NAMES, 2))
    return [
        email,
        rng.choice(["Ana", "Chloé", ""]),
        rng.choice(["Souza", "", "Dubois"]),
        rng.choice(["Köln", "", "Lyon"]),
        rng.choice(["FR", "DE", "Germany", ""]),
        rng.choice([tags, "", '"VIP"']),
        rng.choice(["subscribed", "unsubscribed", "cleaned", "", "subscribed"]),
        rng.choice(["3", "", "12.5", "lots", "-1"]),
    ]


def stored_people_create() -> None:
    """Give both runs the same people on record before the first file."""
    TraitDefinition.objects.create(name="orders", type=TraitType.NUMBER, minimum=0)
    kept = Profile.objects.create(
        email="Person7@Example.com",
        email_display="Person7@Example.com",
        first_name="Old",
        city="Paris",
        traits={"vip_since": "2020", "orders": 9},
        subscription_status=SubscriptionStatus.UNSUBSCRIBED,
        subscription_changed_at=datetime(2020, 1, 1, tzinfo=UTC),
    )
    ProfileTag.objects.create(profile=kept, name="VIP")
    Suppression.objects.create(
        email_hash=suppression_hash("ben.okafor+news@example.net"),
        reason=SuppressionReason.ERASURE,
        source="privacy_request",
    )


def files(load_fixture) -> list[tuple[str, bytes]]:
    generated = generated_file(600, seed=7)
    listed = [(name.rsplit("/", 1)[1], load_fixture(name)) for name in MAILCHIMP]
    # The second runs meet every stored profile: the UPDATE and tag merge paths.
    return [
        *listed,
        ("generated.csv", generated),
        ("generated-again.csv", generated_file(600, seed=8)),
        listed[0],
        ("generated.csv", generated),
    ]


def profile_columns() -> list[str]:
    return [
        field.attname for field in Profile._meta.concrete_fields if field.name != "id"
    ]


def snapshot() -> dict[str, list[tuple]]:
    """Return every row an import writes, keyed by address instead of by id."""
    profiles = Profile.objects.order_by("email").values_list(
        *PROFILE_READ,
        # And every other column, which an import leaves at its default.
        *(field for field in profile_columns() if field not in PROFILE_READ),
    )
    tags = ProfileTag.objects.order_by("profile__email", "name").values_list(
        "profile__email", "name"
    )
    consents = ConsentRecord.objects.order_by(
        "profile__email", "occurred_at", "status", "source", "id"
    ).values_list(
        "profile__email",
        "channel",
        "status",
        "source",
        "occurred_at",
        "ip_address",
        "wording",
        "evidence",
        "recorded_at",
    )
    suppressions = Suppression.objects.order_by("email_hash").values_list(
        "email_hash", "reason", "source", "created_at"
    )
    imports = ContactImport.objects.order_by("id").values_list(
        "filename",
        "status",
        "layout",
        "records",
        "accepted",
        "rejected",
        "duplicates_merged",
        "profiles_created",
        "profiles_updated",
        "rows_total",
        "rows_done",
        "rejections",
        "notes",
        "error",
    )
    # Each run's imports have their own ids: a record names its import by its
    # place among them.
    first_import = ContactImport.objects.order_by("id").values_list("id", flat=True)
    first = first_import.first() or 0
    consents = [
        (*row[:-2], {**row[-2], "import": row[-2]["import"] - first}, row[-1])
        for row in consents
    ]
    return {
        "profiles": list(profiles),
        "tags": list(tags),
        "consents": list(consents),
        "suppressions": list(suppressions),
        "imports": list(imports),
    }


def everything_delete() -> None:
    # The cascade removes tags and consent records with their profiles.
    Profile.objects.all().delete()
    Suppression.objects.all().delete()
    ContactImport.objects.all().delete()
    TraitDefinition.objects.all().delete()


def imports_run(monkeypatch, to_import, *, copy: bool) -> tuple[dict, list[int]]:
    """Import the files through one path at a frozen time; return what was written."""
    monkeypatch.setattr(runs, "COPY_MIN_ROWS", 0 if copy else 10**9)
    # Small batches, so that the files span several of them.
    monkeypatch.setattr(runs, "COPY_BATCH_SIZE", 64)
    monkeypatch.setattr(runs, "IMPORT_BATCH_SIZE", 64)
    real_copy = copying.contact_rows_copy
    copied: list[int] = []

    def counted_copy(rows, **kwargs):
        copied.append(len(rows))
        return real_copy(rows, **kwargs)

    monkeypatch.setattr(runs, "contact_rows_copy", counted_copy)
    with time_machine.travel(datetime(2025, 6, 1, 12, tzinfo=UTC), tick=False):
        stored_people_create()
        for filename, data in to_import:
            contact_import_file(filename=filename, data=data)
    return snapshot(), copied


@pytest.mark.django_db
def test_the_copy_path_writes_exactly_what_the_orm_path_writes(
    monkeypatch, load_fixture
):
    to_import = files(load_fixture)
    reference, not_copied = imports_run(monkeypatch, to_import, copy=False)
    everything_delete()

    written, copied = imports_run(monkeypatch, to_import, copy=True)

    assert not_copied == []
    assert len(copied) == 19
    assert written["imports"] == reference["imports"]
    assert written["profiles"] == reference["profiles"]
    assert written["tags"] == reference["tags"]
    assert written["consents"] == reference["consents"]
    assert written["suppressions"] == reference["suppressions"]


@pytest.mark.django_db
def test_the_compared_files_reach_every_rule(monkeypatch, load_fixture):
    written, _ = imports_run(monkeypatch, files(load_fixture), copy=True)

    statuses = {row[10] for row in written["profiles"]}
    assert statuses == {"subscribed", "unsubscribed", "cleaned", "not_subscribed"}
    kinds = {note["kind"] for row in written["imports"] for note in row[-2]}
    assert kinds == {"merged", "kept_status", "status_blank", "tag_cut"}
    reasons = {r["reason"] for row in written["imports"] for r in row[-3]}
    assert reasons == {
        "invalid_email",
        "missing_email",
        "erased",
        "below_minimum",
        "not_a_number",
    }
    assert ("Person7@Example.com", "VIP") in written["tags"]
    smtputf8 = [
        row[0] for row in written["profiles"] if "email_needs_smtputf8" in row[9]
    ]
    assert smtputf8 != []
    assert all(email.startswith("josé") for email in smtputf8)
    assert sum(row[8] for row in written["imports"]) > 0  # profiles updated
    assert len([t for t in written["tags"] if t[1] == LONG_TAG[:100]]) > 0
    assert len(written["suppressions"]) > 4
    # A tag is one line: its tab is a space.
    assert len([t for t in written["tags"] if t[1] == "back\\slash and tab"]) > 0


@pytest.mark.django_db
@pytest.mark.parametrize("copy", [False, True], ids=["orm", "copy"])
def test_an_import_marks_the_profiles_of_addresses_already_on_the_list(
    monkeypatch, copy
):
    # given a suppressed address no profile holds, and a profile whose listed
    # address was never marked (as before marks were kept in step)
    monkeypatch.setattr(runs, "COPY_MIN_ROWS", 0 if copy else 10**9)
    for key, reason in (
        ("emma@example.org", SuppressionReason.MANUAL),
        ("old@example.org", SuppressionReason.HARD_BOUNCE),
    ):
        Suppression.objects.create(
            email_hash=suppression_hash(key), reason=reason, source="test"
        )
    Profile.objects.create(email="old@example.org")

    # when a list names both as subscribed, beside someone not listed
    data = (
        b"email,first_name,status\n"
        b"Emma@Example.org,Emma,subscribed\n"
        b"old@example.org,Olga,subscribed\n"
        b"new@example.org,Nia,subscribed\n"
    )
    contact_import_file(filename="list.csv", data=data)

    # then the listed ones are marked, as segment rules and the preview read it
    marked = dict(Profile.objects.values_list("email", "suppressed_at"))
    assert marked["emma@example.org"] is not None
    assert marked["old@example.org"] is not None
    assert marked["new@example.org"] is None


@pytest.mark.django_db
@pytest.mark.parametrize("copy", [False, True], ids=["orm", "copy"])
def test_a_row_that_moves_the_person_without_a_region_clears_the_old_one(
    monkeypatch, copy
):
    # given people on record with a city and a region
    monkeypatch.setattr(runs, "COPY_MIN_ROWS", 0 if copy else 10**9)
    for email, city in (
        ("ana@example.org", "Springfield"),
        ("ben@example.org", "Springfield"),
        ("cy@example.org", "Springfield"),
        ("di@example.org", "Springfield"),
    ):
        Profile.objects.create(email=email, city=city, region="IL", country_code="US")

    # when a list moves Ana to Lyon, says Ben's city in another case, names Cy's
    # new region and gives Di no place at all
    data = (
        b"email,city,region,country\n"
        b"ana@example.org,Lyon,,FR\n"
        b"ben@example.org,SPRINGFIELD,,\n"
        b"cy@example.org,Portland,OR,\n"
        b"di@example.org,,,\n"
    )
    contact_import_file(filename="list.csv", data=data)

    # then only Ana's old region goes; a blank still erases nothing else
    places = {
        email: (city, region, country)
        for email, city, region, country in Profile.objects.values_list(
            "email", "city", "region", "country_code"
        )
    }
    assert places == {
        "ana@example.org": ("Lyon", "", "FR"),
        "ben@example.org": ("SPRINGFIELD", "IL", "US"),
        "cy@example.org": ("Portland", "OR", "US"),
        "di@example.org": ("Springfield", "IL", "US"),
    }


MAILCHIMP_HEADER = (
    b'"Email Address","First Name",OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,'
    b"LAST_CHANGED\n"
)


@pytest.mark.django_db
@pytest.mark.parametrize("copy", [False, True], ids=["orm", "copy"])
def test_a_refused_resubscription_leaves_no_opt_in_traits_behind(monkeypatch, copy):
    # given Grace, who unsubscribed
    monkeypatch.setattr(runs, "COPY_MIN_ROWS", 0 if copy else 10**9)
    Profile.objects.create(
        email="grace@example.com",
        traits={"optin_at": "2024-08-20T14:00:00+00:00"},
        subscription_status=SubscriptionStatus.UNSUBSCRIBED,
        subscription_changed_at=datetime(2025, 1, 15, tzinfo=UTC),
    )

    # when a subscribed export claims a newer opt-in for her and for someone new
    contact_import_file(
        filename="subscribed_members_export.csv",
        data=MAILCHIMP_HEADER
        + b'grace@example.com,Grace,"2026-06-01 10:00:00",192.0.2.1,'
        b'"2026-06-01 10:01:00",192.0.2.1,"2026-06-01 10:01:00"\n'
        b'nia@example.com,Nia,"2024-06-01 10:00:00",192.0.2.2,'
        b'"2024-06-01 10:01:00",192.0.2.2,"2024-06-01 10:01:00"\n',
    )

    # then Grace keeps her status and her old opt-in trait, with her new name
    grace = Profile.objects.get(email="grace@example.com")
    assert grace.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert grace.first_name == "Grace"
    assert grace.traits == {"optin_at": "2024-08-20T14:00:00+00:00"}
    nia = Profile.objects.get(email="nia@example.com")
    assert nia.traits["confirm_ip"] == "192.0.2.2"


@pytest.mark.django_db
@pytest.mark.parametrize("copy", [False, True], ids=["orm", "copy"])
def test_a_consent_dated_after_the_import_is_recorded_as_of_the_import(
    monkeypatch, copy
):
    monkeypatch.setattr(runs, "COPY_MIN_ROWS", 0 if copy else 10**9)

    with time_machine.travel(datetime(2025, 6, 1, 12, tzinfo=UTC), tick=False):
        done = contact_import_file(
            filename="subscribed_members_export.csv",
            data=MAILCHIMP_HEADER
            + b'zoe@example.com,Zoe,"2030-06-01 10:00:00",192.0.2.3,'
            b'"2030-06-01 10:01:00",192.0.2.3,"2030-06-01 10:01:00"\n',
        )

    record = ConsentRecord.objects.get()
    assert record.occurred_at == datetime(2025, 6, 1, 12, tzinfo=UTC)
    assert record.evidence["occurred_at_claimed"].startswith("2030-06-01T10:01:00")
    assert [note["kind"] for note in done.notes] == ["consent_time_future"]


@pytest.mark.django_db
@pytest.mark.parametrize("copy", [False, True], ids=["orm", "copy"])
def test_a_consent_dated_after_the_import_is_recorded_once_however_often_imported(
    monkeypatch, copy
):
    monkeypatch.setattr(runs, "COPY_MIN_ROWS", 0 if copy else 10**9)
    data = (
        MAILCHIMP_HEADER + b'zoe@example.com,Zoe,"2030-06-01 10:00:00",192.0.2.3,'
        b'"2030-06-01 10:01:00",192.0.2.3,"2030-06-01 10:01:00"\n'
    )
    first_at = datetime(2025, 6, 1, 12, tzinfo=UTC)
    with time_machine.travel(first_at, tick=False):
        contact_import_file(filename="subscribed_members_export.csv", data=data)

    with time_machine.travel(datetime(2025, 6, 2, 12, tzinfo=UTC), tick=False):
        again = contact_import_file(filename="subscribed_members_export.csv", data=data)
    # Once its date has come, the fact is the one on record too.
    with time_machine.travel(datetime(2031, 1, 1, tzinfo=UTC), tick=False):
        contact_import_file(filename="subscribed_members_export.csv", data=data)

    record = ConsentRecord.objects.get()
    assert record.occurred_at == first_at
    zoe = Profile.objects.get()
    assert zoe.subscription_changed_at == first_at
    (note,) = again.notes
    assert (note["kind"], note["record"], note["line"]) == ("consent_time_future", 1, 2)
    assert note["message"].startswith(
        "Record 1 (line 2): its consent is dated 2030-06-01T"
    )


@pytest.mark.django_db
@pytest.mark.parametrize("copy", [False, True], ids=["orm", "copy"])
def test_an_address_column_keeps_the_address_a_site_sent_in_parts(monkeypatch, copy):
    monkeypatch.setattr(runs, "COPY_MIN_ROWS", 0 if copy else 10**9)
    sent = {"street": "Storgata 1", "postalCode": "0155", "city": "Oslo"}
    Profile.objects.create(
        email="ann@example.com",
        email_display="ann@example.com",
        traits={"address": sent, "plan": "gold"},
    )
    Profile.objects.create(
        email="cal@example.com", email_display="cal@example.com", traits={}
    )

    done = contact_import_file(
        filename="crm.csv",
        data=b"Email,Address,Plan\n"
        b"ann@example.com,Karl Johans gate 2,silver\n"
        b"bob@example.com,Main Street 3,free\n"
        b"cal@example.com,Rue Neuve 4,free\n",
    )

    traits = dict(Profile.objects.values_list("email", "traits"))
    assert traits == {
        "ann@example.com": {"address": sent, "plan": "silver"},
        "bob@example.com": {"address": "Main Street 3", "plan": "free"},
        "cal@example.com": {"address": "Rue Neuve 4", "plan": "free"},
    }
    kept = [note for note in done.notes if note["kind"] == "structured_trait_kept"]
    assert kept == [
        {
            "kind": "structured_trait_kept",
            "record": 1,
            "line": 2,
            "email": "ann@example.com",
            "trait": "address",
            "message": (
                "Record 1 (line 2): address 'Karl Johans gate 2' was not imported: "
                "the profile holds address in parts, as a site sends an address "
                "(street, postal code, city...), which one text would replace; "
                "the parts are kept."
            ),
        }
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("copy", [False, True], ids=["orm", "copy"])
def test_a_bounce_outranks_an_unsubscribe_in_the_same_row(monkeypatch, copy):
    monkeypatch.setattr(runs, "COPY_MIN_ROWS", 0 if copy else 10**9)

    contact_import_file(
        filename="list.csv",
        data=b"Email,Status,Unsubscribed\n"
        b"clean@example.com,cleaned,yes\n"
        b"supp@example.com,suppressed,yes\n"
        b"left@example.com,subscribed,yes\n",
    )

    statuses = dict(Profile.objects.values_list("email", "subscription_status"))
    assert statuses == {
        "clean@example.com": SubscriptionStatus.CLEANED,
        "supp@example.com": SubscriptionStatus.CLEANED,
        "left@example.com": SubscriptionStatus.UNSUBSCRIBED,
    }
    assert Suppression.objects.count() == 2
