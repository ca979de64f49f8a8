"""A date without a year (a birthday as Mailchimp exports it) is kept as --MM-DD.

The file's declared format says which comes first, the day or the month; a cell
that has only those two is read in that order, never guessed.
"""

import pytest

from profiles.importing.runs import contact_import_create, contact_import_run_stored
from profiles.models import ContactImport, Profile, TraitDefinition, TraitType
from profiles.traits import TraitInvalid, TraitRule, trait_coerce

BIRTHDAY = TraitRule("birthday", "date")


@pytest.mark.parametrize(
    ("raw", "date_format"),
    [
        ("07/14", "%m/%d/%Y"),
        ("14/07", "%d/%m/%Y"),
        ("14.07", "%d.%m.%Y"),
        ("14-07", "%d-%m-%Y"),
        ("07-14", "%Y-%m-%d"),
        (" 7/14 ", "%m/%d/%Y"),
        ("--07-14", ""),
        ("--07-14", "%d/%m/%Y"),
    ],
)
def test_a_day_and_month_are_read_in_the_declared_order(raw, date_format):
    assert trait_coerce(BIRTHDAY, raw, date_format=date_format) == "--07-14"


def test_the_twenty_ninth_of_february_is_a_birthday():
    assert trait_coerce(BIRTHDAY, "02/29", date_format="%m/%d/%Y") == "--02-29"


def test_a_full_date_in_the_declared_format_keeps_its_year():
    assert trait_coerce(BIRTHDAY, "07/14/1990", date_format="%m/%d/%Y") == "1990-07-14"


@pytest.mark.parametrize(
    ("raw", "date_format", "words"),
    [
        ("07/14", "", "is not a date in the format ISO 8601 (YYYY-MM-DD) (or --MM-DD"),
        (
            "07/14",
            "%d/%m/%Y",
            "in the format DD/MM/YYYY (or DD/MM without a year)",
        ),
        ("--02-30", "", "is not a date"),
        ("--13-01", "", "is not a date"),
    ],
)
def test_a_day_and_month_that_do_not_fit_are_refused_with_the_format(
    raw, date_format, words
):
    with pytest.raises(TraitInvalid) as caught:
        trait_coerce(BIRTHDAY, raw, date_format=date_format)
    assert caught.value.reason == "not_a_date"
    assert words in str(caught.value)


def test_a_date_and_time_needs_its_year():
    with pytest.raises(TraitInvalid) as caught:
        trait_coerce(TraitRule("signed_up_at", "datetime"), "--07-14")
    assert caught.value.reason == "not_a_date"


@pytest.mark.django_db
def test_mailchimps_birthday_column_goes_into_a_declared_date_trait(
    settings, tmp_path, load_fixture
):
    settings.VAR_DIR = tmp_path
    TraitDefinition.objects.create(name="birthday", type=TraitType.DATE)
    data = load_fixture("mailchimp/subscribed_members_export.csv")
    contact_import = contact_import_create(filename="subscribed.csv", data=data)
    # The layout's own column map, and the order Mailchimp writes a birthday in.
    ContactImport.objects.filter(pk=contact_import.pk).update(date_format="%m/%d/%Y")

    done = contact_import_run_stored(contact_import_id=contact_import.pk)

    assert done.error == ""
    ana = Profile.objects.get(email="ana.souza@example.com")
    assert ana.traits["birthday"] == "--07-14"
    ben = Profile.objects.get(email="ben.okafor@example.net")
    assert "birthday" not in ben.traits


@pytest.mark.django_db(databases=["default", "sqlite"])
@pytest.mark.parametrize("alias", ["default", "sqlite"])
def test_a_birthday_with_no_year_has_an_anniversary_and_no_age(alias, settings):
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    from django.utils import timezone

    from segments.compiler import rule_compile

    settings.BESPOKE_ACCOUNT_TIME_ZONE = "Europe/Paris"
    now = timezone.now()
    today = now.astimezone(ZoneInfo("Europe/Paris")).date()
    in_three_days = (today + timedelta(days=3)).strftime("--%m-%d")
    Profile.objects.using(alias).create(
        email="kim@example.com", traits={"birthday": in_three_days}
    )

    def selected(op: str, days: int) -> bool:
        rule = {"attribute": "traits.birthday", "op": op, "value": days}
        found = Profile.objects.using(alias).filter(rule_compile(rule, now=now))
        return found.exists()

    assert selected("anniversary_in_days", 3)
    assert not selected("anniversary_in_days", 2)
    assert not selected("within_last_days", 3650)
    assert not selected("more_than_days_ago", 1)


@pytest.mark.django_db(databases=["default", "sqlite"])
@pytest.mark.parametrize("alias", ["default", "sqlite"])
@pytest.mark.parametrize(
    ("today", "leap_day_found"),
    [("2026-02-28", True), ("2028-02-28", False), ("2028-02-29", True)],
)
def test_a_29th_of_february_has_its_anniversary_on_the_28th_in_other_years(
    alias, settings, today, leap_day_found
):
    from datetime import datetime

    from segments.compiler import rule_compile

    settings.BESPOKE_ACCOUNT_TIME_ZONE = "UTC"
    now = datetime.fromisoformat(f"{today}T12:00:00+00:00")
    Profile.objects.using(alias).create(
        email="leap@example.com",
        traits={"birthday": "--02-29", "married": "2000-02-29"},
        first_order_at=datetime.fromisoformat("2024-02-29T10:00:00+00:00"),
    )

    for rule in (
        {"attribute": "traits.birthday", "op": "anniversary_in_days", "value": 0},
        {"attribute": "traits.married", "op": "anniversary_in_days", "value": 0},
        {"metric": "first_order_at", "op": "anniversary_in_days", "value": 0},
    ):
        found = Profile.objects.using(alias).filter(rule_compile(rule, now=now))
        assert found.exists() == leap_day_found, rule
