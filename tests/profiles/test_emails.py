import pytest

from profiles.emails import InvalidEmail, email_normalize


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("Ana.Souza@Example.com", "ana.souza@example.com"),
        ("  LIAM.OConnor@example.org ", "liam.oconnor@example.org"),
        ("kai.weber@xn--bcher-kva.example.com", "kai.weber@bücher.example.com"),
        ("kai.weber@bücher.example.com", "kai.weber@bücher.example.com"),
        ("ben.okafor+news@example.net", "ben.okafor+news@example.net"),
    ],
)
def test_it_gives_one_key_per_mailbox(raw, key):
    assert email_normalize(raw).key == key


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not-an-email", "invalid_email"),
        ("maria.garcia@@example.net", "invalid_email"),
        ("", "missing_email"),
        (None, "missing_email"),
    ],
)
def test_it_names_why_an_address_is_refused(raw, reason):
    with pytest.raises(InvalidEmail) as caught:
        email_normalize(raw)

    assert caught.value.reason == reason


def test_it_flags_a_non_ascii_local_part():
    assert email_normalize("jörg@example.com").ascii_only is False
    assert email_normalize("jorg@example.com").ascii_only is True
