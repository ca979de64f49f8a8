from decimal import Decimal

import pytest

from profiles.traits import TraitInvalid, TraitRule, trait_coerce


@pytest.mark.parametrize(
    ("rule", "raw", "stored"),
    [
        (TraitRule("age", "number"), "42", 42),
        (TraitRule("ratio", "number"), " 5.75 ", 5.75),
        (TraitRule("vip", "boolean"), "Yes", True),
        (TraitRule("vip", "boolean"), False, False),
        (TraitRule("birthday", "date"), "2024-07-14", "2024-07-14"),
        (TraitRule("plan", "text", allowed_values=("gold", "silver")), "gold", "gold"),
        (TraitRule("rating", "number", minimum=Decimal(1), maximum=Decimal(5)), 5, 5),
        (TraitRule("sku", "text", pattern=r"[A-Z]{3}-\d+"), "ABC-12", "ABC-12"),
        # JSON's words and whole numbers as the sender wrote them, not Python's
        (TraitRule("answer", "text"), True, "true"),
        (TraitRule("answer", "text"), False, "false"),
        (TraitRule("zip", "text"), 12345.0, "12345"),
        (TraitRule("zip", "text"), 2.5, "2.5"),
    ],
)
def test_it_stores_values_by_the_declared_type(rule, raw, stored):
    assert trait_coerce(rule, raw) == stored


@pytest.mark.parametrize(
    ("raw", "stored"),
    [("Oui", True), ("Non", False), ("ja", True), ("NEIN", False), ("Sí", True)]
    + [("não", False), ("WAHR", True), ("faux", False), ("on", True), (" N ", False)],
)
def test_a_boolean_trait_reads_yes_and_no_as_consent_columns_do(raw, stored):
    assert trait_coerce(TraitRule("vip", "boolean"), raw) is stored


def test_day_first_dates_are_read_only_in_the_declared_format():
    rule = TraitRule("birthday", "date")

    assert trait_coerce(rule, "03/04/2024", date_format="%d/%m/%Y") == "2024-04-03"
    with pytest.raises(TraitInvalid) as caught:
        trait_coerce(rule, "03/04/2024")
    assert caught.value.reason == "not_a_date"


def test_datetimes_are_stored_in_utc():
    rule = TraitRule("signed_up_at", "datetime")

    assert (
        trait_coerce(rule, "2025-03-15T11:05:30+03:00") == "2025-03-15T08:05:30+00:00"
    )


@pytest.mark.parametrize(
    ("rule", "raw", "reason"),
    [
        (TraitRule("age", "number"), "forty", "not_a_number"),
        (TraitRule("age", "number"), True, "not_a_number"),
        (TraitRule("vip", "boolean"), "maybe", "not_a_boolean"),
        (TraitRule("plan", "text", allowed_values=("gold",)), "bronze", "not_allowed"),
        (TraitRule("rating", "number", maximum=Decimal(5)), "6", "above_maximum"),
        (TraitRule("rating", "number", minimum=Decimal(1)), 0, "below_minimum"),
        (TraitRule("spend", "number"), "1e5000", "number_too_large"),
        (TraitRule("spend", "number"), "-1e400", "number_too_large"),
        (TraitRule("spend", "number"), 10**15, "number_too_large"),
        (
            TraitRule("sku", "text", pattern=r"[A-Z]{3}-\d+"),
            "abc-1",
            "pattern_mismatch",
        ),
    ],
)
def test_values_that_break_the_rules_are_refused_with_a_reason(rule, raw, reason):
    with pytest.raises(TraitInvalid) as caught:
        trait_coerce(rule, raw)

    assert caught.value.reason == reason
    assert caught.value.message.startswith(f"{rule.name}: ")


def test_a_pattern_that_backtracks_badly_is_stopped_not_left_running():
    rule = TraitRule("code", "text", pattern=r"(a|aa)+$")

    with pytest.raises(TraitInvalid) as caught:
        trait_coerce(rule, "a" * 40 + "!")

    assert caught.value.reason == "pattern_timeout"


def test_the_largest_number_kept_has_fifteen_digits_before_the_point():
    rule = TraitRule("spend", "number")

    assert trait_coerce(rule, "999999999999999") == 999_999_999_999_999
    assert trait_coerce(rule, "-999999999999999") == -999_999_999_999_999
    assert trait_coerce(rule, "-99999999999999.5") == -99_999_999_999_999.5
    assert trait_coerce(rule, "0") == 0


@pytest.mark.parametrize(
    "raw",
    ["1_0", "٥", "1٥", "１２", "1..2", "1e", "e5", "+-1", "NaN", "Infinity", "0x10"],
)
def test_only_ascii_digits_with_a_sign_a_point_and_an_exponent_are_numbers(raw):
    rule = TraitRule("spend", "number")

    with pytest.raises(TraitInvalid) as caught:
        trait_coerce(rule, raw)

    assert caught.value.reason == "not_a_number"
    assert caught.value.message == f"spend: {raw!r} is not a number"


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("-12.5", -12.5),
        ("+3e2", 300),
        (".5", 0.5),
        ("1 000", 1000),
        ("2.5E-3", 0.0025),
        ("1e-15", 1e-15),
        ("0e-5000", 0),
    ],
)
def test_the_usual_ways_of_writing_a_number_are_read(raw, stored):
    assert trait_coerce(TraitRule("spend", "number"), raw) == stored


@pytest.mark.parametrize("raw", ["1e-5000", "-1e-16", 1e-20])
def test_a_number_too_close_to_zero_is_refused_rather_than_kept_as_zero(raw):
    with pytest.raises(TraitInvalid) as caught:
        trait_coerce(TraitRule("spend", "number"), raw)

    assert caught.value.reason == "number_too_small"
    assert caught.value.message == (
        f"spend: {raw!r} is too small to keep (a number other than 0 must be at "
        "least 0.000000000000001 in size)"
    )


@pytest.mark.parametrize("raw", ["1e5000", "-1e5000", "1e99999999999999999999999"])
def test_a_number_out_of_range_says_so_for_either_sign(raw):
    with pytest.raises(TraitInvalid) as caught:
        trait_coerce(TraitRule("spend", "number"), raw)

    assert caught.value.reason == "number_too_large"
    assert caught.value.message == (
        f"spend: {raw!r} is out of range (a number may have at most 15 digits "
        "before the decimal point, whether positive or negative)"
    )


def test_a_long_value_is_quoted_cut_short_in_the_message():
    raw = str(int(1e300))

    with pytest.raises(TraitInvalid) as caught:
        trait_coerce(TraitRule("spend", "number"), raw)

    assert caught.value.message.startswith(f"spend: {raw[:40]!r}… (301 characters) ")
    assert len(caught.value.message) < 200


@pytest.mark.parametrize(
    ("raw", "stored"), [("1 000 000", 1_000_000), ("12 345.5", 12_345.5), ("7", 7)]
)
def test_spaces_may_group_thousands(raw, stored):
    assert trait_coerce(TraitRule("spend", "number"), raw) == stored


@pytest.mark.parametrize("raw", ["1 2", "12 34", "1  000", "1 000 00"])
def test_spaces_anywhere_else_make_no_number(raw):
    with pytest.raises(TraitInvalid) as caught:
        trait_coerce(TraitRule("spend", "number"), raw)

    assert caught.value.reason == "not_a_number"


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("31/03/2025 14:05", "2025-03-31T14:05:00+00:00"),
        ("31/03/2025 14:05:30", "2025-03-31T14:05:30+00:00"),
        ("31/03/2025", "2025-03-31T00:00:00+00:00"),
    ],
)
def test_a_date_and_time_is_read_in_the_declared_format_with_its_time(raw, stored):
    rule = TraitRule("last_login", "datetime")

    assert trait_coerce(rule, raw, date_format="%d/%m/%Y") == stored


def test_a_date_outside_the_declared_format_names_it_as_a_marketer_reads_it():
    with pytest.raises(TraitInvalid) as caught:
        trait_coerce(
            TraitRule("last_login", "datetime"), "2025-31-03", date_format="%d/%m/%Y"
        )

    assert str(caught.value) == (
        "last_login: '2025-31-03' is not a date in the format DD/MM/YYYY, a time "
        "(hh:mm or hh:mm:ss) may follow"
    )
