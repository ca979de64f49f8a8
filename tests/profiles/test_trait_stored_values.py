"""Values stored before their trait was declared, or before its type or rules changed."""

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from profiles.health import trait_rule_breaches
from profiles.models import TraitDefinition, TraitType
from profiles.traits import TraitRule
from segments.compiler import profiles_matching
from segments.selectors import segment_members
from segments.services import segment_save
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db


def test_a_value_not_stored_as_its_type_counts_as_breaking_the_rule():
    ProfileFactory(traits={"loyal": True})
    yes = ProfileFactory(traits={"loyal": "yes"})
    upper = ProfileFactory(traits={"loyal": "TRUE"})
    one = ProfileFactory(traits={"loyal": 1})
    ProfileFactory(traits={"loyal": False})
    ProfileFactory(traits={"loyal": None})

    breaches = trait_rule_breaches(rule=TraitRule("loyal", "boolean"))

    how = "is stored as it was sent, not as its declared type stores it (true)"
    assert breaches == {
        "checked": 6,
        "breaking": 3,
        "examples": [
            {"profile_id": yes.pk, "message": f"loyal: 'yes' {how}"},
            {"profile_id": upper.pk, "message": f"loyal: 'TRUE' {how}"},
            {"profile_id": one.pk, "message": f"loyal: 1 {how}"},
        ],
        "complete": True,
    }


@pytest.mark.parametrize(
    ("rule", "stored", "breaking"),
    [
        # A whole float is the number it holds, as PostgreSQL compares them.
        (TraitRule("pts", "number"), [42, 42.0, 4.5], 0),
        (TraitRule("pts", "number"), ["42", " 7 ", "1 000", True], 4),
        (TraitRule("renew", "date"), ["2026-12-10", "--12-10"], 0),
        (TraitRule("renew", "date"), ["2026-12-10 ", "2026-12-10T05:00:00Z"], 2),
        (TraitRule("plan", "text"), ["pro", "42"], 0),
        (TraitRule("plan", "text"), [42, False, " pro"], 3),
        # Stored in the declared spelling of an allowed value.
        (TraitRule("plan", "text", allowed_values=("Pro",)), ["Pro", "PRO"], 1),
    ],
)
def test_each_type_counts_what_it_would_store_otherwise(rule, stored, breaking):
    for value in stored:
        ProfileFactory(traits={rule.name: value})

    assert trait_rule_breaches(rule=rule)["breaking"] == breaking


def test_the_page_counts_the_values_a_segment_would_miss(signed_in):
    for value in ("yes", "true", True, "1", "TRUE", "no", False):
        ProfileFactory(traits={"loyal": value})
    definition = TraitDefinition.objects.create(name="loyal", type=TraitType.BOOLEAN)

    page = signed_in.get(reverse("trait_edit", kwargs={"pk": definition.pk}))

    assert (
        "<strong data-breaking>5</strong> of 7 profiles with this trait hold a value "
        "that breaks the rule or is not stored as its type."
    ) in page.content.decode()


# The tester's values, sent while the traits were undeclared (stored as sent).
SENT = {
    "loyal": ["yes", "true", True, "1", "TRUE", "no", False],
    "pts": ["42", 42, "1 000", "abc", 4.5, "1e3", " 7 "],
    "renew": [
        "2026-12-10",
        "12/10/2026",
        "2026-12-10T05:00:00Z",
        "--12-10",
        "20261210",
        "2026-12-10 ",
        "2026/12/10",
    ],
}
AFTER_RENEWAL = datetime(2026, 12, 12, tzinfo=UTC)
CONVERTED = {
    "loyal": [True, True, True, True, True, False, False],
    # "abc" is no number: kept as it was.
    "pts": [42, 42, 1000, "abc", 4.5, 1000, 7],
    "renew": [
        "2026-12-10",
        "12/10/2026",
        "2026-12-10",
        "--12-10",
        "2026-12-10",
        "2026-12-10",
        "2026/12/10",
    ],
}


@pytest.fixture
def sent():
    return [
        ProfileFactory(
            traits={name: values[i] for name, values in SENT.items()} | {"pet": "cat"}
        )
        for i in range(7)
    ]


def declare(client, name: str, kind: str, **rules):
    data = {"name": name, "type": kind, "description": "", **rules}
    response = client.post(reverse("trait_new"), data)
    assert response.status_code == 302, response.content.decode()[:500]
    return TraitDefinition.objects.get(name=name)


def test_declaring_a_trait_converts_the_values_already_stored(
    signed_in, sent, tasks_inline, django_capture_on_commit_callbacks
):
    vips = segment_save(
        name="VIP", rule={"attribute": "traits.loyal", "op": "eq", "value": True}
    )

    with django_capture_on_commit_callbacks(execute=True):
        for name, kind in (("loyal", "boolean"), ("pts", "number"), ("renew", "date")):
            declare(signed_in, name, kind)

    for profile in sent:
        profile.refresh_from_db()
    for name, values in CONVERTED.items():
        assert [profile.traits[name] for profile in sent] == values
    assert {profile.traits["pet"] for profile in sent} == {"cat"}
    # Segments, templates and the page agree.
    assert segment_members(vips).count() == 5
    many = {"attribute": "traits.pts", "op": "gt", "value": 10}
    assert profiles_matching(many).count() == 4
    renewed = {"attribute": "traits.renew", "op": "within_last_days", "value": 5}
    assert profiles_matching(renewed, now=AFTER_RENEWAL).count() == 4
    figures = TraitDefinition.objects.values_list(
        "name", "values_status", "values_checked", "values_converted", "values_kept"
    )
    assert sorted(figures) == [
        ("loyal", "done", 7, 5, 0),
        ("pts", "done", 7, 4, 1),
        ("renew", "done", 7, 3, 2),
    ]


def test_the_page_says_how_the_conversion_went(
    signed_in, sent, tasks_inline, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        definition = declare(signed_in, "pts", "number")

    page = signed_in.get(reverse("trait_edit", kwargs={"pk": definition.pk}))

    text = page.content.decode()
    assert (
        "brought to this trait's type (number) on "
        in text.split('data-values-run="done"')[1]
    )
    assert "<strong data-values-checked>7</strong> checked" in text
    assert "<strong data-values-converted>4</strong> converted" in text
    assert "<strong data-values-kept>1</strong> kept as they were" in text
    assert "<strong data-breaking>1</strong> of 7 profiles" in text
    assert "pts: &#x27;abc&#x27; is not a number" in text


def test_the_page_says_a_conversion_is_under_way_until_it_is_done(signed_in, sent):
    # No worker: the run waits in the database.
    definition = declare(signed_in, "loyal", "boolean")

    page = signed_in.get(reverse("trait_edit", kwargs={"pk": definition.pk}))

    text = page.content.decode()
    assert 'data-values-run="pending"' in text
    assert "<strong data-values-checked>0</strong> checked so far" in text
    # What segments would miss meanwhile is counted.
    assert "<strong data-breaking>5</strong> of 7 profiles" in text
    assert "data-convert" not in text


def test_a_change_of_type_or_rule_converts_again_and_a_description_does_not(
    signed_in, django_capture_on_commit_callbacks
):
    definition = TraitDefinition.objects.create(
        name="pts",
        type=TraitType.NUMBER,
        values_status="done",
        values_checked=7,
        values_after_id=99,
    )
    url = reverse("trait_edit", kwargs={"pk": definition.pk})
    form = {"type": "number", "description": "", "minimum": "", "maximum": ""}

    with django_capture_on_commit_callbacks() as described:
        signed_in.post(url, {**form, "description": "Loyalty points"})
    definition.refresh_from_db()
    assert (definition.values_status, definition.values_checked) == ("done", 7)
    assert described == []

    with django_capture_on_commit_callbacks() as bounded:
        signed_in.post(url, {**form, "minimum": "0"})
    definition.refresh_from_db()
    assert (definition.values_status, definition.values_checked) == ("pending", 0)
    assert definition.values_after_id == 0
    assert len(bounded) == 1

    with django_capture_on_commit_callbacks() as retyped:
        signed_in.post(url, {**form, "type": "text"})
    assert len(retyped) == 1


def test_the_stored_values_can_be_converted_again_from_the_page(
    signed_in, tasks_inline, django_capture_on_commit_callbacks
):
    definition = TraitDefinition.objects.create(
        name="loyal", type=TraitType.BOOLEAN, values_status="done"
    )
    # Stored as sent by an import that read the schema before the trait was declared.
    late = ProfileFactory(traits={"loyal": "yes"})
    page = signed_in.get(reverse("trait_edit", kwargs={"pk": definition.pk}))
    assert "data-convert" in page.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in.post(
            reverse("trait_values_convert", kwargs={"pk": definition.pk})
        )

    assert response.status_code == 302
    late.refresh_from_db()
    assert late.traits == {"loyal": True}
