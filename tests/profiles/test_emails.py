import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiles.emails import (
    InvalidEmail,
    _plain_address,
    _validated_address,
    email_normalize,
)


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
        ("a" * 65 + "@example.com", "invalid_email"),
        ("ü" * 65 + "@example.com", "invalid_email"),
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


# The plain-address shortcut must answer exactly as email-validator does, for every
# address it answers at all.
ADDRESS_PIECES = st.sampled_from(
    ["a", "Z", "0", "9", ".", "..", "-", "--", "_", "+", "xn--", "'", "!", "é", " "]
)
ADDRESS_HOSTS = st.sampled_from(
    ["example.com", "EXAMPLE.ORG", "localhost", "x.test", "home.arpa", "x.c", "1.2.3"]
)
HOST_LABELS = st.lists(
    st.sampled_from(["a", "Z", "0", "-", "--", "xn--", "ab", "_", "é"]), max_size=6
).map("".join)
HOST_NAMES = st.tuples(
    st.lists(HOST_LABELS, min_size=1, max_size=3).map(".".join),
    st.sampled_from(["com", "ORG", "c", "c0m", "test", "arpa", "museum"]),
).map(".".join)


@given(
    local=st.lists(ADDRESS_PIECES, max_size=10).map("".join),
    host=st.one_of(
        ADDRESS_HOSTS, HOST_NAMES, st.lists(ADDRESS_PIECES, max_size=10).map("".join)
    ),
)
@settings(max_examples=3000, deadline=None)
def test_a_plain_address_is_read_as_email_validator_reads_it(local, host):
    address = f"{local}@{host}"
    plain = _plain_address(address)
    if plain is not None:
        assert plain == _validated_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "Ben.Okafor@Example.NET",
        "ben.okafor+news@example.net",
        "a_b-c%d@mail.shop.example.co.uk",
        "kai@xn--bcher-kva.example.com",
        "a@x.c",
        "x" * 64 + "@example.com",
        "a@" + ".".join(["x" * 63] * 3) + ".com",
    ],
)
def test_common_addresses_take_the_shortcut_with_the_same_answer(address):
    assert _plain_address(address) == _validated_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "x" * 65 + "@example.com",
        "a@ex--ample.com",
        "a@x.test",
        "a@home.arpa",
        "o'brien@example.com",
        "jörg@example.com",
        "kai@bücher.example.com",
        '"quoted"@example.com',
    ],
)
def test_anything_unusual_goes_to_email_validator(address):
    assert _plain_address(address) is None
