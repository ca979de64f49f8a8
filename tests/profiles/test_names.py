"""Names, places and phone numbers read the same way from every input path."""

import pytest

from profiles.names import field_text_clean


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Ana\u200b", "Ana"),
        ("\ufeffLyon", "Lyon"),
        ("Ana\u00adMaria", "AnaMaria"),
        ("Jo\u2060hn", "John"),
        ("Ana\nMaria", "Ana Maria"),
        ("  Ana \u00a0 Lee ", "Ana Lee"),
        # joiners some scripts and emoji need stay
        ("\u0645\u06cc\u200c\u062e\u0648", "\u0645\u06cc\u200c\u062e\u0648"),
    ],
)
def test_invisible_characters_are_left_out_and_white_space_is_one_space(raw, clean):
    assert field_text_clean(raw) == clean


def test_a_control_character_is_refused_by_name():
    with pytest.raises(ValueError, match="U\\+001B"):
        field_text_clean("Ana\x1b[31m")
