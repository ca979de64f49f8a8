"""A huge number in a declared trait loses its field, never the import."""

import pytest

from profiles.importing import contact_import_file
from profiles.importing.mapping import NO_CONSENT_COLUMN_NOTE
from profiles.models import ImportStatus, Profile, TraitDefinition, TraitType

pytestmark = pytest.mark.django_db


def test_a_number_too_large_is_refused_for_its_field_and_the_rest_imports():
    TraitDefinition.objects.create(name="spend", type=TraitType.NUMBER)
    data = (
        b"Email,Spend\nbig1@example.com,1e5000\nbig2@example.com,7\n"
        b"big3@example.com,1e400\n"
    )

    contact_import = contact_import_file(filename="big.csv", data=data)

    assert contact_import.status == ImportStatus.DONE
    assert [(r["record"], r["reason"]) for r in contact_import.rejections] == [
        (1, "number_too_large"),
        (3, "number_too_large"),
    ]
    traits = dict(Profile.objects.values_list("email", "traits"))
    assert traits == {
        "big1@example.com": {},
        "big2@example.com": {"spend": 7},
        "big3@example.com": {},
    }


def test_an_identify_with_a_number_too_large_keeps_the_person_and_drops_the_trait(
    client,
):
    from profiles.models import RejectedEvent
    from profiles.processing import events_process_pending

    TraitDefinition.objects.create(name="spend", type=TraitType.NUMBER)
    body = {
        "userId": "big-spender",
        "traits": {"email": "bignum@example.com", "spend": "1e5000", "plan": "pro"},
    }

    response = client.post(
        "/v1/identify",
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION="Basic dGVzdC1lbnYtd3JpdGUta2V5Og==",
    )
    events_process_pending()

    assert response.status_code == 200
    profile = Profile.objects.get(email="bignum@example.com")
    assert profile.traits == {"plan": "pro"}
    assert list(RejectedEvent.objects.values_list("code", flat=True)) == [
        "trait_invalid:number_too_large"
    ]


# More digits than a float keeps ----------------------------------------------------

MAILCHIMP_NUMBERS = (
    b"Email Address,First Name,LATITUDE,MEMBER_RATING,LAST_CHANGED,LEID,EUID\n"
    b"long@example.com,Ana,12345678901234567,12345678901234567,,,\n"
    b"short@example.com,Ben,40.7128,4,,,\n"
    b"zeros@example.com,Cleo,1.500000000000000000,1000000000000000,,,\n"
)


def test_an_undeclared_typed_column_keeps_a_long_number_as_text_with_a_note():
    contact_import = contact_import_file(filename="mc.csv", data=MAILCHIMP_NUMBERS)

    traits = dict(Profile.objects.values_list("email", "traits"))
    assert traits == {
        "long@example.com": {
            "latitude": "12345678901234567",
            "member_rating": "12345678901234567",
        },
        "short@example.com": {"latitude": 40.7128, "member_rating": 4},
        "zeros@example.com": {"latitude": 1.5, "member_rating": 1000000000000000},
    }
    assert contact_import.rejections == []
    assert contact_import.notes == [
        {
            "kind": "number_as_text",
            "record": 1,
            "column": "LATITUDE",
            "email": "long@example.com",
            "message": (
                "Record 1: LATITUDE '12345678901234567' has 17 significant digits, "
                "more than a number keeps (15), so it was imported as text, every "
                "digit kept."
            ),
        },
        {
            "kind": "number_as_text",
            "record": 1,
            "column": "MEMBER_RATING",
            "email": "long@example.com",
            "message": (
                "Record 1: MEMBER_RATING '12345678901234567' has 17 significant "
                "digits, more than a number keeps (15), so it was imported as text, "
                "every digit kept."
            ),
        },
    ]


def test_an_undeclared_plain_column_keeps_a_long_number_as_written_without_a_note():
    data = b"Email,Account\nacc@example.com,012345678901234567\n"

    contact_import = contact_import_file(filename="acc.csv", data=data)

    assert Profile.objects.get().traits == {"account": "012345678901234567"}
    assert contact_import.notes == [NO_CONSENT_COLUMN_NOTE]


def test_a_declared_number_with_too_many_digits_is_refused_naming_column_and_value():
    TraitDefinition.objects.create(name="spend", type=TraitType.NUMBER)
    data = (
        b"Email,Name,Spend,Plan\n"
        b"precise@example.com,Ana Souza,1234567890.1234567,gold\n"
        b"fine@example.com,Ben Okafor,1234567890.12345,silver\n"
        b"zeros@example.com,Cleo,2.50000000000000000000,bronze\n"
    )

    contact_import = contact_import_file(filename="spend.csv", data=data)

    assert contact_import.status == ImportStatus.DONE
    assert contact_import.rejections == [
        {
            "record": 1,
            "line": 2,
            "email": "precise@example.com",
            "column": "Spend",
            "reason": "number_too_precise",
            "message": (
                "Spend: '1234567890.1234567' has 17 significant digits, and a number "
                "keeps at most 15: it would be stored rounded. Round it, or declare "
                "the trait as text to keep every digit; the rest of the row was "
                "imported."
            ),
        }
    ]
    found = Profile.objects.values_list("email", "first_name", "traits")
    assert sorted(found) == [
        ("fine@example.com", "Ben", {"spend": 1234567890.12345, "plan": "silver"}),
        ("precise@example.com", "Ana", {"plan": "gold"}),
        ("zeros@example.com", "Cleo", {"spend": 2.5, "plan": "bronze"}),
    ]


def test_a_declared_number_too_large_says_so_naming_column_and_value():
    TraitDefinition.objects.create(name="spend", type=TraitType.NUMBER)
    data = b"Email,Spend,Plan\nbig@example.com,12345678901234567,gold\n"

    contact_import = contact_import_file(filename="spend.csv", data=data)

    assert [r["message"] for r in contact_import.rejections] == [
        "Spend: '12345678901234567' is out of range (a number may have at most 15 "
        "digits before the decimal point, whether positive or negative); the rest "
        "of the row was imported."
    ]
    assert Profile.objects.get().traits == {"plan": "gold"}


def test_a_declared_number_in_a_typed_column_is_refused_not_rounded():
    TraitDefinition.objects.create(name="latitude", type=TraitType.NUMBER)

    contact_import = contact_import_file(filename="mc.csv", data=MAILCHIMP_NUMBERS)

    assert [
        (r["record"], r["column"], r["reason"]) for r in contact_import.rejections
    ] == [(1, "LATITUDE", "number_too_large")]
    traits = dict(Profile.objects.values_list("email", "traits"))
    assert traits["long@example.com"] == {"member_rating": "12345678901234567"}
    assert traits["short@example.com"]["latitude"] == 40.7128


def test_a_long_value_is_quoted_cut_short_in_the_refusal():
    TraitDefinition.objects.create(name="ratio", type=TraitType.NUMBER)
    digits = "0." + "1234567890" * 6
    data = f"Email,Ratio\nratio@example.com,{digits}\n".encode()

    contact_import = contact_import_file(filename="ratio.csv", data=data)

    assert contact_import.rejections[0]["message"].startswith(
        "Ratio: '0.12345678901234567890123456789012345678'… (62 characters) has 59 "
        "significant digits"
    )


EUROPEAN = (
    "EMAIL;LOYALTY_POINTS;LATITUDE;MEMBER_RATING;OPTIN_TIME;LEID\n"
    "anna@example.de;1.000;48,8534;2;2024-03-01 10:00:00;1\n"
    "ben@example.de;1 234,5;52,52;3;2024-03-02 10:00:00;2\n"
    "cleo@example.de;2,5;;4;2024-03-03 10:00:00;3\n"
    "dan@example.de;lots;;5;2024-03-04 10:00:00;4\n"
).encode("cp1252")


def test_a_file_declared_with_a_decimal_comma_reads_its_numbers_so():
    TraitDefinition.objects.create(name="loyalty_points", type=TraitType.NUMBER)

    contact_import = contact_import_file(
        filename="export.csv", data=EUROPEAN, decimal_comma=True
    )

    traits = dict(Profile.objects.values_list("email", "traits"))
    assert traits["anna@example.de"]["loyalty_points"] == 1000
    assert traits["ben@example.de"]["loyalty_points"] == 1234.5
    assert traits["cleo@example.de"]["loyalty_points"] == 2.5
    # Mailchimp's own typed column is read the same way.
    assert traits["anna@example.de"]["latitude"] == 48.8534
    assert [(r["record"], r["reason"]) for r in contact_import.rejections] == [
        (4, "not_a_number")
    ]
    assert not [n for n in contact_import.notes if n.get("kind") == "decimal_point"]


def test_a_thousand_written_with_a_point_is_read_as_one_and_said_once():
    TraitDefinition.objects.create(name="loyalty_points", type=TraitType.NUMBER)
    data = b"Email,Loyalty Points\na@example.com,1.000\nb@example.com,2.500\n"

    contact_import = contact_import_file(filename="points.csv", data=data)

    traits = dict(Profile.objects.values_list("email", "traits"))
    assert traits["a@example.com"] == {"loyalty_points": 1}
    noted = [n for n in contact_import.notes if n.get("kind") == "decimal_point"]
    assert [n["message"] for n in noted] == [
        "Record 1: Loyalty Points '1.000' was read with a decimal point, as 1, and so "
        "were the column's other numbers. If the file writes a thousand as 1.000, "
        "import it again with “decimal comma” chosen on the mapping page "
        "(--decimal-comma)."
    ]


def test_the_import_command_takes_a_decimal_comma(tmp_path):
    from django.core.management import call_command

    TraitDefinition.objects.create(name="loyalty_points", type=TraitType.NUMBER)
    path = tmp_path / "export.csv"
    path.write_bytes(EUROPEAN)

    call_command("import_contacts", str(path), "--decimal-comma")

    assert Profile.objects.get(email="anna@example.de").traits["loyalty_points"] == 1000
