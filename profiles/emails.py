"""Email address normalisation: one canonical key per mailbox."""

import re
from dataclasses import dataclass

import email_validator
from email_validator import EmailNotValidError, validate_email


class InvalidEmail(ValueError):
    """The text is not an email address; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
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
        checked = validate_email(display, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidEmail("invalid_email", str(exc)) from exc

    local, domain = checked.normalized.rsplit("@", 1)
    # Plus-addresses stay distinct: 'ben+news@' is another mailbox than 'ben@'.
    return NormalizedEmail(
        key=f"{local.lower()}@{domain.lower()}",
        display=display,
        ascii_only=local.isascii(),
    )


# Most addresses are plain ASCII: letters, digits, dots, '_', '+' and '-' before the
# @, a dotted host name after it. email-validator accepts every one of these and
# changes nothing but the domain's case (tests/profiles/test_emails.py holds this
# against it); for them, its full check costs as much as the rest of an identify.
# Anything else, any doubt included, goes to email-validator.
_PLAIN = re.compile(
    r"(?P<local>[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*)"
    r"@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})"
)
LOCAL_MAX_CHARS = 64
DOMAIN_MAX_CHARS = 253
ADDRESS_MAX_CHARS = 254


def _plain_address(display: str) -> NormalizedEmail | None:
    if len(display) > ADDRESS_MAX_CHARS:
        return None
    found = _PLAIN.fullmatch(display)
    if found is None:
        return None
    local, domain = found["local"], found["domain"].lower()
    # '--' marks Punycode and its look-alikes, which email-validator rules on.
    if len(local) > LOCAL_MAX_CHARS or len(domain) > DOMAIN_MAX_CHARS or "--" in domain:
        return None
    if any(
        domain == name or domain.endswith(f".{name}")
        for name in email_validator.SPECIAL_USE_DOMAIN_NAMES
    ):
        return None
    return NormalizedEmail(
        key=f"{local.lower()}@{domain}", display=display, ascii_only=True
    )
