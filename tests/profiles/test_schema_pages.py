"""The trait schema pages: declared traits, undeclared ones, and the rule form."""

import importlib
from decimal import Decimal

import pytest
from django.apps import apps as django_apps
from django.urls import reverse

from profiles.health import trait_names_undeclared, trait_rule_breaches
from profiles.models import TraitDefinition
from profiles.traits import TraitRule
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db

VALID = {
    "name": "member_rating",
    "type": "number",
    "description": "Stars from the loyalty club",
    "allowed_values": "",
    "minimum": "1",
    "maximum": "5",
    "pattern": "",
}


def errors_of(response) -> dict[str, list[str]]:
    return {
        name: list(errors) for name, errors in response.context["form"].errors.items()
    }


def test_undeclared_trait_names_come_with_how_many_profiles_hold_them():
    TraitDefinition.objects.create(name="member_rating", type="number")
    ProfileFactory(traits={"member_rating": 3, "plan": "gold"})
    ProfileFactory(traits={"plan": "silver", "shoe_size": "38"})
    ProfileFactory(traits={})

    assert trait_names_undeclared() == [
        {"name": "plan", "profiles": 2},
        {"name": "shoe_size", "profiles": 1},
    ]


def test_the_trait_list_shows_declared_and_undeclared_traits(signed_in):
    TraitDefinition.objects.create(
        name="tier", type="text", allowed_values=["gold", "silver"]
    )
    TraitDefinition.objects.create(
        name="visits", type="number", minimum="100", maximum="2.5"
    )
    ProfileFactory(traits={"tier": "gold", "plan": "yearly"})

    page = signed_in.get(reverse("trait_list")).content.decode()

    assert "<td>Text</td>" in page
    assert "<div>one of gold, silver</div>" in page
    assert "<div>at least 100</div><div>at most 2.5</div>" in page
    assert (
        '<tr data-trait="plan"><td>plan</td><td>1</td>'
        f'<td><a href="{reverse("trait_new")}?name=plan">Declare…</a></td></tr>'
    ) in page
    assert '<tr data-trait="tier"><td>tier</td>' not in page


def test_a_valid_definition_is_saved_with_typed_allowed_values(signed_in):
    data = {**VALID, "minimum": "", "maximum": "", "allowed_values": "1, 2,3, 2"}

    response = signed_in.post(reverse("trait_new"), data)

    definition = TraitDefinition.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("trait_edit", kwargs={"pk": definition.pk})
    assert definition.name == "member_rating"
    assert definition.type == "number"
    assert definition.allowed_values == [1, 2, 3]
    assert definition.minimum is None


def test_allowed_values_pasted_one_a_line_are_as_many_values(signed_in):
    data = {**VALID, "name": "tier", "type": "text", "minimum": "", "maximum": ""}
    data["allowed_values"] = "gold\r\nsilver\nbronze, tin"

    response = signed_in.post(reverse("trait_new"), data)

    assert response.status_code == 302
    tier = TraitDefinition.objects.get()
    assert tier.allowed_values == ["gold", "silver", "bronze", "tin"]


def test_editing_keeps_the_allowed_values_as_text_in_the_form(signed_in):
    definition = TraitDefinition.objects.create(
        name="tier", type="text", allowed_values=["gold", "silver"]
    )

    response = signed_in.get(reverse("trait_edit", kwargs={"pk": definition.pk}))

    assert 'name="allowed_values" value="gold, silver"' in response.content.decode()


@pytest.mark.parametrize("kind", ["text", "date"])
def test_a_definition_with_no_allowed_values_is_edited_with_an_empty_box(
    signed_in, kind
):
    # given a trait declared with no allowed values
    definition = TraitDefinition.objects.create(name="colour", type=kind)
    url = reverse("trait_edit", kwargs={"pk": definition.pk})

    # when its page is read, and saved again with a new description
    page = signed_in.get(url).content.decode()
    form = signed_in.get(url).context["form"]
    data = {
        name: ("" if value is None else value)
        for name, value in form.initial.items()
        if name in form.fields
    }
    response = signed_in.post(url, {**data, "description": "Favourite colour"})

    # then the box is empty, and it still allows any value
    assert 'name="allowed_values" value=' not in page
    assert response.status_code == 302, response.context["form"].errors
    definition.refresh_from_db()
    assert definition.allowed_values == []
    assert definition.description == "Favourite colour"


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        (
            {"type": "text", "minimum": "", "maximum": "", "pattern": "([a-z"},
            {
                "pattern": [
                    "The pattern is not a valid regular expression: "
                    "unterminated character set at position 5."
                ]
            },
        ),
        (
            {"minimum": "5", "maximum": "1"},
            {"maximum": ["The maximum (1) is below the minimum (5)."]},
        ),
        (
            {"allowed_values": "1, two"},
            {"allowed_values": ["member_rating: 'two' is not a number"]},
        ),
        (
            {
                "type": "text",
                "minimum": "",
                "maximum": "",
                "allowed_values": "pro, PRO",
            },
            {
                "allowed_values": [
                    "'PRO' and 'pro' differ only in case or in how an accent is "
                    "written; keep one of them."
                ]
            },
        ),
        (
            {"pattern": "[0-9]+"},
            {"pattern": ["A pattern applies to text traits only."]},
        ),
        (
            {"type": "boolean"},
            {
                "minimum": ["A minimum or maximum applies to numbers only."],
                "maximum": ["A minimum or maximum applies to numbers only."],
            },
        ),
        (
            {"name": "2nd plan"},
            {
                "name": [
                    "“2nd plan” is not a trait name: use up to 100 letters, digits "
                    "and underscores."
                ]
            },
        ),
        (
            {"type": "colour"},
            {
                "type": [
                    "Select a valid choice. colour is not one of the available choices."
                ]
            },
        ),
    ],
)
def test_a_definition_that_breaks_a_rule_is_refused_naming_the_problem(
    signed_in, changes, errors
):
    response = signed_in.post(reverse("trait_new"), {**VALID, **changes})

    assert response.status_code == 200
    assert errors_of(response) == errors
    assert TraitDefinition.objects.count() == 0


def test_a_second_definition_with_the_same_name_is_refused(signed_in):
    TraitDefinition.objects.create(name="member_rating", type="text")

    response = signed_in.post(reverse("trait_new"), VALID)

    assert errors_of(response) == {
        "name": ["Trait definition with this Name already exists."]
    }
    assert TraitDefinition.objects.get().type == "text"


def test_rule_breaches_count_the_stored_values_that_would_be_refused():
    ok = ProfileFactory(traits={"member_rating": 3})
    high = ProfileFactory(traits={"member_rating": 7})
    text = ProfileFactory(traits={"member_rating": "lots"})
    ProfileFactory(traits={"member_rating": None})
    ProfileFactory(traits={"plan": "gold"})
    rule = TraitRule(name="member_rating", type="number", maximum=Decimal(5))

    breaches = trait_rule_breaches(rule=rule)

    assert ok.pk < high.pk < text.pk
    assert breaches == {
        "checked": 4,
        "breaking": 2,
        "examples": [
            {"profile_id": high.pk, "message": "member_rating: 7 is above 5"},
            {"profile_id": text.pk, "message": "member_rating: 'lots' is not a number"},
        ],
        "complete": True,
    }


def test_the_edit_page_shows_how_many_profiles_break_the_rule(signed_in):
    ProfileFactory(traits={"member_rating": 3})
    high = ProfileFactory(traits={"member_rating": 9})
    definition = TraitDefinition.objects.create(
        name="member_rating", type="number", maximum=5
    )

    response = signed_in.get(reverse("trait_edit", kwargs={"pk": definition.pk}))

    page = response.content.decode()
    assert "<strong data-breaking>1</strong> of 2 profiles with this trait" in page
    # Named by the address, as the people list names them.
    assert f"{high.email}</a>: member_rating: 9 is above 5</li>" in page


@pytest.mark.django_db
def test_every_name_an_import_makes_can_be_declared_and_others_are_not_offered(
    signed_in,
):
    from tests.factories import ProfileFactory

    ProfileFactory(
        traits={"grösse": "M", "2024_spend": 10, "email_needs_smtputf8": True}
    )
    ProfileFactory(traits={"first name": "Ana"})

    page = signed_in.get(reverse("trait_list")).content.decode()
    assert 'href="/traits/new/?name=gr%C3%B6sse"' in page or "name=gr%C3%B6sse" in page
    assert "name=2024_spend" in page
    assert "name=email_needs_smtputf8" not in page
    assert "name=first%20name" not in page

    for name in ("grösse", "2024_spend"):
        response = signed_in.post(
            reverse("trait_new"), {"name": name, "type": "text", "description": ""}
        )
        assert response.status_code == 302, response.content.decode()[:500]


@pytest.mark.django_db
def test_allowed_values_that_differ_only_as_values_are_matched_are_refused(
    signed_in,
):
    response = signed_in.post(
        reverse("trait_new"),
        {"name": "town", "type": "text", "allowed_values": "İstanbul, istanbul"},
    )

    assert response.status_code == 200
    assert "differ only in case" in response.content.decode()


def test_the_migration_clears_the_allowed_value_the_page_made_of_an_empty_box():
    migration = importlib.import_module(
        "profiles.migrations.0022_trait_allowed_values_unbracketed"
    )
    broken = TraitDefinition.objects.create(
        name="colour", type="text", allowed_values=["[]"]
    )
    kept = TraitDefinition.objects.create(
        name="tier", type="text", allowed_values=["[]", "gold"]
    )

    migration.allowed_brackets_clear(django_apps, None)

    broken.refresh_from_db()
    kept.refresh_from_db()
    assert (broken.allowed_values, kept.allowed_values) == ([], ["[]", "gold"])


def test_a_flag_bespoke_sets_is_not_listed_as_an_undeclared_trait():
    ProfileFactory(email="jörg@example.com", traits={"email_needs_smtputf8": True})
    ProfileFactory(email="kai@example.com", traits={"plan": "pro"})

    assert [row["name"] for row in trait_names_undeclared()] == ["plan"]


def test_the_edit_form_shows_bounds_as_written_and_keeps_the_name(signed_in):
    definition = TraitDefinition.objects.create(
        name="nps", type="number", minimum=Decimal("0"), maximum=Decimal("10")
    )
    url = reverse("trait_edit", args=[definition.pk])

    page = signed_in.get(url).content.decode()
    assert 'value="0"' in page
    assert 'value="10"' in page
    assert "0.000000" not in page

    # The name is the key sources send: another one is another trait.
    renamed = {**VALID, "name": "net_promoter_score", "minimum": "0", "maximum": "9"}
    signed_in.post(url, renamed)
    definition.refresh_from_db()
    assert (definition.name, definition.maximum) == ("nps", Decimal("9"))


def test_a_name_differing_from_a_declared_one_only_in_case_is_refused(signed_in):
    TraitDefinition.objects.create(name="plan", type="text")

    response = signed_in.post(
        reverse("trait_new"), {**VALID, "name": "Plan", "type": "text", "minimum": ""}
    )

    assert response.status_code == 200
    assert errors_of(response)["name"] == [
        "“Plan” differs from the declared trait “plan” only in case: the segment "
        "builder and templates would offer both. Edit that one, or have the source "
        "send one spelling."
    ]
    assert TraitDefinition.objects.count() == 1


def test_undeclaring_a_trait_keeps_the_values_profiles_hold(signed_in):
    definition = TraitDefinition.objects.create(name="nps", type="number")
    profile = ProfileFactory(traits={"nps": 9})
    url = reverse("trait_delete", args=[definition.pk])

    assert signed_in.get(url).status_code == 405
    response = signed_in.post(url, follow=True)

    assert not TraitDefinition.objects.exists()
    profile.refresh_from_db()
    assert profile.traits == {"nps": 9}
    page = response.content.decode()
    assert "The trait “nps” is no longer declared." in page
    assert [t["name"] for t in trait_names_undeclared()] == ["nps"]


@pytest.mark.parametrize(
    ("minimum", "maximum"),
    [
        ("0.0000001", "0.00001"),  # finer than the six decimals bounds once kept
        ("-999999999999999", "999999999999999"),  # 15 digits, the most a value has
        ("0.000000000000001", "1e14"),  # the smallest and the largest in range
    ],
)
def test_any_bound_a_number_trait_can_hold_is_kept_as_written(
    signed_in, minimum, maximum
):
    response = signed_in.post(
        reverse("trait_new"), {**VALID, "minimum": minimum, "maximum": maximum}
    )

    assert response.status_code == 302, errors_of(response)
    definition = TraitDefinition.objects.get()
    assert (definition.minimum, definition.maximum) == (
        Decimal(minimum),
        Decimal(maximum),
    )
    page = signed_in.get(reverse("trait_edit", args=[definition.pk])).content.decode()
    assert f'value="{Decimal(minimum).normalize():f}"' in page


def test_a_bound_finer_than_any_number_kept_is_refused_naming_why(signed_in):
    response = signed_in.post(
        reverse("trait_new"), {**VALID, "minimum": "0.0000000000000001"}
    )

    assert errors_of(response) == {
        "minimum": [
            "“0.0000000000000001” is out of range: a number other than 0 has at most "
            "15 digits before the point and is at least 0.000000000000001 in size."
        ]
    }
