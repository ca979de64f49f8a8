"""The local outbox: an Anymail backend that keeps each email in the database.

It stands where an ESP would on the embedded defaults, so the sending path is the
same Anymail interface (AnymailMessage, anymail_status, recipient statuses) that a
real ESP backend gives, and the marketer UI can list and show what went out.
"""

import uuid
from typing import Any

from anymail.backends.base import AnymailBaseBackend, BasePayload
from anymail.message import AnymailRecipientStatus

from campaigns.models import OutboxEmail


class OutboxPayload(BasePayload):
    """Collects the parts Anymail hands over, in the shape OutboxEmail stores."""

    def init_payload(self) -> None:
        self.data: dict[str, Any] = {
            "to": [],
            "headers": {},
            "metadata": {},
            "tags": [],
            "text": "",
            "html": "",
            "subject": "",
            "from_email": "",
        }
        self.recipient_emails: list[str] = []

    def set_from_email(self, email) -> None:
        self.data["from_email"] = email.address

    def set_recipients(self, recipient_type: str, emails) -> None:
        self.data["to"] += [email.address for email in emails]
        self.recipient_emails += [email.addr_spec for email in emails]

    def set_subject(self, subject: str) -> None:
        self.data["subject"] = subject

    def set_reply_to(self, emails) -> None:
        if emails:
            self.data["headers"]["Reply-To"] = ", ".join(e.address for e in emails)

    def set_extra_headers(self, headers) -> None:
        self.data["headers"].update({str(k): str(v) for k, v in headers.items()})

    def set_text_body(self, body: str) -> None:
        self.data["text"] = body

    def set_html_body(self, body: str) -> None:
        self.data["html"] = body

    def set_metadata(self, metadata: dict) -> None:
        self.data["metadata"] = metadata

    def set_tags(self, tags: list[str]) -> None:
        self.data["tags"] = list(tags)

    def set_track_clicks(self, track_clicks: bool) -> None:
        """The outbox has no click tracking; accept the flag and do nothing."""

    def set_track_opens(self, track_opens: bool) -> None:
        """The outbox has no open tracking; accept the flag and do nothing."""


class OutboxEmailBackend(AnymailBaseBackend):
    """Anymail backend that 'sends' by writing the email to the OutboxEmail table."""

    esp_name = "Outbox"

    def build_message_payload(self, message, defaults) -> OutboxPayload:
        return OutboxPayload(message=message, defaults=defaults, backend=self)

    def post_to_esp(self, payload: OutboxPayload, message) -> OutboxEmail:
        return OutboxEmail.objects.create(
            esp_message_id=uuid.uuid4().hex, **payload.data
        )

    def parse_recipient_status(
        self, response: OutboxEmail, payload: OutboxPayload, message
    ) -> dict[str, AnymailRecipientStatus]:
        status = AnymailRecipientStatus(
            message_id=response.esp_message_id, status="sent"
        )
        return dict.fromkeys(payload.recipient_emails, status)
