"""Where columns go: one column per target, and no trait named like a profile field."""

from datetime import UTC, datetime
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse

from profiles.importing import (
    ImportFormatError,
    column_target_check,
    contact_import_create,
    contact_import_file,
    contact_import_map,
    contact_import_run_stored,
    contacts_parse,
    contacts_preview,
)
from profiles.importing.mapping import NO_CONSENT_COLUMN_NOTE
from profiles.importing.reading import trait_key
from profiles.models import (
    ConsentRecord,
    ContactImport,
    Profile,
    SubscriptionStatus,
    TraitDefinition,
    TraitType,
)
from profiles.services import consent_record
from tests.factories import ProfileFactory
from tests.profiles.test_import_reading_files import run_mapped

TWO_COLORS = b"email,Favorite Color,favorite_color\nhd6@example.com,red,blue\n"
RESERVED_HEADER = (
    b"email,lifetime_value,full_name,id,continent,name,created_at,City,Plan\n"
    b"res@example.com,120,Ann Lee,77,Europe,Ann,2020-01-01,Oslo,gold\n"
)


# Where a time written without a zone is read (settings.BESPOKE_IMPORT_TIME_ZONE).
ZONE = ZoneInfo("UTC")


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


# One column per target -------------------------------------------------------------


@pytest.mark.django_db  # the default map asks which traits are declared
def test_two_columns_that_read_as_one_trait_get_two_traits_by_default():
    preview = contacts_preview(TWO_COLORS)

    assert preview.column_map == {
        "email": "email",
        "Favorite Color": "traits.favorite_color",
        "favorite_color": "traits.favorite_color_column_3",
    }


@pytest.mark.django_db
def test_a_column_named_past_a_traits_length_is_imported_as_a_trait_cut_to_fit(
    tmp_path,
):
    # Two long questions from a sign-up form, alike in their first 100 characters.
    question = "Which of our newsletters would you like to receive from us " * 2
    path = tmp_path / "form.csv"
    path.write_text(
        f"email,{question}(weekly),{question}(monthly)\nann@example.com,yes,no\n"
    )

    call_command("import_contacts", str(path), stdout=StringIO())

    cut = trait_key(question, 1)
    assert len(cut) == 100
    assert Profile.objects.get().traits == {
        cut: "yes",
        f"{cut[:91]}_column_3": "no",
    }
    notes = ContactImport.objects.get().notes
    assert [(n["kind"], n["column"]) for n in notes[:2]] == [
        ("trait_name_cut", f"{question}(weekly)"),
        ("trait_name_cut", f"{question}(monthly)"),
    ]
    assert notes[0]["message"] == (
        "The column “Which of our newsletters would you like to receive from us "
        "W…” is imported as the trait "
        f"“{cut}”: its own name, 126 characters, is longer than a trait's name "
        "can be (100)."
    )


@pytest.mark.django_db
def test_both_values_of_two_columns_alike_are_kept():
    contact_import = contact_import_file(filename="colors.csv", data=TWO_COLORS)

    assert contact_import.rejections == []
    assert Profile.objects.get(email="hd6@example.com").traits == {
        "favorite_color": "red",
        "favorite_color_column_3": "blue",
    }


@pytest.mark.django_db
def test_a_map_sending_two_columns_to_one_trait_is_refused_naming_both():
    contact_import = contact_import_create(filename="colors.csv", data=TWO_COLORS)

    with pytest.raises(ImportFormatError) as caught:
        contact_import_map(
            contact_import_id=contact_import.pk,
            column_map={
                "email": "email",
                "Favorite Color": "traits.favorite_color",
                "favorite_color": "traits.favorite_color",
            },
            date_format="",
        )

    assert str(caught.value) == (
        "The columns “Favorite Color” and “favorite_color” are both imported as the "
        "trait “favorite_color”, and one would overwrite the other. Import one of "
        "them as something else, or ignore it."
    )
    contact_import.refresh_from_db()
    assert contact_import.column_map == {}


def test_a_stored_map_sending_two_columns_to_one_field_cannot_run():
    column_map = {"email": "email", "Favorite Color": "city", "favorite_color": "city"}

    with pytest.raises(ImportFormatError) as caught:
        contacts_parse(TWO_COLORS, column_map=column_map)

    assert str(caught.value).startswith(
        "The columns “Favorite Color” and “favorite_color” are both imported as city,"
    )


@pytest.mark.django_db
def test_the_mapping_form_refuses_two_columns_on_one_declared_trait(
    signed_in, django_capture_on_commit_callbacks
):
    TraitDefinition.objects.create(name="favorite_color", type=TraitType.TEXT)
    file = SimpleUploadedFile("colors.csv", TWO_COLORS, content_type="text/csv")
    uploaded = signed_in.post(reverse("import_list"), {"file": file})

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = signed_in.post(
            uploaded.url,
            {
                "column_0": "email",
                "column_1": "traits.favorite_color",
                "column_2": "traits.favorite_color",
                "date_format": "",
            },
        )

    assert response.status_code == 200
    page = response.content.decode()
    assert (
        "The columns “Favorite Color” and “favorite_color” are both imported as the "
        "trait “favorite_color”"
    ) in page
    assert callbacks == []
    assert ContactImport.objects.get().column_map == {}
    assert not Profile.objects.exists()


# Reserved trait names --------------------------------------------------------------


@pytest.mark.django_db  # the default map asks which traits are declared
def test_columns_named_like_profile_fields_are_ignored_by_default():
    preview = contacts_preview(RESERVED_HEADER)

    # The first full name column is split (see "Full names" below); the second one
    # is a reserved name like the others.
    assert preview.column_map == {
        "email": "email",
        "lifetime_value": "",
        "full_name": "full_name",
        "id": "",
        "continent": "",
        "name": "",
        "created_at": "",
        "City": "city",
        "Plan": "traits.plan",
    }
    assert preview.reserved == [
        "lifetime_value",
        "id",
        "continent",
        "name",
        "created_at",
    ]


@pytest.mark.django_db
def test_an_import_on_the_default_map_notes_each_column_it_ignored_for_its_name():
    contact_import = contact_import_file(filename="res.csv", data=RESERVED_HEADER)

    profile = Profile.objects.get(email="res@example.com")
    assert (profile.city, profile.lifetime_value, profile.traits) == (
        "Oslo",
        0,
        {"plan": "gold"},
    )
    assert (profile.first_name, profile.last_name) == ("Ann", "Lee")
    reserved = [n for n in contact_import.notes if n["kind"] == "reserved_column"]
    assert [note["column"] for note in reserved] == [
        "lifetime_value",
        "id",
        "continent",
        "name",
        "created_at",
    ]
    assert reserved[0]["message"] == (
        "The column “lifetime_value” is not imported: Bespoke works out the lifetime "
        "value itself, from the orders and events it receives."
    )
    assert reserved[1]["message"] == (
        "The column “id” is ignored: as a trait its name would be a profile "
        "field's, which would hide it. Map it to a profile field if it holds one."
    )


@pytest.mark.parametrize("name", ["name", "Name", "full_name", "LIFETIME_VALUE", "id"])
def test_a_trait_named_like_a_profile_field_is_not_a_target(name):
    with pytest.raises(ImportFormatError) as caught:
        column_target_check(f"traits.{name}", column="Full name")

    assert str(caught.value) == (
        f"The column “Full name” cannot become the trait “{name}”: that is the name "
        "of a profile field, which would hide the trait. Map it to a profile field "
        "or ignore it."
    )


@pytest.mark.django_db
def test_a_map_with_a_reserved_trait_is_refused_and_not_kept():
    data = b"email,Full name\nann@example.com,Ann Lee\n"
    contact_import = contact_import_create(filename="names.csv", data=data)

    with pytest.raises(ImportFormatError, match="“Full name” cannot become the trait"):
        contact_import_map(
            contact_import_id=contact_import.pk,
            column_map={"email": "email", "Full name": "traits.full_name"},
            date_format="",
        )

    contact_import.refresh_from_db()
    assert contact_import.column_map == {}


@pytest.mark.django_db
def test_a_name_column_may_go_to_a_real_profile_field():
    data = b"email,Name\nann@example.com,Ann\n"
    contact_import = contact_import_create(filename="names.csv", data=data)

    saved = contact_import_map(
        contact_import_id=contact_import.pk,
        column_map={"email": "email", "Name": "first_name"},
        date_format="",
    )

    assert saved is True


@pytest.mark.django_db
def test_the_mapping_page_says_which_columns_are_ignored_for_their_names(signed_in):
    # Declared before names were compared whatever the case: never offered.
    TraitDefinition.objects.create(name="Email", type=TraitType.TEXT)
    file = SimpleUploadedFile("res.csv", RESERVED_HEADER, content_type="text/csv")
    uploaded = signed_in.post(reverse("import_list"), {"file": file})

    response = signed_in.get(uploaded.url)

    page = response.content.decode()
    listed = page.split("data-reserved-columns>")[1].split("</ul>")[0]
    assert listed.count("<li>") == 5
    assert (
        "<li>The column “lifetime_value” is not imported: Bespoke works out the "
        "lifetime value itself, from the orders and events it receives.</li>"
    ) in listed
    assert "<li>The column “id” is ignored: as a trait its name would be" in listed
    assert 'value="traits.Email"' not in page


# Full names ------------------------------------------------------------------------


def mapped_import(data: bytes, column_map: dict[str, str]) -> ContactImport:
    contact_import = contact_import_create(filename="names.csv", data=data)
    contact_import_map(
        contact_import_id=contact_import.pk, column_map=column_map, date_format=""
    )
    return contact_import_run_stored(contact_import_id=contact_import.pk)


def names() -> dict[str, tuple[str, str]]:
    found = Profile.objects.values_list("email", "first_name", "last_name")
    return {email: (first, last) for email, first, last in found}


@pytest.mark.django_db  # the default map asks which traits are declared
@pytest.mark.parametrize("header", ["Name", "Full name", "FULL_NAME", "full-name"])
def test_a_full_name_column_is_split_by_default_when_no_name_column_exists(header):
    data = f"Email,{header},Plan\nann@example.com,Ann Lee,gold\n".encode()

    preview = contacts_preview(data)

    assert preview.column_map == {
        "Email": "email",
        header: "full_name",
        "Plan": "traits.plan",
    }
    assert preview.reserved == []


@pytest.mark.django_db  # the default map asks which traits are declared
def test_a_klaviyo_name_column_is_split_by_default():
    data = (
        b"Email,Name,Email Marketing Consent,Klaviyo ID\n"
        b"ann@example.com,Ann Lee,SUBSCRIBED,01H\n"
    )

    preview = contacts_preview(data)

    assert preview.layout.name == "klaviyo"
    assert preview.column_map["Name"] == "full_name"


@pytest.mark.parametrize("other", ["First Name", "Last Name", "Surname"])
def test_a_full_name_column_is_split_by_default_beside_a_name_column(other):
    data = f"Email,Name,{other}\nann@example.com,Ann Lee,Ann\n".encode()

    preview = contacts_preview(data)

    assert preview.column_map["Name"] == "full_name"
    assert preview.reserved == []


@pytest.mark.django_db
def test_a_last_name_column_wins_where_it_has_a_value_and_the_split_fills_blanks():
    data = (
        b"Email,Name,Last Name\n"
        b"k1@example.com,Kim Lee,Park\n"
        b"k2@example.com,Solo Name,\n"
    )

    contact_import = contact_import_file(filename="names.csv", data=data)

    assert names() == {
        "k1@example.com": ("Kim", "Park"),
        "k2@example.com": ("Solo", "Name"),
    }
    assert contact_import.notes == [
        {
            "kind": "full_name_overridden",
            "column": "Last Name",
            "message": (
                "The column “Last Name” is mapped to last name: where it has a "
                "value, it wins over the split of “Name”."
            ),
        },
        NO_CONSENT_COLUMN_NOTE,
    ]


@pytest.mark.django_db
def test_a_first_name_column_wins_over_a_split_full_name_by_default():
    data = (
        b"Email,Full name,First Name\n"
        b"ann@example.com,Ann Marie Lee,Annie\n"
        b"ben@example.com,Ben Okafor,\n"
    )

    contact_import_file(filename="names.csv", data=data)

    assert names() == {
        "ann@example.com": ("Annie", "Lee"),
        "ben@example.com": ("Ben", "Okafor"),
    }


@pytest.mark.django_db
def test_an_ignored_name_column_is_told_it_can_be_split():
    data = b"Email,Name,Full name\nann@example.com,Ann Lee,Ann Lee\n"

    contact_import = contact_import_file(filename="names.csv", data=data)

    assert names() == {"ann@example.com": ("Ann", "Lee")}
    assert contact_import.notes == [
        {
            "kind": "reserved_column",
            "column": "Full name",
            "message": (
                "The column “Full name” is ignored: as a trait its name would be a "
                "profile field's, which would hide it. Map it to “Full name (split "
                "into first and last)” or to a profile field to import it."
            ),
        },
        NO_CONSENT_COLUMN_NOTE,
    ]


@pytest.mark.django_db
def test_the_split_puts_the_last_word_in_last_name_and_the_rest_in_first_name():
    data = (
        "Email,Name\n"
        "ann@example.com,  Ann  Marie   Lee \n"
        "cher@example.com, Cher \n"
        "blank@example.com,\n"
        "jose@example.com,José María de la Cruz\n"
    ).encode()

    contact_import = contact_import_file(filename="names.csv", data=data)

    assert names() == {
        "ann@example.com": ("Ann Marie", "Lee"),
        "cher@example.com": ("Cher", ""),
        "blank@example.com": ("", ""),
        "jose@example.com": ("José María de la", "Cruz"),
    }
    assert contact_import.rejections == []
    assert contact_import.notes == [NO_CONSENT_COLUMN_NOTE]


@pytest.mark.django_db
def test_a_full_name_with_a_comma_is_read_as_last_name_then_first_name():
    data = (
        "Email,Name\n"
        'smith@example.com,"Smith, John"\n'
        'garcia@example.com,"  García  Márquez ,  Gabriel  José "\n'
        'jr@example.com,"King, Jr., Martin"\n'
        'only-last@example.com,"Okafor,"\n'
        'only-first@example.com,", Cher"\n'
        'nothing@example.com," , "\n'
    ).encode()

    contact_import = contact_import_file(filename="names.csv", data=data)

    assert names() == {
        "smith@example.com": ("John", "Smith"),
        "garcia@example.com": ("Gabriel José", "García Márquez"),
        "jr@example.com": ("Jr., Martin", "King"),
        "only-last@example.com": ("", "Okafor"),
        "only-first@example.com": ("Cher", ""),
        "nothing@example.com": ("", ""),
    }
    assert contact_import.notes == [NO_CONSENT_COLUMN_NOTE]


@pytest.mark.django_db
def test_a_one_word_name_leaves_a_known_last_name_as_it_was():
    Profile.objects.create(email="cher@example.com", last_name="Sarkisian")
    Profile.objects.create(
        email="anne@example.com", first_name="Anne Marie", last_name="Curie"
    )
    data = b"Email,Name,Last Name\ncher@example.com,Cher,\nanne@example.com,Annie,\n"

    contact_import_file(filename="names.csv", data=data)

    # As a blank last-name cell does, a missing last name clears nothing.
    assert names() == {
        "cher@example.com": ("Cher", "Sarkisian"),
        "anne@example.com": ("Annie", "Curie"),
    }


@pytest.mark.django_db
def test_a_column_mapped_to_first_name_wins_over_the_split_and_is_noted():
    data = (
        b"Email,Name,Nickname\n"
        b"ann@example.com,Ann Lee,Annie\n"
        b"ben@example.com,Ben Okafor,\n"
    )

    contact_import = mapped_import(
        data, {"Email": "email", "Name": "full_name", "Nickname": "first_name"}
    )

    assert names() == {
        "ann@example.com": ("Annie", "Lee"),
        "ben@example.com": ("Ben", "Okafor"),
    }
    assert contact_import.notes == [
        {
            "kind": "full_name_overridden",
            "column": "Nickname",
            "message": (
                "The column “Nickname” is mapped to first name: where it has a "
                "value, it wins over the split of “Name”."
            ),
        },
        NO_CONSENT_COLUMN_NOTE,
    ]


@pytest.mark.django_db
def test_a_part_of_a_name_too_long_for_its_field_is_noted_and_the_rest_kept():
    long_last = "L" * 151
    data = f"Email,Name\nann@example.com,Ann {long_last}\n".encode()

    contact_import = contact_import_file(filename="names.csv", data=data)

    assert names() == {"ann@example.com": ("Ann", "")}
    assert [note["message"] for note in contact_import.notes] == [
        f"Record 1: Name {long_last!r} was not imported (longer than 150 characters).",
        NO_CONSENT_COLUMN_NOTE["message"],
    ]


def test_two_columns_mapped_to_the_full_name_are_refused_naming_both():
    data = b"email,Name,Full name\nann@example.com,Ann Lee,Ann Lee\n"
    column_map = {"email": "email", "Name": "full_name", "Full name": "full_name"}

    with pytest.raises(ImportFormatError) as caught:
        contacts_parse(data, column_map=column_map)

    assert str(caught.value).startswith(
        "The columns “Name” and “Full name” are both imported as the full name,"
    )


@pytest.mark.django_db
def test_the_mapping_page_offers_and_preselects_the_full_name(signed_in):
    data = b"Email,Name\nann@example.com,Ann Lee\n"
    file = SimpleUploadedFile("names.csv", data, content_type="text/csv")
    uploaded = signed_in.post(reverse("import_list"), {"file": file})

    response = signed_in.get(uploaded.url)

    assert response.context["form"]["column_1"].initial == "full_name"
    assert (
        '<option value="full_name" selected>Full name (split into first and last)'
        "</option>"
    ) in response.content.decode()


@pytest.mark.django_db
def test_a_name_cell_that_wraps_is_one_line_and_a_control_character_is_refused():
    # given a first name whose cell wraps onto two lines, and a last name holding
    # an escape character
    data = (
        b"Email,First name,Last name,City\n"
        b'ann@example.com,"Ann\r\nMarie",Lee\x1b[31m,"  Porto \t Alegre "\n'
    )

    contact_import = contact_import_file(filename="names.csv", data=data)

    # then the first name is on one line, the last name is left out with why
    assert names() == {"ann@example.com": ("Ann Marie", "")}
    assert Profile.objects.get().city == "Porto Alegre"
    assert [note["message"] for note in contact_import.notes] == [
        "Record 1: Last name 'Lee\\x1b[31m' was not imported (it holds the control "
        "character U+001B, which no name, place or phone number holds).",
        NO_CONSENT_COLUMN_NOTE["message"],
    ]


@pytest.mark.django_db
def test_a_full_name_with_a_control_character_is_refused_whole():
    # given a known person, and a file whose full name holds a bell character
    Profile.objects.create(
        email="keep@example.com", first_name="Good", last_name="Name"
    )
    data = b'Email,Full Name\nkeep@example.com,"Ann Lee\x07"\n'

    contact_import = contact_import_file(filename="names.csv", data=data)

    # then both names stay as they were, and the note quotes the whole name
    assert names() == {"keep@example.com": ("Good", "Name")}
    assert [note["message"] for note in contact_import.notes] == [
        "Record 1: Full Name 'Ann Lee\\x07' was not imported (it holds the control "
        "character U+0007, which no name, place or phone number holds).",
        NO_CONSENT_COLUMN_NOTE["message"],
    ]


@pytest.mark.parametrize(
    ("header", "target"),
    [
        ("First", "first_name"),
        ("Last", "last_name"),
        ("Email Status", "status"),
        ("Subscriber status", "status"),
        ("Unsubscribed (yes/no)", "unsubscribed"),
        ("Do Not Email", "unsubscribed"),
        ("Marketing Consent", "subscribed"),
        ("Newsletter Opt-In", "subscribed"),
    ],
)
def test_a_spreadsheets_usual_names_for_names_and_consent_are_read(header, target):
    data = f"Email,{header}\nann@example.com,x\n".encode()

    assert contacts_preview(data).column_map == {"Email": "email", header: target}


@pytest.mark.django_db
def test_an_email_status_column_keeps_an_unsubscribe_from_a_later_list():
    contact_import_file(
        filename="sheet.csv",
        data=b"Email,First Name,Email Status\ncs2@example.com,Cee,unsubscribed\n",
    )
    contact_import_file(
        filename="list.csv", data=b"Email,Status\ncs2@example.com,subscribed\n"
    )

    assert Profile.objects.get().subscription_status == "unsubscribed"


@pytest.mark.django_db
def test_a_column_named_as_a_declared_trait_goes_to_it_under_its_rules():
    TraitDefinition.objects.create(
        name="loyaltyTier", type=TraitType.TEXT, allowed_values=["gold", "silver"]
    )
    TraitDefinition.objects.create(name="lifetimePoints", type=TraitType.NUMBER)
    data = (
        b"email,loyaltyTier,LIFETIMEPOINTS\n"
        b"camel1@example.com,platinum,1.000.000\n"
        b"camel2@example.com,gold,12\n"
    )

    assert contacts_preview(data).column_map == {
        "email": "email",
        "loyaltyTier": "traits.loyaltyTier",
        "LIFETIMEPOINTS": "traits.lifetimePoints",
    }
    contact_import = contact_import_file(filename="camel.csv", data=data)

    traits = dict(Profile.objects.values_list("email", "traits"))
    assert traits == {
        "camel1@example.com": {},
        "camel2@example.com": {"loyaltyTier": "gold", "lifetimePoints": 12},
    }
    assert {r["column"] for r in contact_import.rejections} == {
        "loyaltyTier",
        "LIFETIMEPOINTS",
    }


@pytest.mark.django_db
def test_a_trait_mapped_by_hand_in_another_case_is_the_declared_one(tmp_path):
    TraitDefinition.objects.create(
        name="loyaltyTier", type=TraitType.TEXT, allowed_values=["gold", "silver"]
    )
    path = tmp_path / "crm.csv"
    path.write_bytes(
        b"email,Tier\ncase1@example.com,platinum\ncase2@example.com,GOLD\n"
    )

    call_command(
        "import_contacts",
        str(path),
        "--map",
        "Tier=traits.loyaltytier",
        stdout=StringIO(),
    )

    contact_import = ContactImport.objects.get()
    assert contact_import.column_map["Tier"] == "traits.loyaltyTier"
    traits = dict(Profile.objects.values_list("email", "traits"))
    assert traits == {
        "case1@example.com": {},
        "case2@example.com": {"loyaltyTier": "gold"},
    }
    assert [(r["record"], r["column"]) for r in contact_import.rejections] == [
        (1, "Tier")
    ]


@pytest.mark.django_db
def test_a_map_kept_with_a_trait_in_another_case_runs_under_the_declared_rules():
    TraitDefinition.objects.create(name="lifetimePoints", type=TraitType.NUMBER)
    data = b"email,Points\npts@example.com,12\n"

    parsed = contacts_parse(
        data, column_map={"email": "email", "Points": "traits.LIFETIMEPOINTS"}
    )

    assert parsed.rows[0].traits == {"lifetimePoints": 12}


@pytest.mark.django_db
def test_two_columns_sent_to_a_declared_trait_in_two_cases_are_refused_naming_both():
    TraitDefinition.objects.create(name="loyaltyTier", type=TraitType.TEXT)
    data = b"email,loyaltyTier,Tier\ntwo@example.com,gold,silver\n"
    contact_import = contact_import_create(filename="tiers.csv", data=data)

    with pytest.raises(ImportFormatError) as caught:
        contact_import_map(
            contact_import_id=contact_import.pk,
            column_map={
                "email": "email",
                "loyaltyTier": "traits.loyaltyTier",
                "Tier": "traits.LoyaltyTier",
            },
            date_format="",
        )

    assert str(caught.value).startswith(
        "The columns “loyaltyTier” and “Tier” are both imported as the trait "
        "“loyaltyTier”, and one would overwrite the other."
    )
    contact_import.refresh_from_db()
    assert contact_import.column_map == {}


@pytest.mark.django_db
def test_a_later_column_named_as_a_declared_trait_taken_is_ignored_and_noted():
    # Given a declared trait and a file naming it twice, in two cases
    TraitDefinition.objects.create(
        name="loyaltyTier", type=TraitType.TEXT, allowed_values=["gold", "silver"]
    )
    data = (
        b"email,loyaltyTier,LOYALTYTIER\n"
        b"twice1@example.com,gold,platinum\n"
        b"twice2@example.com,,silver\n"
    )

    # When the file is mapped by default and imported
    preview = contacts_preview(data)
    contact_import = contact_import_file(filename="twice.csv", data=data)

    # Then only the first column goes to the trait, under its rules, and the
    # later one is ignored, the page and the report naming both
    assert preview.column_map == {
        "email": "email",
        "loyaltyTier": "traits.loyaltyTier",
        "LOYALTYTIER": "",
    }
    assert preview.declared_twice == [("LOYALTYTIER", "loyaltyTier", "loyaltyTier")]
    traits = dict(Profile.objects.values_list("email", "traits"))
    assert traits == {
        "twice1@example.com": {"loyaltyTier": "gold"},
        "twice2@example.com": {},
    }
    notes = [n for n in contact_import.notes if n["kind"] == "declared_trait_taken"]
    assert notes == [
        {
            "kind": "declared_trait_taken",
            "column": "LOYALTYTIER",
            "message": (
                "The column “LOYALTYTIER” is ignored: its name reads as the declared "
                "trait “loyaltyTier”, which the column “loyaltyTier” is imported as, "
                "and a trait takes one column. To import “LOYALTYTIER” instead, map "
                "it to loyaltyTier and ignore “loyaltyTier”."
            ),
        }
    ]


@pytest.mark.django_db
def test_a_column_naming_a_declared_trait_in_words_goes_to_it():
    # Given loyaltyTier declared, and a file whose header writes it in two words
    TraitDefinition.objects.create(
        name="loyaltyTier", type=TraitType.TEXT, allowed_values=["Gold", "Silver"]
    )
    data = b"email,Loyalty Tier\nwords@example.com, gold \nnope@example.com,platinum\n"

    # When the file is mapped by default and imported
    preview = contacts_preview(data)
    contact_import_file(filename="words.csv", data=data)

    # Then the column is the declared trait's, checked by its rules
    assert preview.column_map == {
        "email": "email",
        "Loyalty Tier": "traits.loyaltyTier",
    }
    traits = dict(Profile.objects.values_list("email", "traits"))
    assert traits == {
        "words@example.com": {"loyaltyTier": "Gold"},
        "nope@example.com": {},
    }


@pytest.mark.django_db
def test_a_column_two_declared_traits_read_as_in_words_is_a_new_trait():
    # loyalty_tier and loyaltytier run together alike: which one is not guessed.
    for name in ("loyalty_tier", "loyaltytier"):
        TraitDefinition.objects.create(name=name, type=TraitType.TEXT)

    preview = contacts_preview(b"email,Loyalty-Tier\nann@example.com,gold\n")

    assert preview.column_map["Loyalty-Tier"] == "traits.loyalty_tier"
    preview = contacts_preview(b"email,Loyal Ty Tier\nann@example.com,gold\n")
    assert preview.column_map["Loyal Ty Tier"] == "traits.loyal_ty_tier"


@pytest.mark.django_db
def test_the_mapping_page_says_which_column_a_declared_trait_already_has(signed_in):
    TraitDefinition.objects.create(name="favorite_color", type=TraitType.TEXT)
    file = SimpleUploadedFile("colors.csv", TWO_COLORS, content_type="text/csv")
    uploaded = signed_in.post(reverse("import_list"), {"file": file})

    page = signed_in.get(uploaded.url)

    form = page.context["form"]
    assert [form[f"column_{n}"].initial for n in range(3)] == [
        "email",
        "traits.favorite_color",
        "",
    ]
    assert page.context["declared_twice"] == [
        "The column “favorite_color” is ignored: its name reads as the declared "
        "trait “favorite_color”, which the column “Favorite Color” is imported as, "
        "and a trait takes one column. To import “favorite_color” instead, map it "
        "to favorite_color and ignore “Favorite Color”."
    ]
    assert "data-declared-twice" in page.content.decode()


DUPLICATES = (
    "Email;Name;City;Updated\n"
    "jose.muller@example.com;José Müller;Zürich;31/03/2025\n"
    "JOSE.MULLER@EXAMPLE.COM;Jose Muller;Zurich;01/02/2024\n"
).encode()


@pytest.mark.django_db
def test_a_column_mapped_as_the_change_time_decides_which_row_of_an_address_wins():
    # Without it the row lower in the file wins: Jose Muller, Zurich.
    names = {"Email": "email", "Name": "full_name", "City": "city"}
    run_mapped(DUPLICATES, {**names, "Updated": ""}, "%d/%m/%Y")
    assert Profile.objects.values_list("first_name", "city").get() == (
        "Jose",
        "Zurich",
    )
    Profile.objects.all().delete()

    done = run_mapped(DUPLICATES, {**names, "Updated": "changed_at"}, "%d/%m/%Y")

    # The row changed last, in March 2025, is the one kept.
    assert Profile.objects.values_list("first_name", "city").get() == (
        "José",
        "Zürich",
    )
    assert not [n for n in done.notes if n["kind"] == "changed_at_unread"]


@pytest.mark.django_db
def test_change_times_the_date_format_cannot_read_are_noted_once():
    names = {"Email": "email", "Name": "full_name", "City": "city"}

    done = run_mapped(DUPLICATES, {**names, "Updated": "changed_at"}, "")

    (note,) = [n for n in done.notes if n["kind"] == "changed_at_unread"]
    assert (note["column"], note["records"], note["count"]) == ("Updated", [1, 2], 2)
    assert note["message"].startswith(
        "Updated is read as when each row last changed, but in records 1, 2 it is "
        "no time in the file's date format"
    )


def test_the_change_time_is_a_target_a_column_may_be_mapped_to():
    assert column_target_check("changed_at") == "changed_at"
    with pytest.raises(ImportFormatError) as twice:
        contacts_parse(
            DUPLICATES,
            column_map={
                "Email": "email",
                "City": "changed_at",
                "Updated": "changed_at",
            },
        )
    assert "both imported as the time each row last changed" in str(twice.value)


# The change time dates the row's consent -------------------------------------------

DATED_BY_CHANGE = (
    b"Email;Status;Updated\n"
    b"ines@example.com;unsubscribed;31/03/2025\n"
    b"INES@example.com;subscribed;01/02/2024\n"
)


@pytest.mark.django_db
def test_the_change_time_dates_the_consent_so_the_newest_rows_status_wins():
    # The lower row (subscribed, 2024) used to decide the status: its consent was
    # dated by the import, as was the withdrawal above it, and came last.
    names = {"Email": "email", "Status": "status", "Updated": "changed_at"}

    run_mapped(DATED_BY_CHANGE, names, "%d/%m/%Y")

    profile = Profile.objects.get()
    assert profile.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert profile.subscription_changed_at == datetime(2025, 3, 31, tzinfo=ZONE)
    records = ConsentRecord.objects.order_by("occurred_at")
    assert [(r.status, r.occurred_at) for r in records] == [
        (SubscriptionStatus.SUBSCRIBED, datetime(2024, 2, 1, tzinfo=ZONE)),
        (SubscriptionStatus.UNSUBSCRIBED, datetime(2025, 3, 31, tzinfo=ZONE)),
    ]
    withdrawal = records.last()
    assert withdrawal.evidence["row_changed_column"] == "Updated"
    assert withdrawal.evidence["row_changed_at"] == "31/03/2025"
    # And the column the status was read from, with its word as written.
    assert withdrawal.evidence["consent_column"] == "Status"
    assert withdrawal.evidence["consent_cell"] == "unsubscribed"
    assert "occurred_at_is_import_time" not in withdrawal.evidence
    assert withdrawal.wording == (
        "Listed as unsubscribed in an imported contact file, whose “Updated” column, "
        "mapped as each row's change time, dates it; the file does not say how it "
        "was given."
    )


@pytest.mark.django_db
def test_an_old_withdrawal_dated_by_its_change_time_leaves_a_later_subscription():
    # Subscribed on the site in 2025; a file says unsubscribed, last changed 2024.
    profile = ProfileFactory(email="ines@example.com")
    consent_record(
        profile=profile,
        status=SubscriptionStatus.SUBSCRIBED,
        source="api",
        occurred_at=datetime(2025, 6, 1, tzinfo=UTC),
    )
    data = b"Email,Status,Updated\nines@example.com,unsubscribed,2024-01-10\n"

    run_mapped(data, {"Email": "email", "Status": "status", "Updated": "changed_at"})

    profile.refresh_from_db()
    assert profile.subscription_status == SubscriptionStatus.SUBSCRIBED
    # The withdrawal is on record, in its place in the history.
    assert ConsentRecord.objects.filter(
        profile=profile,
        status=SubscriptionStatus.UNSUBSCRIBED,
        occurred_at=datetime(2024, 1, 10, tzinfo=ZONE),
    ).exists()


@pytest.mark.django_db
def test_a_row_without_a_readable_change_time_keeps_its_consent_undated():
    data = b"Email,Status,Updated\nines@example.com,subscribed,soon\n"

    run_mapped(data, {"Email": "email", "Status": "status", "Updated": "changed_at"})

    (record,) = ConsentRecord.objects.all()
    assert record.evidence["occurred_at_is_import_time"] is True
    assert "row_changed_at" not in record.evidence
    assert record.wording.endswith("which does not say when or how.")


@pytest.mark.django_db
def test_a_header_with_braces_is_quoted_as_written_in_the_wording():
    data = b"Email,Status,{changed}\nines@example.com,subscribed,2024-01-10\n"

    run_mapped(data, {"Email": "email", "Status": "status", "{changed}": "changed_at"})

    (record,) = ConsentRecord.objects.all()
    assert "whose “{changed}” column" in record.wording
