"""Email address normalisation: one canonical key per mailbox."""

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from email_validator import EmailNotValidError, validate_email

# The trait that says a profile's mailbox name is not ASCII: most ESPs cannot send
# to it without SMTPUTF8, so segments and the send check can tell.
SMTPUTF8_TRAIT = "email_needs_smtputf8"


class InvalidEmail(ValueError):
    """The text is not an email address; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# Slots: an import keeps one for each of up to a million rows.
@dataclass(frozen=True, slots=True)
class NormalizedEmail:
    key: str  # lower case, IDN domain in Unicode form: the identity of the mailbox
    display: str  # as the source wrote it, only stripped
    ascii_only: bool  # False when the local part is non-ASCII (SMTPUTF8 needed)


def email_normalize(raw: str | None) -> NormalizedEmail:
    """Validate an address and return its canonical key; raise InvalidEmail if it is none."""
    display = (raw or "").strip()
    if not display:
        raise InvalidEmail("missing_email", "no email address given")

    return _plain_address(display) or _validated_address(display)


def _validated_address(display: str) -> NormalizedEmail:
    try:
        # strict: a local part over 64 characters, which mail servers may refuse,
        # is refused here too (it is the only rule strict adds).
        checked = validate_email(display, check_deliverability=False, strict=True)
    except EmailNotValidError as exc:
        raise InvalidEmail("invalid_email", str(exc)) from exc

    local, domain = checked.normalized.rsplit("@", 1)
    # Plus-addresses stay distinct: 'ben+news@' is another mailbox than 'ben@'.
    return NormalizedEmail(
        key=f"{local.lower()}@{domain.lower()}",
        display=display,
        ascii_only=local.isascii(),
    )


# Most addresses are plain: ASCII, with a dot-atom of letters, digits and `_%+-`
# before the @. Such a local part needs no more checking than this pattern and its
# length, and email-validator leaves it as it is; the domain is still checked by
# email-validator, once per domain, since the same few domains come back again and
# again. A full check of every address cost as much as the rest of an identify, or
# of an import row. Anything else, any doubt included, gets the full check
# (tests/profiles/test_emails.py holds the two to the same answers).
_PLAIN = re.compile(r"([A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*)@([^@\s\"\\]+)")
LOCAL_MAX_CHARS = 64
ADDRESS_MAX_CHARS = 254
DOMAIN_CACHE_SIZE = 100_000


def _plain_address(display: str) -> NormalizedEmail | None:
    # ASCII only: a Unicode domain's ASCII form, which the limits are about, is
    # longer than the text.
    if len(display) > ADDRESS_MAX_CHARS or not display.isascii():
        return None
    found = _PLAIN.fullmatch(display)
    if found is None or len(found[1]) > LOCAL_MAX_CHARS:
        return None
    domain = _domain_key(found[2])
    if domain is None:
        return None
    key = f"{found[1].lower()}@{domain}"
    # Most addresses are written as their key: one string then serves as both, which
    # a large import, holding every row until it writes, keeps once (72 bytes a row).
    return NormalizedEmail(
        key=display if key == display else key, display=display, ascii_only=True
    )


@lru_cache(maxsize=DOMAIN_CACHE_SIZE)
def _domain_key(domain: str) -> str | None:
    """Return a domain's canonical form, or None if email-validator refuses it."""
    try:
        return _validated_address(f"a@{domain}").key.rsplit("@", 1)[1]
    except InvalidEmail:
        return None


def traits_flagged(traits: dict[str, Any], email: NormalizedEmail) -> dict[str, Any]:
    """Return the traits with the SMTPUTF8 flag the address needs.

    The same dict if it needs none, or has it already. Every path that gives a
    profile an address sets it: most ESPs cannot send to a non-ASCII mailbox name.
    """
    if email.ascii_only or traits.get(SMTPUTF8_TRAIT) is True:
        return traits
    return {**traits, SMTPUTF8_TRAIT: True}
