"""Undated consent from a list never outranks a dated fact, and never re-dates one."""

import csv
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from profiles.importing import (
    contact_import_create,
    contact_import_file,
    contact_import_map,
    contact_import_run_stored,
    runs,
)
from profiles.importing.layouts import layout_column_map, layout_detect
from profiles.models import (
    ConsentRecord,
    ContactImport,
    Profile,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from profiles.services import consent_record, suppression_hash
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db

SUBSCRIBED_IN_2024 = datetime(2024, 7, 4, 9, 30, tzinfo=UTC)


def export_with_column(data: bytes, *, target: str, words) -> ContactImport:
    """Import an export with a column "Flag" added, mapped to `target`.

    `words(row)` is the column's cell in each data row (0 is the first).
    """
    lines = data.decode("utf-8-sig").splitlines()
    rows = [line for line in lines[1:] if line]
    text = "\n".join(
        [lines[0] + ",Flag", *(f"{line},{words(n)}" for n, line in enumerate(rows))]
    )
    header = next(csv.reader([lines[0] + ",Flag"]))
    contact_import = contact_import_create(filename="flag.csv", data=text.encode())
    column_map = layout_column_map(layout_detect(header), header) | {"Flag": target}
    contact_import_map(
        contact_import_id=contact_import.pk, column_map=column_map, date_format=""
    )
    contact_import_run_stored(contact_import_id=contact_import.pk)
    contact_import.refresh_from_db()
    return contact_import


@pytest.fixture(params=["orm", "copy"])
def write_path(request, monkeypatch):
    """Both ways of writing a batch must decide consent the same way."""
    monkeypatch.setattr(runs, "COPY_MIN_ROWS", 0 if request.param == "copy" else 10**9)
    return request.param


def listed_as_subscribed(*emails: str) -> None:
    rows = "".join(f"{email},subscribed\n" for email in emails)
    contact_import_file(filename="list.csv", data=f"Email,Status\n{rows}".encode())


def test_an_undated_subscribe_leaves_a_dated_one_as_it_was(write_path):
    noah = ProfileFactory(
        email="noah@example.com",
        subscription_status=SubscriptionStatus.SUBSCRIBED,
        subscription_changed_at=SUBSCRIBED_IN_2024,
    )

    listed_as_subscribed("noah@example.com")

    noah.refresh_from_db()
    assert noah.subscription_changed_at == SUBSCRIBED_IN_2024
    assert not noah.consent_records.exists()  # it told us nothing new

    # An unsubscribe that happened yesterday, arriving after the import, wins.
    yesterday = timezone.now() - timedelta(days=1)
    consent_record(
        profile=noah,
        status=SubscriptionStatus.UNSUBSCRIBED,
        source="shopify",
        occurred_at=yesterday,
    )
    noah.refresh_from_db()
    assert noah.subscription_status == SubscriptionStatus.UNSUBSCRIBED


def test_an_undated_subscribe_is_recorded_undated_and_a_later_dated_fact_wins(
    write_path,
):
    listed_as_subscribed("emma@example.com")

    emma = Profile.objects.get(email="emma@example.com")
    assert emma.subscription_status == SubscriptionStatus.SUBSCRIBED
    assert emma.subscription_changed_at is None
    record = ConsentRecord.objects.get(profile=emma)
    assert record.evidence["occurred_at_is_import_time"] is True

    earlier_today = timezone.now() - timedelta(hours=6)
    consent_record(
        profile=emma,
        status=SubscriptionStatus.UNSUBSCRIBED,
        source="shopify",
        occurred_at=earlier_today,
    )
    emma.refresh_from_db()
    assert emma.subscription_status == SubscriptionStatus.UNSUBSCRIBED


UNSUBSCRIBED_IN_JANUARY = (
    b"Email Address,MEMBER_RATING,OPTIN_TIME,UNSUB_TIME,LEID\n"
    b"zoe@example.com,2,2024-06-01 10:00:00,2025-01-15 00:00:00,1\n"
)


def test_an_older_unsubscribe_imported_after_a_newer_list_subscription_wins(
    write_path,
):
    """Lists imported newest first decide as they would oldest first."""
    contact_import_file(
        filename="march.csv",
        data=b"Email Address,MEMBER_RATING,OPTIN_TIME,LAST_CHANGED,LEID\n"
        b"zoe@example.com,2,2025-03-01 10:00:00,2025-03-01 10:00:00,1\n",
    )
    zoe = Profile.objects.get(email="zoe@example.com")
    assert zoe.subscription_status == SubscriptionStatus.SUBSCRIBED

    contact_import_file(
        filename="january.csv",
        data=UNSUBSCRIBED_IN_JANUARY,
    )

    zoe.refresh_from_db()
    assert zoe.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert zoe.subscription_changed_at == datetime(2025, 1, 15, tzinfo=UTC)


def test_the_persons_own_later_subscription_outranks_an_older_imported_unsubscribe(
    write_path,
):
    zoe = ProfileFactory(email="zoe@example.com")
    consent_record(
        profile=zoe,
        status=SubscriptionStatus.SUBSCRIBED,
        source="form",
        occurred_at=datetime(2025, 3, 1, tzinfo=UTC),
    )

    contact_import_file(
        filename="january.csv",
        data=UNSUBSCRIBED_IN_JANUARY,
    )

    zoe.refresh_from_db()
    assert zoe.subscription_status == SubscriptionStatus.SUBSCRIBED
    assert zoe.subscription_changed_at == datetime(2025, 3, 1, tzinfo=UTC)


def test_an_undated_unsubscribe_is_dated_by_the_import_and_applies(write_path):
    ProfileFactory(
        email="ivy@example.com",
        subscription_status=SubscriptionStatus.SUBSCRIBED,
        subscription_changed_at=SUBSCRIBED_IN_2024,
    )
    before = timezone.now()

    contact_import_file(
        filename="left.csv", data=b"Email,Status\nivy@example.com,unsubscribed\n"
    )

    ivy = Profile.objects.get(email="ivy@example.com")
    assert ivy.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert ivy.subscription_changed_at >= before


def test_the_profile_page_marks_an_undated_fact(client, marketer):
    from django.urls import reverse

    listed_as_subscribed("una@example.com")
    una = Profile.objects.get(email="una@example.com")
    client.force_login(marketer)

    page = client.get(reverse("profile_detail", kwargs={"pk": una.pk})).content.decode()

    assert "undated in the file: the time it was imported" in page


def test_an_unsubscribed_column_is_read_as_one_and_a_yes_wins_over_status():
    data = (
        b"Email,Status,Unsubscribed\n"
        b"r1@example.com,subscribed,yes\n"
        b"r2@example.com,subscribed,no\n"
        b"r3@example.com,,yes\n"
    )

    contact_import = contact_import_file(filename="left.csv", data=data)

    statuses = dict(Profile.objects.values_list("email", "subscription_status"))
    assert statuses == {
        "r1@example.com": SubscriptionStatus.UNSUBSCRIBED,
        "r2@example.com": SubscriptionStatus.SUBSCRIBED,
        "r3@example.com": SubscriptionStatus.UNSUBSCRIBED,
    }
    assert contact_import.rejected == 0
    assert not Profile.objects.filter(traits__has_key="unsubscribed").exists()


def test_a_column_named_like_a_flag_bespoke_sets_is_left_out():
    data = b"Email,email_needs_smtputf8\nflag@example.com,true\n"

    contact_import_file(filename="flag.csv", data=data)

    assert Profile.objects.get(email="flag@example.com").traits == {}


def test_the_suppression_list_says_why_each_address_is_on_it(write_path):
    data = (
        "Email,Email Marketing Consent\n"
        "sam@example.com,SUPPRESSED\n"
        "bo@example.com,BOUNCED\n"
        "cy@example.com,subscribed\n"
    )

    contact_import_file(filename="list.csv", data=data.encode())

    reasons = {
        suppression.email_hash: suppression.reason
        for suppression in Suppression.objects.all()
    }
    assert reasons == {
        suppression_hash("sam@example.com"): SuppressionReason.IMPORTED,
        suppression_hash("bo@example.com"): SuppressionReason.HARD_BOUNCE,
    }
    assert Profile.objects.filter(suppressed_at__isnull=False).count() == 2


@pytest.mark.parametrize(
    "header", ["Unsubscribed,Subscribed", "Opted out,Subscribed", "Opt-out,Opt-in"]
)
def test_no_to_leaving_and_no_to_joining_is_no_consent(header):
    # given a file whose yes/no columns say someone neither left nor joined
    data = f"Email,{header}\nnew@example.com,no,no\n".encode()

    contact_import_file(filename="flags.csv", data=data)

    # then nobody is subscribed by it
    profile = Profile.objects.get()
    assert profile.subscription_status == SubscriptionStatus.NOT_SUBSCRIBED
    assert profile.consent_records.count() == 0


@pytest.mark.parametrize(
    ("export", "column", "word"),
    [
        ("mailchimp/unsubscribed_members_export.csv", "subscribed", "yes"),
        ("mailchimp/cleaned_members_export.csv", "unsubscribed", "no"),
        ("mailchimp/cleaned_members_export.csv", "status", "subscribed"),
    ],
)
def test_a_column_mapped_on_an_export_of_those_who_left_subscribes_nobody(
    load_fixture, export, column, word
):
    # given a Mailchimp export of people who left, with a column added that the
    # marketer maps to consent, saying they are subscribed
    contact_import = export_with_column(
        load_fixture(export), target=column, words=lambda _: word
    )

    # then everyone in it stays as the export says, and the report says why
    assert not Profile.objects.filter(
        subscription_status=SubscriptionStatus.SUBSCRIBED
    ).exists()
    assert any(
        "is not read as their consent" in note["message"]
        for note in contact_import.notes
    )


def test_a_subscribed_column_of_status_words_is_read_as_statuses():
    data = (
        b"Email,Subscribed\n"
        b"a@example.com,subscribed\n"
        b"b@example.com,unsubscribed\n"
        b"c@example.com,never subscribed\n"
    )

    contact_import = contact_import_file(filename="words.csv", data=data)

    statuses = dict(Profile.objects.values_list("email", "subscription_status"))
    assert statuses == {
        "a@example.com": SubscriptionStatus.SUBSCRIBED,
        "b@example.com": SubscriptionStatus.UNSUBSCRIBED,
        "c@example.com": SubscriptionStatus.NOT_SUBSCRIBED,
    }
    assert contact_import.rejected == 0


def test_an_unsubscribed_column_on_a_subscribed_export_leaves_the_rest_subscribed(
    load_fixture,
):
    # given Mailchimp's subscribed export with an Unsubscribed column added and
    # mapped: yes on the first row, no on the others
    export_with_column(
        load_fixture("mailchimp/subscribed_members_export.csv"),
        target="unsubscribed",
        words=lambda row: "yes" if row == 0 else "no",
    )

    # then the first row left, and "no" keeps the export's subscription
    statuses = Counter(Profile.objects.values_list("subscription_status", flat=True))
    assert statuses[SubscriptionStatus.UNSUBSCRIBED] == 1
    assert statuses[SubscriptionStatus.SUBSCRIBED] >= 30


def test_only_brevos_blacklist_column_says_no_means_subscribed():
    # given a CRM file that looks like a Brevo export (Opt-in, Added Time) with an
    # Unsubscribed column of its own
    data = b"Email,Opt-in,Added Time,Unsubscribed\ncrm1@example.com,no,2024-01-01,no\n"

    contact_import_file(filename="crm.csv", data=data)

    profile = Profile.objects.get()
    assert profile.subscription_status == SubscriptionStatus.NOT_SUBSCRIBED


def test_an_opt_in_word_that_is_not_yes_or_no_imports_the_contact_without_consent():
    data = (
        b"Email,Accepts Email Marketing\n"
        b"a@example.com,pending\nb@example.com,N/A\nc@example.com,yes\n"
    )

    contact_import = contact_import_file(filename="shop.csv", data=data)

    statuses = dict(Profile.objects.values_list("email", "subscription_status"))
    assert statuses == {
        "a@example.com": SubscriptionStatus.NOT_SUBSCRIBED,
        "b@example.com": SubscriptionStatus.NOT_SUBSCRIBED,
        "c@example.com": SubscriptionStatus.SUBSCRIBED,
    }
    assert contact_import.rejected == 0
    assert [n["message"] for n in contact_import.notes][:1] == [
        "Record 1: Accepts Email Marketing 'pending' was not imported (not yes, no "
        "or a status: no consent)."
    ]


def test_suppressed_in_an_opt_in_column_is_read_and_noted_as_in_a_status_column():
    data = b"Email,Subscribed\nsup@example.com,suppressed\n"

    contact_import = contact_import_file(filename="words.csv", data=data)

    profile = Profile.objects.get()
    assert profile.subscription_status == SubscriptionStatus.CLEANED
    listed = Suppression.objects.get(email_hash=suppression_hash("sup@example.com"))
    assert listed.reason == SuppressionReason.IMPORTED
    assert [n["kind"] for n in contact_import.notes] == ["suppressed_as_cleaned"]


def test_never_subscribed_in_a_list_leaves_a_subscription_on_record(write_path):
    chloe = ProfileFactory(email="chloe@example.com")
    consent_record(
        profile=chloe,
        status=SubscriptionStatus.SUBSCRIBED,
        source="shopify",
        occurred_at=SUBSCRIBED_IN_2024,
    )

    contact_import = contact_import_file(
        filename="klaviyo.csv",
        data=b"Email,Status\nchloe@example.com,never subscribed\n",
    )

    chloe.refresh_from_db()
    assert chloe.subscription_status == SubscriptionStatus.SUBSCRIBED
    assert chloe.consent_records.count() == 1
    (note,) = [n for n in contact_import.notes if n["kind"] == "kept_status"]
    assert note["message"] == (
        'Record 1: chloe@example.com stays subscribed; a list\'s "never subscribed" '
        "does not undo a subscription on record."
    )


@pytest.mark.parametrize(
    "later", [{"dated": False}, {"occurred_at": datetime(2099, 1, 1, tzinfo=UTC)}]
)
def test_an_undated_or_future_subscription_does_not_outrank_an_older_unsubscribe(
    later,
):
    """Neither lifts a withdrawal had it come first, so neither outranks one now."""
    zoe = ProfileFactory(email="zoe@example.com")
    consent_record(
        profile=zoe,
        status=SubscriptionStatus.SUBSCRIBED,
        source="shopify",
        **{"occurred_at": timezone.now(), **later},
    )

    consent_record(
        profile=zoe,
        status=SubscriptionStatus.UNSUBSCRIBED,
        source="shopify",
        occurred_at=timezone.now() - timedelta(days=1),
    )

    zoe.refresh_from_db()
    assert zoe.subscription_status == SubscriptionStatus.UNSUBSCRIBED


def test_an_older_subscription_arriving_after_never_subscribed_in_a_list_counts(
    write_path,
):
    contact_import_file(
        filename="klaviyo.csv",
        data=b"Email,Email Marketing Consent,Email Marketing Consent Timestamp\n"
        b"kim@example.com,NEVER_SUBSCRIBED,2025-09-01 10:00:00\n",
    )
    kim = Profile.objects.get(email="kim@example.com")

    consent_record(
        profile=kim,
        status=SubscriptionStatus.SUBSCRIBED,
        source="shopify",
        occurred_at=datetime(2025, 6, 1, 10, tzinfo=UTC),
    )

    kim.refresh_from_db()
    assert kim.subscription_status == SubscriptionStatus.SUBSCRIBED
