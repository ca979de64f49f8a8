"""Email address normalisation: one canonical key per mailbox."""

from dataclasses import dataclass

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
