"""ESP tracking webhooks, posted with the shared fixtures' exact bytes through anymail."""

import json
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from campaigns.models import Message, MessageStatus
from campaigns.tasks import esp_events_sweep_task
from profiles.health import sources_health
from profiles.importing import contact_import_file
from profiles.models import (
    ConsentRecord,
    Event,
    Profile,
    SourceHour,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
    WebhookDelivery,
)
from profiles.processing import events_process_pending
from profiles.services import suppression_hash
from profiles.source_counts import source_hours_rebuild
from tests.factories import CampaignFactory

SENDGRID = "/anymail/sendgrid/tracking/"
MAILGUN = "/anymail/mailgun/tracking/"
MAILCHIMP = [
    "mailchimp/subscribed_members_export.csv",
    "mailchimp/unsubscribed_members_export.csv",
    "mailchimp/cleaned_members_export.csv",
]


@pytest.fixture
def esp_settings(settings, load_fixture):
    sendgrid = load_fixture("anymail/sendgrid/webhook_headers.json", as_json=True)
    mailgun = load_fixture("anymail/mailgun/webhook_headers.json", as_json=True)
    settings.ANYMAIL = {
        "WEBHOOK_SECRET": "fixtureuser:fixture-webhook-password",
        "MAILGUN_WEBHOOK_SIGNING_KEY": mailgun["webhook_signing_key"],
        "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": sendgrid[
            "verification_public_key"
        ],
    }
    return settings


@pytest.fixture
def people(db, load_fixture, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    for name in MAILCHIMP:
        contact_import_file(filename=name.rsplit("/", 1)[1], data=load_fixture(name))


@pytest.fixture
def post(client, load_fixture):
    """Post an ESP fixture body with its recorded headers, as the ESP would."""

    def send(esp: str, name: str, *, body: bytes | None = None, **changes):
        headers_file = load_fixture(f"anymail/{esp}/webhook_headers.json", as_json=True)
        if esp == "sendgrid":
            headers = dict(headers_file["deliveries"][name])
        else:
            headers = dict(headers_file["common_headers"])
        headers.pop("Content-Type")
        headers.update(changes)
        return client.post(
            SENDGRID if esp == "sendgrid" else MAILGUN,
            data=load_fixture(f"anymail/{esp}/{name}") if body is None else body,
            content_type="application/json",
            headers=headers,
        )

    return send


def status(email: str) -> str:
    return Profile.objects.get(email=email).subscription_status


def suppressed(email: str) -> str | None:
    found = Suppression.objects.filter(email_hash=suppression_hash(email)).first()
    return found.reason if found else None


def test_every_sendgrid_fixture_has_the_effect_the_fixtures_give(
    esp_settings, people, post
):
    assert status("olivia.brown@example.net") == SubscriptionStatus.SUBSCRIBED
    for name in (
        "delivered.json",
        "open.json",
        "click.json",
        "bounce.json",
        "spamreport.json",
        "batch_mixed.json",
    ):
        assert post("sendgrid", name).status_code == 200, name
    esp_events_sweep_task()
    events_process_pending()

    assert suppressed("lukasz.nowak@example.com") == SuppressionReason.HARD_BOUNCE
    assert Profile.objects.get(email="lukasz.nowak@example.com").suppressed_at
    assert suppressed("arjun.shah@example.net") == SuppressionReason.COMPLAINT
    assert status("olivia.brown@example.net") == SubscriptionStatus.UNSUBSCRIBED
    # Bespoke has one marketing list: a group unsubscribe is an unsubscribe.
    assert status("noah.wilson@example.com") == SubscriptionStatus.UNSUBSCRIBED
    noah = ConsentRecord.objects.get(
        profile__email="noah.wilson@example.com", source="esp:sendgrid"
    )
    assert noah.evidence["esp_group_id"] == 21045
    # Deferred, and a message the ESP dropped: nothing changes.
    assert status("mia.johnson@example.net") == SubscriptionStatus.SUBSCRIBED
    assert suppressed("mia.johnson@example.net") is None
    # (Jennifer's address is on the list from the cleaned export, not the drop.)
    assert Suppression.objects.filter(source__startswith="esp:").count() == 2

    ben = Profile.objects.get(email="ben.okafor@example.net")
    assert ben.last_opened_at == datetime(2025, 3, 14, 15, 1, 10, tzinfo=UTC)
    assert ben.last_clicked_at == datetime(2025, 3, 14, 15, 1, 21, tzinfo=UTC)
    click = Event.objects.get(event="Email Link Clicked")
    assert click.properties["link_url"].startswith("https://shop.example.com/")
    assert click.properties["campaign_id"] == "spring_sale_2025"
    # Emma's open was a machine's: kept, but no open of hers.
    emma = Profile.objects.get(email="emma.davis@example.org")
    assert emma.last_opened_at is None
    assert Event.objects.get(profile=emma).properties["machine_open"] is True
    assert WebhookDelivery.objects.filter(source="esp:sendgrid").count() == 12
    dropped = WebhookDelivery.objects.get(source="esp:sendgrid", topic="rejected")
    assert "dropped the message (bounced)" in dropped.error


def test_every_mailgun_fixture_has_the_effect_the_fixtures_give(
    esp_settings, people, post
):
    for name in (
        "delivered.json",
        "opened.json",
        "clicked.json",
        "failed_permanent.json",
        "failed_temporary.json",
        "complained.json",
        "unsubscribed.json",
    ):
        assert post("mailgun", name).status_code == 200, name
    esp_events_sweep_task()
    events_process_pending()

    assert suppressed("sofia.rossi@example.com") == SuppressionReason.HARD_BOUNCE
    assert suppressed("emma.davis@example.org") == SuppressionReason.COMPLAINT
    assert status("hannah.schmidt@example.org") == SubscriptionStatus.UNSUBSCRIBED
    click = Event.objects.get(event="Email Link Clicked")
    # The abandoned-cart recovery click is attributed to Ana's checkout.
    assert click.properties["checkout_id"].startswith("b7d5a9e0")
    assert click.profile.email == "ana.souza@example.com"
    assert click.profile.last_clicked_at is not None
    deferred = WebhookDelivery.objects.get(source="esp:mailgun", topic="deferred")
    assert deferred.processed_at is not None


def test_a_repeated_or_replayed_event_changes_nothing_again(esp_settings, people, post):
    post("sendgrid", "batch_mixed.json")
    esp_events_sweep_task()
    olivia = Profile.objects.get(email="olivia.brown@example.net")
    records = ConsentRecord.objects.filter(profile=olivia).count()

    assert post("sendgrid", "batch_mixed.json").status_code == 200
    esp_events_sweep_task()

    assert ConsentRecord.objects.filter(profile=olivia).count() == records
    assert WebhookDelivery.objects.filter(source="esp:sendgrid").count() == 7


@pytest.mark.parametrize(
    "changes",
    [
        {"Authorization": "Basic d3Jvbmc6d3Jvbmc="},  # wrong:wrong
        {"X-Twilio-Email-Event-Webhook-Signature": "MEUCIQDS"},
    ],
    ids=["wrong secret", "wrong signature"],
)
def test_a_request_that_fails_its_checks_stores_nothing(
    esp_settings, people, post, changes
):
    response = post("sendgrid", "bounce.json", **changes)

    assert response.status_code == 400
    assert not WebhookDelivery.objects.exists()
    assert suppressed("lukasz.nowak@example.com") is None


def test_without_a_shared_secret_every_event_is_refused(esp_settings, people, post):
    del esp_settings.ANYMAIL["WEBHOOK_SECRET"]

    response = post("mailgun", "unsubscribed.json")

    assert response.status_code == 400
    assert not WebhookDelivery.objects.exists()
    assert status("hannah.schmidt@example.org") == SubscriptionStatus.SUBSCRIBED


def test_an_event_about_bespokes_own_message_finds_it_by_its_metadata(
    esp_settings, people, post, load_fixture
):
    ben = Profile.objects.get(email="ben.okafor@example.net")
    campaign = CampaignFactory(slug="spring")
    message = Message.objects.create(
        campaign=campaign, profile=ben, status=MessageStatus.SENT
    )
    events = json.loads(load_fixture("anymail/sendgrid/open.json"))
    events[0]["message_id"] = str(message.pk)  # Bespoke's metadata, sent as custom args
    body = json.dumps(events).encode()

    # The recorded signature is of the recorded bytes: check the secret only here.
    del esp_settings.ANYMAIL["SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY"]
    assert post("sendgrid", "open.json", body=body).status_code == 200
    esp_events_sweep_task()

    opened = Event.objects.get(event="Email Opened")
    assert opened.properties["campaign_id"] == "spring"
    assert opened.profile == ben


def test_a_failure_is_kept_and_the_sweep_finishes_it(
    esp_settings, people, post, monkeypatch
):
    from campaigns import tracking

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(tracking, "consent_record", broken)
    assert post("mailgun", "unsubscribed.json").status_code == 200
    esp_events_sweep_task()
    kept = WebhookDelivery.objects.get(source="esp:mailgun")
    assert kept.processed_at is None
    assert "database went away" in kept.error

    monkeypatch.undo()
    esp_events_sweep_task()

    assert status("hannah.schmidt@example.org") == SubscriptionStatus.UNSUBSCRIBED
    kept.refresh_from_db()
    assert kept.processed_at is not None


def esp_health() -> dict:
    return next(source for source in sources_health() if source["name"] == "esp")


def test_the_sources_page_counts_refusals_and_deliveries_of_the_esps(
    esp_settings, people, post, admin_client
):
    post("sendgrid", "bounce.json", Authorization="Basic d3Jvbmc6d3Jvbmc=")
    post("mailgun", "failed_temporary.json")
    post("sendgrid", "batch_mixed.json")
    esp_events_sweep_task()

    health = esp_health()
    refused = [(g["code"], g["count"]) for g in health["refused_requests"]]
    # By ESP: a secret wrong at one of them shows as its own.
    assert refused == [("validation_failed:sendgrid", 1)]
    assert health["unconfigured"] is False
    assert health["webhook_notes"] == 4  # deferred twice, queued, dropped
    # Counted as each was applied, as a count of the table finds them.
    kept = WebhookDelivery.objects.filter(source__startswith="esp:")
    assert health["daily_total"] == kept.count() > 4
    counted = set(SourceHour.objects.values_list("source", "unit", "done", "noted"))
    source_hours_rebuild()
    assert (
        set(SourceHour.objects.values_list("source", "unit", "done", "noted"))
        == counted
    )
    page = admin_client.get(reverse("sources_health")).content.decode()
    assert "ESP tracking webhooks" in page


def test_the_sources_page_says_when_no_esp_secret_is_set(
    esp_settings, post, admin_client
):
    del esp_settings.ANYMAIL["WEBHOOK_SECRET"]

    post("mailgun", "delivered.json")

    health = esp_health()
    assert health["unconfigured"] is True
    assert [g["code"] for g in health["refused_requests"]] == ["unconfigured:mailgun"]
    page = admin_client.get(reverse("sources_health")).content.decode()
    assert "No ESP webhook secret is set (<code>ANYMAIL_WEBHOOK_SECRET</code>)" in page


def test_a_campaigns_page_shows_what_the_esp_reported_of_its_messages(
    esp_settings, people, post, load_fixture, admin_client
):
    del esp_settings.ANYMAIL["SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY"]
    campaign = CampaignFactory(slug="spring")
    sent = {}
    for email in ("ben.okafor@example.net", "emma.davis@example.org"):
        profile = Profile.objects.get(email=email)
        sent[email] = Message.objects.create(
            campaign=campaign, profile=profile, status=MessageStatus.SENT
        )
    # Ben's click arrives before his open; Emma's open is a machine's.
    for name, email, index in (
        ("click.json", "ben.okafor@example.net", 0),
        ("open.json", "ben.okafor@example.net", 0),
        ("batch_mixed.json", "emma.davis@example.org", 5),
    ):
        events = json.loads(load_fixture(f"anymail/sendgrid/{name}"))
        events[index]["message_id"] = str(sent[email].pk)
        post("sendgrid", name, body=json.dumps(events[index : index + 1]).encode())
    esp_events_sweep_task()

    ben = Message.objects.get(pk=sent["ben.okafor@example.net"].pk)
    assert ben.clicked_at == datetime(2025, 3, 14, 15, 1, 21, tzinfo=UTC)
    assert ben.opened_at == datetime(2025, 3, 14, 15, 1, 10, tzinfo=UTC)
    assert Message.objects.get(pk=sent["emma.davis@example.org"].pk).opened_at is None
    page = admin_client.get(reverse("campaign_detail", args=["spring"]))
    html = page.content.decode()
    assert 'data-result="opened"><div class="figure">1</div>' in html
    assert "50.0 % of sent" in html


def sendgrid_events(esp_settings, post, events: list[dict]):
    """Post SendGrid events checked by the shared secret only (no signature)."""
    esp_settings.ANYMAIL.pop("SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY", None)
    response = post("sendgrid", "open.json", body=json.dumps(events).encode())
    esp_events_sweep_task()
    return response


def sendgrid_event(email: str, event: str, event_id: str, **fields) -> dict:
    return {
        "email": email,
        "event": event,
        "sg_event_id": event_id,
        "sg_message_id": f"m-{event_id}",
        "timestamp": 1741962700,
        **fields,
    }


def test_an_unsubscribe_of_a_message_sent_before_an_address_change_lands(
    esp_settings, people, post
):
    # given a message sent to Olivia's old address, which she has changed since
    olivia = Profile.objects.get(email="olivia.brown@example.net")
    message = Message.objects.create(
        campaign=CampaignFactory(),
        profile=olivia,
        status=MessageStatus.SENT,
        to_email="olivia.brown@example.net",
    )
    Profile.objects.filter(pk=olivia.pk).update(email="olivia@example.org")

    # when the ESP reports her unsubscribe through that message
    unsubscribe = sendgrid_event(
        "olivia.brown@example.net", "unsubscribe", "u-1", message_id=str(message.pk)
    )
    sendgrid_events(esp_settings, post, [unsubscribe])

    # then she is unsubscribed, and the message says so
    olivia.refresh_from_db()
    assert olivia.subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert Message.objects.get(pk=message.pk).unsubscribed_at is not None


def test_a_value_postgresql_cannot_keep_spoils_no_other_event_of_the_batch(
    esp_settings, people, post
):
    batch = [
        sendgrid_event("mia.johnson@example.net", "open", "p-1"),
        sendgrid_event("grace.lee@example.com", "open", "p-2\x00", useragent="O\x00"),
        sendgrid_event("mia.johnson@example.net", "unsubscribe", "p-3"),
    ]

    assert sendgrid_events(esp_settings, post, batch).status_code == 200

    assert WebhookDelivery.objects.count() == 3
    assert status("mia.johnson@example.net") == SubscriptionStatus.UNSUBSCRIBED
    kept = WebhookDelivery.objects.get(delivery_id="p-2\ufffd")
    assert kept.payload["user_agent"] == "O\ufffd"


def test_a_blocked_message_is_no_bounce_of_the_address(esp_settings, people, post):
    blocked = sendgrid_event(
        "mia.johnson@example.net",
        "bounce",
        "b-1",
        type="blocked",
        reason="550 5.7.1 Client host blocked using Spamhaus",
    )

    sendgrid_events(esp_settings, post, [blocked])

    assert suppressed("mia.johnson@example.net") is None
    assert "blocked the message for now" in WebhookDelivery.objects.get().error


def test_clicks_from_an_esp_without_event_ids_are_each_kept(esp_settings, people, post):
    # Anymail gives no event id for some ESPs: the kept key is what the event says,
    # and two long keys that start alike stay two events.
    from anymail.signals import AnymailTrackingEvent

    from campaigns.tracking import esp_tracking_receive

    message_id = "<202512051450.12345678901@smtp-relay.mailin.fr>" + "x" * 60
    for minute, link in (
        (0, "https://shop.example.com/a"),
        (10, "https://shop.example.com/b"),
    ):
        esp_tracking_receive(
            None,
            AnymailTrackingEvent(
                event_type="clicked",
                timestamp=datetime(2025, 3, 14, 15, minute, tzinfo=UTC),
                message_id=message_id,
                recipient="grace.lee@example.com",
                click_url=link,
                event_id=None,
            ),
            esp_name="Brevo",
        )
    esp_events_sweep_task()

    links = Event.objects.filter(event="Email Link Clicked").values_list(
        "properties__link_url", flat=True
    )
    assert sorted(links) == ["https://shop.example.com/a", "https://shop.example.com/b"]


def test_a_body_that_is_not_json_is_refused_and_counted(db, esp_settings, post):
    esp_settings.ANYMAIL.pop("SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY", None)

    response = post("sendgrid", "open.json", body=b"[{not json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"
    codes = [g["code"] for g in esp_health()["refused_requests"]]
    assert codes == ["invalid_json:sendgrid"]


def test_json_that_is_not_the_esps_format_is_refused_and_counted(
    db, esp_settings, post
):
    esp_settings.ANYMAIL.pop("SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY", None)

    response = post("sendgrid", "open.json", body=b'{"a": 1}')

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_payload"
    codes = [g["code"] for g in esp_health()["refused_requests"]]
    assert codes == ["invalid_payload:sendgrid"]


@pytest.mark.parametrize(
    "body",
    [
        b'[{"event": "open", "email": "a@example.com", "timestamp": 1e20}]',
        b"[" * 5000 + b"]" * 5000,
        b'[{"event": "open", "email": "a@example.com", "timestamp": 1, "x": '
        + b"9" * 5000
        + b"}]",
    ],
    ids=["time past the calendar", "nested too deep", "integer too long"],
)
def test_a_body_anymail_cannot_parse_is_refused_and_counted(
    db, esp_settings, post, body
):
    esp_settings.ANYMAIL.pop("SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY", None)

    response = post("sendgrid", "open.json", body=body)

    assert response.status_code == 400
    codes = [g["code"] for g in esp_health()["refused_requests"]]
    assert codes == ["invalid_payload:sendgrid"]


def test_a_value_json_cannot_keep_spoils_no_other_event_of_the_batch(
    esp_settings, people, post
):
    batch = [
        sendgrid_event("mia.johnson@example.net", "open", "n-1", score=float("nan")),
        sendgrid_event("mia.johnson@example.net", "unsubscribe", "n-2"),
    ]
    esp_settings.ANYMAIL.pop("SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY", None)

    response = post("sendgrid", "open.json", body=json.dumps(batch).encode())
    esp_events_sweep_task()

    assert response.status_code == 200
    assert status("mia.johnson@example.net") == SubscriptionStatus.UNSUBSCRIBED


def test_metadata_that_only_looks_like_a_message_id_is_no_message(
    esp_settings, people, post
):
    event = sendgrid_event("mia.johnson@example.net", "open", "m-1", message_id="²")

    sendgrid_events(esp_settings, post, [event])

    kept = WebhookDelivery.objects.get()
    assert kept.processed_at is not None
    assert kept.error == ""


def test_a_body_past_the_upload_limit_is_refused_and_counted(
    db, esp_settings, post, settings
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100

    response = post("mailgun", "delivered.json")

    assert response.status_code == 413
    assert [g["code"] for g in esp_health()["refused_requests"]] == [
        "request_too_large:mailgun"
    ]


def test_a_full_sweep_of_events_that_store_nothing_goes_on(
    esp_settings, people, post, monkeypatch
):
    from campaigns import tasks

    queued = []
    monkeypatch.setattr(tasks, "ESP_SWEEP_BATCH_SIZE", 2)
    monkeypatch.setattr(tasks.esp_events_sweep_task, "delay", lambda: queued.append(1))
    esp_settings.ANYMAIL.pop("SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY", None)
    unsubscribes = [
        sendgrid_event(email, "unsubscribe", f"s-{n}")
        for n, email in enumerate(
            [
                "mia.johnson@example.net",
                "grace.lee@example.com",
                "noah.wilson@example.com",
            ]
        )
    ]
    post("sendgrid", "open.json", body=json.dumps(unsubscribes).encode())

    assert esp_events_sweep_task() == 2
    assert queued == [1]


def test_the_admin_retry_applies_an_esp_bounce_as_the_esp_sweep_would(
    esp_settings, people, post, admin_client
):
    # Applied by the shop's service instead, it was finished as a topic Bespoke
    # does not use, and the bounced address stayed mailable.
    post("mailgun", "failed_permanent.json")
    delivery = WebhookDelivery.objects.get(source="esp:mailgun")
    url = reverse("admin:profiles_webhookdelivery_changelist")

    response = admin_client.post(
        url,
        {"action": "deliveries_retry", "_selected_action": [delivery.pk]},
        follow=True,
    )

    assert "1 of 1 unfinished deliveries applied" in response.content.decode()
    delivery.refresh_from_db()
    assert (delivery.processed_at is not None, delivery.error) == (True, "")
    assert suppressed("sofia.rossi@example.com") == SuppressionReason.HARD_BOUNCE
