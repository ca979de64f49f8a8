"""Play the whole story on the shared fixtures through Bespoke's real input paths.

Imports the Mailchimp exports through the contact importer, posts the Segment
batches to /v1/batch with a write key, processes the events, builds the seed
segments, renders the spring campaign per recipient and sends it through the
configured Anymail backend (the local outbox by default), then prints what
happened at each step.
"""

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.test import Client

from campaigns import demo
from campaigns.models import Campaign, CampaignStatus, EmailTemplate
from campaigns.selectors import campaign_message_counts
from campaigns.sending import campaign_send_all, campaign_start
from profiles.importing import contact_import_file, contact_import_summary
from profiles.models import WriteKey
from profiles.processing import events_process_pending
from profiles.selectors import profile_status_counts
from segments.models import Segment
from segments.selectors import segment_count
from segments.services import segment_save


class Command(BaseCommand):
    help = "Run the demo story on the shared fixtures and print what happened."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--once",
            action="store_true",
            help="Do nothing if the demo campaign exists already (used by `make run`).",
        )
        parser.add_argument(
            "--empty",
            action="store_true",
            help="Make only the demo sign-in and write key, and load no data "
            "(`make run DEMO=no`).",
        )
        parser.add_argument(
            "--fixtures",
            type=Path,
            default=None,
            help="Folder of the shared fixtures (default: settings.BESPOKE_FIXTURES_DIR).",
        )

    def handle(
        self, *args, once: bool, fixtures: Path | None, empty: bool, **options
    ) -> None:
        if empty:
            self._ensure_demo_user()
            self.stdout.write(
                "The demo sign-in and write key are ready; no demo data was loaded."
            )
            return
        if once and Campaign.objects.filter(slug=demo.CAMPAIGN["slug"]).exists():
            self.stdout.write("Demo data is loaded already; `make demo` replays it.")
            return

        self.fixtures = fixtures or Path(settings.BESPOKE_FIXTURES_DIR)
        if not self.fixtures.is_dir():
            raise CommandError(
                f"The fixtures folder {self.fixtures} does not exist or is not a folder: "
                "pass --fixtures or set BESPOKE_FIXTURES_DIR to the shared/fixtures "
                "folder."
            )
        # Checked before anything is written, so a partial folder changes nothing.
        missing = [
            relative
            for relative in (*demo.MAILCHIMP_FILES, *demo.SEGMENT_BATCHES)
            if not (self.fixtures / relative).is_file()
        ]
        if missing:
            raise CommandError(
                f"The fixtures folder {self.fixtures} lacks {', '.join(missing)}: point "
                "it at the shared/fixtures folder."
            )

        self._ensure_demo_user()
        self._import_contacts()
        self._ingest_events()
        self._build_segments()
        self._send_campaign()
        self._summary()

    def _heading(self, text: str) -> None:
        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING(text))

    def _ensure_demo_user(self) -> None:
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            username=demo.DEMO_USERNAME,
            defaults={"is_staff": True, "is_superuser": True},
        )
        if created:
            # Only a new user gets the published password: a replay must not reset a
            # password someone changed, nor sign everyone out.
            user.set_password(demo.DEMO_PASSWORD)
            user.save()
        WriteKey.objects.get_or_create(
            key=demo.DEMO_WRITE_KEY, defaults={"name": "Demo site"}
        )

    def _import_contacts(self) -> None:
        self._heading("1. Contact import (Mailchimp audience exports)")
        for relative in demo.MAILCHIMP_FILES:
            path = self.fixtures / relative
            result = contact_import_file(filename=path.name, data=path.read_bytes())
            self.stdout.write(f"  {path.name}: {contact_import_summary(result)}")
            for row in result.rejections:
                self.stdout.write(
                    self.style.WARNING(
                        f"    rejected record {row['record']} (line {row['line']}) "
                        f"{row['email']!r}: {row['reason']} - {row['message']}"
                    )
                )

    def _ingest_events(self) -> None:
        self._heading("2. Tracking API (POST /v1/batch with a write key)")
        client = Client(HTTP_HOST="127.0.0.1")
        credentials = base64.b64encode(f"{demo.DEMO_WRITE_KEY}:".encode()).decode()
        for relative in demo.SEGMENT_BATCHES:
            body = json.loads((self.fixtures / relative).read_bytes())
            # A replay: the batch is sent now, so sentAt is now and the clock-skew
            # correction keeps each event at the time it happened in the capture.
            body["sentAt"] = datetime.now(tz=UTC).isoformat()
            response = client.post(
                "/v1/batch",
                data=json.dumps(body),
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Basic {credentials}",
            )
            answer = response.json()
            self.stdout.write(
                f"  {Path(relative).name}: HTTP {response.status_code}, "
                f"{answer.get('stored', 0)} stored, {answer.get('duplicates', 0)} duplicates, "
                f"{len(answer.get('rejected', []))} rejected"
            )
            for item in answer.get("rejected", []):
                self.stdout.write(
                    self.style.WARNING(
                        f"    rejected item #{item['index'] + 1} "
                        f"({str(item.get('messageId'))[:24]}): "
                        f"{item['code']} - {item['message']}"
                    )
                )

        processed = events_process_pending()
        self.stdout.write(f"  processed {processed} events into profiles")

    def _build_segments(self) -> None:
        self._heading("3. Segments (each one SQL query)")
        for spec in demo.SEGMENTS:
            segment = segment_save(
                name=spec["name"],
                slug=spec["slug"],
                rule=spec["rule"],
                description=spec["description"],
            )
            self.stdout.write(f"  {segment.name}: {segment_count(segment)} profiles")
        self.stdout.write(
            "  (the fixtures' orders are from March 2025, so windows of the last 30 days "
            "hold none of them)"
        )

    def _send_campaign(self) -> None:
        self._heading("4. Campaign: render per recipient and send")
        template, _ = EmailTemplate.objects.update_or_create(
            name=demo.TEMPLATE["name"],
            defaults={key: demo.TEMPLATE[key] for key in ("subject", "html", "text")},
        )
        campaign, _ = Campaign.objects.get_or_create(
            slug=demo.CAMPAIGN["slug"],
            defaults={
                "name": demo.CAMPAIGN["name"],
                "template": template,
                "segment": Segment.objects.get(slug=demo.CAMPAIGN["segment"]),
            },
        )
        if campaign.status not in (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED):
            counts = campaign_message_counts(campaign)
            self.stdout.write(
                f"  {campaign.name} was sent on an earlier run (nothing is sent twice): "
                f"{counts['sent']} sent, {counts['skipped']} skipped then"
            )
            return

        queued = campaign_start(campaign_id=campaign.pk)
        self.stdout.write(f"  {queued} messages queued for {campaign.name}")
        campaign_send_all(campaign_id=campaign.pk)
        counts = campaign_message_counts(campaign)
        self.stdout.write(
            f"  sent {counts['sent']}, skipped {counts['skipped']}, "
            f"failed {counts['failed']}, outcome unknown {counts['unknown']}"
        )
        for reason, count in counts["skip_reasons"].items():
            self.stdout.write(f"    skipped {count}: {reason}")

    def _summary(self) -> None:
        counts = profile_status_counts()
        self._heading("Profiles now")
        self.stdout.write(
            f"  {counts['total']} profiles ({counts['anonymous']} anonymous): "
            f"{counts['subscribed']} subscribed, {counts['unsubscribed']} unsubscribed, "
            f"{counts['cleaned']} cleaned, {counts['not_subscribed']} never subscribed"
        )
        self.stdout.write("")
        self.stdout.write(
            f"Sign in at {settings.BESPOKE_PUBLIC_URL}/ as {demo.DEMO_USERNAME} / "
            f"{demo.DEMO_PASSWORD}; the outbox shows every email sent."
        )
