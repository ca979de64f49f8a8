"""Tags differing only in case are one tag: imports, merges and the people page agree.

Segment rules already compared tags whatever their case; now a profile cannot hold
"VIP" and "vip" side by side, and the tag filter lists one "VIP".
"""

import importlib

import pytest
from django.apps import apps as django_apps
from django.db import connection

from profiles.importing import contact_import_file, copying, mapping, reading, runs
from profiles.importing.reading import contacts_tags_split
from profiles.models import ImportStatus, Profile, ProfileTag
from profiles.names import tags_distinct
from profiles.services import profile_tags_add
from tests.factories import ProfileFactory


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


def tags_of(email: str) -> list[str]:
    profile = Profile.objects.get(email=email)
    return sorted(profile.tags.values_list("name", flat=True))


def test_the_first_spelling_of_a_tag_is_kept():
    assert tags_distinct(["VIP", "Club", "vip", "CLUB", "Vip "]) == [
        "VIP",
        "Club",
        "Vip ",
    ]
    assert contacts_tags_split('"VIP","vip","Expo, Boston","expo, boston"') == [
        "VIP",
        "Expo, Boston",
    ]
    assert contacts_tags_split("VIP, vip, Club") == ["VIP", "Club"]


@pytest.mark.django_db
def test_an_import_row_or_two_rows_of_one_address_give_the_tag_once():
    data = (
        b"Email,Tags\n"
        b'ann@example.com,"VIP, vip"\n'
        b"ANN@example.com,Vip\n"
        b"bob@example.com,club\n"
    )

    contact_import_file(filename="crm.csv", data=data)

    assert tags_of("ann@example.com") == ["VIP"]


@pytest.mark.django_db
def test_a_later_import_in_another_case_adds_no_second_tag():
    contact_import_file(filename="one.csv", data=b"Email,Tags\nann@example.com,VIP\n")
    contact_import_file(filename="two.csv", data=b"Email,Tags\nann@example.com,vip\n")

    assert tags_of("ann@example.com") == ["VIP"]


@pytest.mark.django_db
def test_a_big_import_copied_in_gives_the_tag_once(monkeypatch):
    # The COPY path (PostgreSQL, big files) writes new profiles' tags directly.
    monkeypatch.setattr(runs, "COPY_MIN_ROWS", 0)
    rows = [f'p{n}@example.com,"VIP, vip"' for n in range(3)]
    data = ("Email,Tags\n" + "\n".join(rows) + "\n").encode()

    contact_import_file(filename="big.csv", data=data)

    assert ProfileTag.objects.count() == 3
    assert tags_of("p0@example.com") == ["VIP"]


@pytest.mark.django_db
def test_letters_python_lowers_otherwise_than_the_database_are_one_tag(monkeypatch):
    # "İ" and a final "Σ": Python's lower() of a whole word differs from
    # PostgreSQL's, which the index holds; tag_key lowers letter by letter as it.
    monkeypatch.setattr(runs, "COPY_MIN_ROWS", 0)
    data = 'Email,Tags\nann@example.com,"İstanbul, istanbul, ΣΑΣ, σασ"\n'.encode()

    contact_import_file(filename="big.csv", data=data)

    assert tags_of("ann@example.com") == ["İstanbul", "ΣΑΣ"]


@pytest.mark.django_db
def test_the_database_decides_when_python_keeps_two_spellings(monkeypatch):
    # A collation may lower a letter otherwise still: the COPY path merges new
    # profiles' tags with ON CONFLICT, as stored profiles' tags, and never fails.
    monkeypatch.setattr(runs, "COPY_MIN_ROWS", 0)
    for module in (reading, mapping, copying):
        monkeypatch.setattr(module, "tags_distinct", list)
    data = b'Email,Tags\nann@example.com,"VIP, vip"\nbob@example.com,Club\n'

    contact_import = contact_import_file(filename="big.csv", data=data)

    assert contact_import.status == ImportStatus.DONE
    assert tags_of("ann@example.com") == ["VIP"]


@pytest.mark.django_db
def test_adding_a_tag_in_another_case_keeps_the_one_there():
    profile = ProfileFactory(email="ann@example.com")
    profile_tags_add(profile=profile, names=["Newsletter"])

    profile_tags_add(profile=profile, names=["NEWSLETTER", "newsletter", "Club"])

    assert tags_of("ann@example.com") == ["Club", "Newsletter"]


@pytest.mark.django_db
def test_the_people_page_lists_and_filters_a_tag_once_whatever_its_case(
    admin_client,
):
    ann = ProfileFactory(email="ann@example.com")
    bob = ProfileFactory(email="bob@example.com")
    ProfileFactory(email="cy@example.com")
    profile_tags_add(profile=ann, names=["VIP"])
    profile_tags_add(profile=bob, names=["vip"])

    page = admin_client.get("/profiles/", {"tag": "VIP"})

    assert page.status_code == 200
    choices = [value for value, _ in page.context["form"].fields["tag"].widget.choices]
    assert choices == ["", "VIP"]
    found = {profile.email for profile in page.context["page"]}
    assert found == {"ann@example.com", "bob@example.com"}


@pytest.mark.django_db
def test_the_migration_makes_tags_differing_in_case_one():
    # Tests build tables without migrations: the new index is dropped in this
    # test's transaction (rolled back after it) to hold what an older table held.
    migration = importlib.import_module(
        "profiles.migrations.0019_tags_one_whatever_the_case"
    )
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX profile_tag_unique_caseless")
    ann = ProfileFactory(email="ann@example.com")
    bob = ProfileFactory(email="bob@example.com")
    for profile, name in [(ann, "VIP"), (ann, "vip"), (ann, "Club"), (bob, "vip")]:
        ProfileTag.objects.create(profile=profile, name=name)

    migration.tags_merge_caseless(django_apps, None)

    assert tags_of("ann@example.com") == ["Club", "VIP"]
    assert tags_of("bob@example.com") == ["vip"]
