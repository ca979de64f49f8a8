"""QA pass qa11: declaring a trait leaves numbers imported as text unconverted on SQLite.

On the embedded default (`make run`, SQLite) a marketer imports 50,000 people
with a "Loyalty Points" column (stored as text, "7", as no trait is declared),
then declares `loyalty_points` a number. The trait's page says "of 50000 checked,
0 converted", the values stay text, and its count of values "not stored as its
type" leaves them all out. On PostgreSQL the same run converts them.

Fixed: the run reads each profile's traits whole, and the Traits page's count
reads them through trait_values_stored, which decodes the column whole on SQLite.

Cause: profiles/trait_values.py `_batch_read` (and profiles/health.py
`trait_rule_breaches`) read the value with `KeyTransform`, which on SQLite is
`JSON_EXTRACT`: the JSON text "7" comes back as the SQL text 7, which the JSON
field decodes as the number 7, so the value looks converted already ("true" for a
boolean likewise). A value that is no JSON by itself ("1 000") is read as text
and converted, which is why the existing test passes on SQLite.
"""

import pytest

from profiles.health import trait_values_stored
from profiles.models import Profile, TraitDefinition, TraitType
from profiles.trait_values import trait_values_conform_batch

pytestmark = pytest.mark.django_db(databases=["default", "sqlite"])


@pytest.mark.parametrize(
    ("kind", "stored", "typed"),
    [
        (TraitType.NUMBER, "7", 7),
        (TraitType.BOOLEAN, "true", True),
    ],
)
@pytest.mark.parametrize("database", ["default", "sqlite"])
def test_a_value_imported_as_text_is_converted_when_declared(
    database, kind, stored, typed
):
    # Given a profile whose trait an import stored as text
    profiles = Profile.objects.using(database)
    ann = profiles.create(email="ann@example.com", traits={"pts": stored})

    # When the trait is declared and its values converted
    definition = TraitDefinition.objects.using(database).create(
        name="pts", type=kind, values_status="pending"
    )
    trait_values_conform_batch(trait_definition_id=definition.pk, using=database)

    # Then the value is stored as its type, and counted as converted
    assert profiles.get(pk=ann.pk).traits == {"pts": typed}
    definition.refresh_from_db(using=database)
    assert (definition.values_checked, definition.values_converted) == (1, 1)


@pytest.mark.parametrize("database", ["default", "sqlite"])
def test_the_traits_page_reads_a_value_stored_as_text_as_text(database):
    profiles = Profile.objects.using(database)
    profiles.create(email="ann@example.com", traits={"pts": "7", "vip": "true"})
    profiles.create(email="ben@example.com", traits={"pts": 7, "vip": True})

    points = [value for _, value in trait_values_stored("pts", using=database)]
    vip = [value for _, value in trait_values_stored("vip", using=database)]

    assert points == ["7", 7]
    assert vip == ["true", True]
