"""Numbers in segment rules are read as imports and the tracking API read them."""

import pytest

from segments.compiler import profiles_matching
from segments.language import rule_validate
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("value", ["1_2", "١٢", "1e-5000", "-1e400", "1 2", "0x10"])
def test_a_value_no_import_would_read_as_a_number_is_refused(value):
    rule = {"attribute": "traits.score", "op": "gte", "value": value}

    assert [error.message for error in rule_validate(rule)] == [
        f"op 'gte' needs a number, not {value!r}"
    ]


def test_thousands_written_with_spaces_compare_as_the_number():
    ProfileFactory(email="big@example.com", traits={"score": 1_500_000})
    ProfileFactory(email="small@example.com", traits={"score": 999})

    matched = profiles_matching(
        {"attribute": "traits.score", "op": "gte", "value": "1 000 000"}
    )

    assert [profile.email for profile in matched] == ["big@example.com"]
