"""Profiles, their identities, the event log, consent and suppressions."""

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models.functions import Lower


class SubscriptionStatus(models.TextChoices):
    SUBSCRIBED = "subscribed", "Subscribed"
    UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
    CLEANED = "cleaned", "Cleaned (address bounced)"
    NOT_SUBSCRIBED = "not_subscribed", "Never subscribed"


# The profile's own text fields about the person, besides the address: what an
# identify, an import and a merge fill, and what segment rules read as text.
PERSON_FIELDS = (
    "first_name",
    "last_name",
    "phone",
    "city",
    "region",
    "country_code",
    "timezone",
)


# The unique index on a profile's address, whatever its case: a writer that meets
# it met another writer that gave the address to a profile first.
PROFILE_EMAIL_UNIQUE = "profile_email_ci_unique"


class ProfileQuerySet(models.QuerySet):
    def delete(self) -> tuple[int, dict[str, int]]:
        """Delete the profiles, and their events, once no one attaches events to them.

        The event table has no foreign key to profiles (Event.profile says why): the
        rows are locked first, so that a processing chunk or a shop delivery that is
        attaching events to one of them commits before its events are collected,
        and they go with it.
        """
        with transaction.atomic(using=self.db):
            list(self.select_for_update().order_by("pk").values_list("pk"))
            return super().delete()


class Profile(models.Model):
    """One person, however many ids and sources describe them."""

    objects = ProfileQuerySet.as_manager()

    # Stored already normalised (stripped, lower case, IDN domain in Unicode form);
    # the unique index on Lower() keeps that true even for rows written by hand.
    # NULL, not '', for an anonymous profile: the unique index must allow many of them.
    email = models.CharField(max_length=254, null=True, blank=True)  # noqa: DJ001
    email_display = models.CharField(max_length=254, blank=True)
    first_name = models.CharField(max_length=150, blank=True)
    last_name = models.CharField(max_length=150, blank=True)
    phone = models.CharField(max_length=50, blank=True)
    city = models.CharField(max_length=100, blank=True)
    region = models.CharField(max_length=100, blank=True)
    country_code = models.CharField(max_length=2, blank=True)
    timezone = models.CharField(max_length=64, blank=True)
    traits = models.JSONField(default=dict, blank=True)
    # When each of the fields above and each custom trait was said, by an identify
    # or the shop's customer record: {name: ISO 8601 time in UTC}. One said earlier
    # (history back-filled, a retry arriving late) leaves that value as it is; an
    # import's or a hand edit's value has no time (profiles/value_times.py).
    value_times = models.JSONField(default=dict, blank=True, editable=False)

    subscription_status = models.CharField(
        max_length=20,
        choices=SubscriptionStatus.choices,
        default=SubscriptionStatus.NOT_SUBSCRIBED,
    )
    subscription_changed_at = models.DateTimeField(null=True, blank=True)
    # Set while the address is on the suppression list, so rules and counts can see it;
    # the list itself (hashes only) stays the authority, checked again at send time.
    suppressed_at = models.DateTimeField(null=True, blank=True)

    # Computed traits, kept current by event processing.
    lifetime_value = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    order_count = models.PositiveIntegerField(default=0)
    first_order_at = models.DateTimeField(null=True, blank=True)
    last_order_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    average_order_value = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True
    )
    last_opened_at = models.DateTimeField(null=True, blank=True)
    last_clicked_at = models.DateTimeField(null=True, blank=True)
    # 0-100, from decayed opens, clicks, visits and orders
    # (profiles/processing_traits.py).
    engagement_score = models.PositiveSmallIntegerField(default=0)
    favourite_category = models.CharField(max_length=200, blank=True)
    # What the computed traits are kept from, so that a chunk of new events adds to
    # them instead of reading every earlier event again: the unrounded engagement
    # points as of `engagement_at`, and {category: [times seen, last seen as Unix
    # seconds]}. Empty until the first refresh, which reads every event once.
    engagement_value = models.FloatField(null=True, blank=True, editable=False)
    engagement_at = models.DateTimeField(null=True, blank=True, editable=False)
    category_counts = models.JSONField(null=True, blank=True, editable=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(Lower("email"), name=PROFILE_EMAIL_UNIQUE),
        ]
        indexes = [models.Index(fields=["country_code"])]

    def __str__(self) -> str:
        return self.email or f"anonymous profile {self.pk}"

    def delete(self, *args, **kwargs) -> tuple[int, dict[str, int]]:
        # Locked first, as ProfileQuerySet.delete does and for the same reason.
        using = kwargs.get("using") or self._state.db or "default"
        with transaction.atomic(using=using):
            locked = Profile.objects.using(using).select_for_update()
            list(locked.filter(pk=self.pk).values_list("pk"))
            return super().delete(*args, **kwargs)

    @property
    def full_name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part)

    @property
    def address_shown(self) -> str:
        """The address as the pages name a profile by it: as the person wrote it."""
        return self.email_display or self.email or ""


class ProfileTag(models.Model):
    """A tag on a profile. "VIP" and "vip" are one tag, kept as first written."""

    # The unique (profile, lower(name)) index serves lookups by profile: no index of
    # its own.
    profile = models.ForeignKey(
        Profile, on_delete=models.CASCADE, related_name="tags", db_index=False
    )
    name = models.CharField(max_length=100)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                models.F("profile"),
                Lower("name"),
                name="profile_tag_unique_caseless",
            ),
        ]
        indexes = [models.Index(Lower("name"), name="profile_tag_name_caseless")]

    def __str__(self) -> str:
        return self.name


class IdentityKind(models.TextChoices):
    USER_ID = "user_id", "User id"
    ANONYMOUS_ID = "anonymous_id", "Anonymous id"
    # A Shopify customer's id: the shop's account, whatever its address is now.
    SHOPIFY_CUSTOMER = "shopify_customer", "Shopify customer id"


class ProfileIdentity(models.Model):
    """An id under which a source knows the person: a userId or an anonymousId."""

    profile = models.ForeignKey(
        Profile, on_delete=models.CASCADE, related_name="identities"
    )
    kind = models.CharField(max_length=20, choices=IdentityKind.choices)
    value = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    # The source's own time of the version of the person last applied (a Shopify
    # customer's updated_at): an older version arriving late changes nothing.
    source_updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "profile identities"
        constraints = [
            models.UniqueConstraint(fields=["kind", "value"], name="identity_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


class ProfileMerge(models.Model):
    """The record that two profiles were found to be one person."""

    kept = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="merges")
    merged_profile_id = models.BigIntegerField()
    reason = models.CharField(max_length=200)
    moved = models.JSONField(default=dict)
    merged_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"profile {self.merged_profile_id} merged into {self.kept_id}"


class WriteKey(models.Model):
    """A key with which a site or server may send events to the tracking API."""

    name = models.CharField(max_length=100)
    key = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name


class EventType(models.TextChoices):
    IDENTIFY = "identify"
    TRACK = "track"
    PAGE = "page"
    SCREEN = "screen"
    GROUP = "group"
    ALIAS = "alias"


class Event(models.Model):
    """One call of the Segment spec, stored as received before anything acts on it."""

    # Unique by a constraint, not unique=True: that would add a second, pattern-ops
    # index on PostgreSQL for LIKE searches nothing makes, at a cost to every insert.
    message_id = models.CharField(max_length=100)
    type = models.CharField(max_length=10, choices=EventType.choices)
    event = models.CharField(max_length=200, blank=True)
    # A page's or screen's name: its title.
    name = models.CharField(max_length=1000, blank=True)
    user_id = models.CharField(max_length=255, blank=True)
    anonymous_id = models.CharField(max_length=255, blank=True)
    previous_id = models.CharField(max_length=255, blank=True)
    group_id = models.CharField(max_length=255, blank=True)
    # The (profile, event, timestamp) index serves lookups by profile.
    #
    # No foreign key in the database: its check, one index probe and row lock per
    # event that processing attaches, cost about a tenth of the tracking path's
    # throughput (docs/limitations.md). Every writer of this column holds the
    # profile's row lock (processing chunks, merges, the shop), a merge moves the
    # events before it deletes a profile, and a profile's delete locks it first and
    # takes its events along (ProfileQuerySet.delete). An event stored with a
    # profile deleted since fails alone in processing, and events_orphans_repair
    # deletes any event left without its profile.
    profile = models.ForeignKey(
        Profile,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="events",
        db_index=False,
        db_constraint=False,
    )
    properties = models.JSONField(default=dict, blank=True)
    traits = models.JSONField(default=dict, blank=True)
    context = models.JSONField(default=dict, blank=True)
    integrations = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=100, blank=True)

    # `timestamp` is when it happened, corrected for the client's clock skew.
    timestamp = models.DateTimeField()
    original_timestamp = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField(null=True, blank=True)
    # Set when processing failed; the event is marked processed so the sweep moves on.
    processing_error = models.CharField(max_length=500, blank=True)

    class Meta:
        # No index on message_id: EventMessage keeps them unique. Processing
        # rewrites every event row it attaches, and each index of the table takes a
        # new entry then; at a random place in a unique index of messageIds, that
        # was a third of the update's time.
        indexes = [
            # Only events with a profile: the tracking API stores every event
            # without one, and an entry for each would be written, never read.
            models.Index(
                fields=["profile", "event", "timestamp"],
                name="event_by_profile",
                condition=models.Q(profile__isnull=False),
            ),
            models.Index(
                fields=["received_at"],
                name="event_unprocessed",
                condition=models.Q(processed_at__isnull=True),
            ),
            # The few whose processing failed, which the Sources page counts and
            # lists per source: without it, a scan of every event per source.
            models.Index(
                fields=["source", "received_at"],
                name="event_failed",
                condition=~models.Q(processing_error=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event or self.name} {self.message_id}"


class KeyText(models.CharField):
    """Text that a unique index of its own serves, and no second one.

    Django gives a varchar column that is unique or a primary key a second index on
    PostgreSQL, with varchar_pattern_ops, for LIKE searches; every insert writes
    both. Spelt "character varying" (the same type), it is not given one.
    """

    def db_type(self, connection: Any) -> str | None:
        db_type = super().db_type(connection)
        if connection.vendor == "postgresql" and db_type.startswith("varchar"):
            return "character varying" + db_type.removeprefix("varchar")
        return db_type


class EventMessage(models.Model):
    """A messageId that was stored once: the idempotency key of every event.

    Each writer of events claims the ids here first and stores only the events
    whose id it claimed, so a retried call stores nothing twice, even when two
    arrive together. A tracking call's id stays claimed after its event is deleted:
    sent again after its person was erased, it does not bring them back.
    """

    message_id = KeyText(max_length=100, primary_key=True)
    # The event Bespoke stored itself under the id (a shop's order, an ESP's open);
    # empty for the tracking API's, which claims ids before its COPY numbers them.
    # Such an event deleted with its profile is stored again if the shop reports
    # it again: the delivery makes the profile anew, and gives it the order.
    event_id = models.BigIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return self.message_id


class ProcessingRequest(models.Model):
    """One row: when event processing was asked for and no worker has begun it yet.

    Requests that store events while a run is already asked for enqueue nothing:
    that run takes their events along (profiles.processing).
    """

    requested_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"events processing requested at {self.requested_at or 'no time'}"


class RejectedEvent(models.Model):
    """An item the tracking API refused, kept so a broken feed can be seen and fixed."""

    source = models.CharField(max_length=100, blank=True)
    message_id = models.CharField(max_length=255, blank=True)
    code = models.CharField(max_length=50)
    message = models.CharField(max_length=500)
    payload = models.JSONField(null=True, blank=True)
    received_at = models.DateTimeField()

    class Meta:
        # The Sources page's newest message of each feed's each code.
        indexes = [models.Index(fields=["source", "code", "received_at"])]

    def __str__(self) -> str:
        return f"{self.code}: {self.message_id or 'no messageId'}"


class SourceUnit(models.TextChoices):
    EVENTS = "events", "Events"
    # What a webhook feed (the shop, an ESP) sent, before any event is made of it.
    DELIVERIES = "deliveries", "Webhook deliveries"


class SourceHour(models.Model):
    """How many of one source's events, or deliveries, that arrived in one hour are done.

    Processing adds each chunk of events here as it marks them processed, and each
    webhook delivery as it is applied, so the Sources page reads a few rows an hour
    rather than counting tables that grow with everything a site and a shop send
    (profiles/source_counts.py). What is deleted later (an erasure) still counts:
    it arrived.
    """

    source = models.CharField(max_length=100)
    unit = models.CharField(
        max_length=10, choices=SourceUnit.choices, default=SourceUnit.EVENTS
    )
    # The start of the UTC hour they arrived in.
    hour = models.DateTimeField()
    # Processed, whether or not they failed.
    done = models.PositiveBigIntegerField(default=0)
    # Of those, the ones that failed: an event whose processing raised, a delivery
    # refused for good.
    failed = models.PositiveBigIntegerField(default=0)
    # Of those, the deliveries applied with a note (a topic Bespoke does not use).
    noted = models.PositiveBigIntegerField(default=0)
    # When the latest of them that went through (did not fail) arrived.
    last_succeeded_at = models.DateTimeField(null=True, blank=True)
    # The lowest id among them: where a scan of the hour's rows starts.
    first_id = models.BigIntegerField(null=True, blank=True)
    # Items the tracking API stored no second time, their messageId being stored
    # already (a sender retrying, or replaying what it sent); events only. Counted
    # as they arrive, not from a table: a recount keeps them.
    duplicates = models.PositiveBigIntegerField(default=0, db_default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "unit", "hour"], name="source_hour_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.source} {self.done} {self.unit} at {self.hour:%Y-%m-%d %H}:00"


class RefusedRequest(models.Model):
    """How many requests one source had refused whole, for one reason, in one hour.

    A request refused before anything of it is stored (a wrong or revoked write key,
    a Shopify signature that does not match, a body too large or unreadable) leaves
    no event, delivery or item behind: these counts are all that shows a feed that
    stopped working. Nothing of the request's body is kept.
    """

    source = models.CharField(max_length=100)
    code = models.CharField(max_length=50)
    # The start of the UTC hour the count is for.
    hour = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)
    last_at = models.DateTimeField()
    # What the latest refused sender was told.
    message = models.CharField(max_length=500)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "code", "hour"], name="refused_request_hour_unique"
            )
        ]
        indexes = [models.Index(fields=["hour"])]

    def __str__(self) -> str:
        return f"{self.source} {self.code} x{self.count} at {self.hour:%Y-%m-%d %H}:00"


# What the consent history calls Bespoke's own keys of a record's evidence.
EVIDENCE_LABELS = {
    "file": "File",
    "import": "Import",
    "layout": "Read as",
    "record": "Record",
    "status": "Status read",
    "consent_column": "Read from column",
    "consent_cell": "Which said",
    "row_changed_column": "Dated by column",
    "row_changed_at": "Which said",
    "occurred_at_claimed": "Dated, as written",
    "topic": "Webhook topic",
    "webhook_id": "Webhook id",
    "shop_domain": "Shop",
    "esp": "ESP",
    "esp_event_id": "ESP event id",
    "esp_message_id": "ESP message id",
    "esp_group_id": "ESP unsubscribe group",
    "campaign_id": "Campaign",
    "message_id": "Message",
}
# Said in the history's When column instead.
EVIDENCE_UNSHOWN = {"occurred_at_is_import_time"}


class ConsentRecord(models.Model):
    """An append-only fact: who agreed to or withdrew from what, when, and how we know."""

    # The (profile, occurred_at) index serves lookups by profile.
    profile = models.ForeignKey(
        Profile,
        on_delete=models.CASCADE,
        related_name="consent_records",
        db_index=False,
    )
    channel = models.CharField(max_length=20, default="email")
    status = models.CharField(max_length=20, choices=SubscriptionStatus.choices)
    source = models.CharField(max_length=100)
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField(auto_now_add=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    wording = models.TextField(blank=True)
    evidence = models.JSONField(default=dict, blank=True)
    # The address the fact is about: the profile's when it was recorded. A merge
    # moves facts about another address onto the kept profile; they stay about
    # that address. Empty for a profile with no address, and for facts recorded
    # before Bespoke kept it.
    address = models.CharField(max_length=254, blank=True, default="")
    # The profile a merge moved the fact from (the first, if merged again): a fact
    # about that profile's address is not the kept profile's own word.
    merged_from = models.BigIntegerField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["profile", "occurred_at"])]

    @property
    def evidence_shown(self) -> list[tuple[str, Any]]:
        """The evidence as a privacy admin reads it: Bespoke's own keys in words, an
        export's or a webhook's own fields by their names, blanks left out."""
        from profiles.importing.layouts import LAYOUTS  # it imports these models

        evidence = self.evidence if isinstance(self.evidence, dict) else {}
        unshown = set(EVIDENCE_UNSHOWN)
        if "row_changed_at" in evidence:
            # The future time is the change time's, shown as written already.
            unshown.add("occurred_at_claimed")
        # Bespoke's own keys in one order, each cell after the column it quotes
        # (jsonb keeps keys in an order of its own), then the source's own fields.
        keys = [key for key in EVIDENCE_LABELS if key in evidence]
        keys += [key for key in evidence if key not in EVIDENCE_LABELS]
        shown = []
        for key in keys:
            value = evidence[key]
            if value in ("", None) or key in unshown:
                continue
            if key == "layout" and value in LAYOUTS:
                value = LAYOUTS[value].label
            shown.append((EVIDENCE_LABELS.get(key, key), value))
        return shown

    def __str__(self) -> str:
        return f"{self.status} via {self.source} at {self.occurred_at:%Y-%m-%d %H:%M}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise ValidationError("Consent records are append-only; add a new one.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("Consent records are append-only and cannot be deleted.")


class SuppressionReason(models.TextChoices):
    HARD_BOUNCE = "hard_bounce", "Hard bounce"
    COMPLAINT = "complaint", "Spam complaint"
    ERASURE = "erasure", "Erased on request"
    MANUAL = "manual", "Added by hand"
    # Listed as suppressed by the tool a list came from, which does not say why
    # (Klaviyo's SUPPRESSED: a bounce, a complaint or a suppression by hand).
    IMPORTED = "imported", "Suppressed where it was imported from"


class Suppression(models.Model):
    """An address that must never be sent to, kept only as a keyed hash."""

    email_hash = models.CharField(max_length=64, unique=True)
    reason = models.CharField(max_length=20, choices=SuppressionReason.choices)
    source = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.reason} ({self.source})"


class ImportStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


# How an import's status counts name a subscribed profile on the suppression list:
# subscribed, but never emailed.
SUPPRESSED_COUNTED = "suppressed"


class ContactImport(models.Model):
    """One uploaded contact file and the report of what became of each row."""

    filename = models.CharField(max_length=255)
    layout = models.CharField(max_length=40, blank=True)
    status = models.CharField(
        max_length=10, choices=ImportStatus.choices, default=ImportStatus.PENDING
    )
    records = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    duplicates_merged = models.PositiveIntegerField(default=0)
    profiles_created = models.PositiveIntegerField(default=0)
    profiles_updated = models.PositiveIntegerField(default=0)
    # How many of the profiles the import wrote hold each subscription status after
    # it: {"subscribed": 34, "unsubscribed": 3, ...}.
    status_counts = models.JSONField(default=dict, blank=True)
    rejections = models.JSONField(default=list, blank=True)
    notes = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    # What the marketer chose in the mapping step: column -> profile field or trait.
    column_map = models.JSONField(default=dict, blank=True)
    # The declared format of date cells, e.g. "%d/%m/%Y"; dates are never guessed.
    date_format = models.CharField(max_length=40, blank=True)
    # Whether a CSV file's numbers are written 1.234,5 (a decimal comma), as the
    # marketer declared; never guessed either.
    decimal_comma = models.BooleanField(default=False)
    # A CSV file's text encoding as the marketer chose it; empty: found from the file.
    encoding = models.CharField(max_length=20, blank=True)
    # Progress for the bar while a worker runs the file.
    rows_total = models.PositiveIntegerField(default=0)
    rows_done = models.PositiveIntegerField(default=0)
    # The merged rows whose profiles were counted (created, known, their status):
    # a run restarted from row 0 writes them again uncounted, and so does a retry
    # of that run, stopped again before it passed them.
    rows_counted = models.PositiveIntegerField(default=0)
    # The declared traits its first run read the rows under: a run resumed after
    # they changed starts again from the first row (profiles/importing/runs.py).
    trait_rules = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # When it was last handed to the worker (mapped, or run again): how long the
    # worker has kept it waiting is counted from here, not from the upload.
    queued_at = models.DateTimeField(null=True, blank=True)
    # When the sweep last queued it again, no worker having begun it.
    requeued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.filename

    @property
    def awaits_mapping(self) -> bool:
        """Uploaded, and never handed to the worker: its columns are to be mapped."""
        # As health._imports_queued reads it: mapped, or run before, is handed over.
        return (
            self.status == ImportStatus.PENDING
            and not self.column_map
            and self.started_at is None
        )

    @property
    def status_counts_shown(self) -> str:
        """The statuses its profiles hold after it, as the import's page says them."""
        counts = self.status_counts if isinstance(self.status_counts, dict) else {}
        labels = {status.value: status.label.lower() for status in SubscriptionStatus}
        labels[SUPPRESSED_COUNTED] = "subscribed but on the suppression list"
        return ", ".join(
            f"{counts[value]:,} {label}"
            for value, label in labels.items()
            if counts.get(value)
        )

    @property
    def layout_shown(self) -> str:
        """The layout the file was read as, named as the mapping page names it."""
        from profiles.importing.layouts import LAYOUTS  # it imports these models

        layout = LAYOUTS.get(self.layout)
        return layout.label if layout else self.layout

    @property
    def status_shown(self) -> str:
        """The status as the imports list shows it: queued apart from not started."""
        if self.awaits_mapping:
            return "Not started: map its columns"
        if self.status == ImportStatus.PENDING:
            return "Queued"
        return self.get_status_display()


class TraitType(models.TextChoices):
    TEXT = "text", "Text"
    NUMBER = "number", "Number"
    BOOLEAN = "boolean", "True or false"
    DATE = "date", "Date"
    DATETIME = "datetime", "Date and time"


class TraitValuesStatus(models.TextChoices):
    """Where the conversion of a trait's stored values to its declared type stands."""

    NOT_ASKED = "", "Not asked"
    PENDING = "pending", "Under way"
    DONE = "done", "Done"


class TraitDefinition(models.Model):
    """The declared type and rules of one custom trait; values that break them are refused."""

    name = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=10, choices=TraitType.choices)
    description = models.CharField(max_length=300, blank=True)
    allowed_values = models.JSONField(default=list, blank=True)
    # Every number a trait keeps fits (profiles/traits.py: at most 15 digits before
    # the point, and none nearer 0 than 1e-15).
    minimum = models.DecimalField(
        max_digits=30, decimal_places=15, null=True, blank=True
    )
    maximum = models.DecimalField(
        max_digits=30, decimal_places=15, null=True, blank=True
    )
    pattern = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The run that brings the values profiles already hold to the declared type
    # (profiles/trait_values.py), done in batches of profiles by id: each one
    # continues after values_after_id, and a new rule starts it again from 0.
    values_status = models.CharField(
        max_length=10, choices=TraitValuesStatus.choices, blank=True, default=""
    )
    values_requested_at = models.DateTimeField(null=True, blank=True)
    # When a batch last ended or the sweep last queued the run: its stall clock.
    values_touched_at = models.DateTimeField(null=True, blank=True)
    values_finished_at = models.DateTimeField(null=True, blank=True)
    values_after_id = models.BigIntegerField(default=0)
    values_checked = models.PositiveIntegerField(default=0)
    values_converted = models.PositiveIntegerField(default=0)
    # Values that cannot be read as the declared type: kept as they were.
    values_kept = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} ({self.type})"


# How a delivery finished without being applied begins its error; any other error
# of a finished delivery is a note (a topic not used, no address).
PAYLOAD_REFUSED = "The payload was refused: "
# How a refund that arrived before its order begins its error, while it waits: it is
# applied when the order arrives, and has not failed.
AWAITS_ORDER = "Waiting for its order: "
# The source of what the shop's webhooks store: the record of an order's money.
SHOP_SOURCE = "shopify"


class WebhookDelivery(models.Model):
    """One webhook delivery, kept by its id so a retried delivery is processed once."""

    source = models.CharField(max_length=40)
    delivery_id = models.CharField(max_length=255)
    topic = models.CharField(max_length=100)
    shop_domain = models.CharField(max_length=255, blank=True)
    api_version = models.CharField(max_length=20, blank=True)
    payload = models.JSONField(default=dict)
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["source", "delivery_id"], name="webhook_delivery_once"
            ),
        ]
        indexes = [
            # The sweeps' and the Sources page's: the few still to apply.
            models.Index(
                fields=["received_at"],
                name="delivery_unprocessed",
                condition=models.Q(processed_at__isnull=True),
            ),
            # The Sources page's newest failures and notes: the few with an error.
            models.Index(
                fields=["received_at"],
                name="delivery_with_error",
                condition=~models.Q(error=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source} {self.topic} {self.delivery_id}"


class ShopCheckout(models.Model):
    """A shop checkout, upserted by its token; abandoned while completed_at stays empty."""

    token = models.CharField(max_length=100, unique=True)
    shop_id = models.CharField(max_length=40, blank=True)
    profile = models.ForeignKey(
        Profile,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="checkouts",
    )
    email = models.CharField(max_length=254, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    subtotal = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True
    )
    shipping = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True
    )
    tax = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    total = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    line_items = models.JSONField(default=list, blank=True)
    shipping_address = models.JSONField(default=dict, blank=True)
    recovery_url = models.URLField(max_length=1000, blank=True)
    buyer_accepts_marketing = models.BooleanField(null=True)
    started_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    order_shop_id = models.CharField(max_length=40, blank=True)

    def __str__(self) -> str:
        return self.token


class ShopOrder(models.Model):
    """A shop order, kept by the shop's id and joined to its checkout by token."""

    shop_id = models.CharField(max_length=40, unique=True)
    name = models.CharField(max_length=40, blank=True)
    profile = models.ForeignKey(
        Profile, null=True, blank=True, on_delete=models.SET_NULL, related_name="orders"
    )
    email = models.CharField(max_length=254, blank=True)
    checkout_token = models.CharField(max_length=100, blank=True, db_index=True)
    financial_status = models.CharField(max_length=40, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    subtotal = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True
    )
    discount = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True
    )
    shipping = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True
    )
    tax = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    total = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    discount_codes = models.JSONField(default=list, blank=True)
    line_items = models.JSONField(default=list, blank=True)
    buyer_accepts_marketing = models.BooleanField(null=True)
    placed_at = models.DateTimeField(null=True, blank=True)
    # The shop's `updated_at` of the version kept: an older one arriving late
    # (deliveries come in any order) does not undo a refund or a cancellation.
    shop_updated_at = models.DateTimeField(null=True, blank=True)
    # Placed in the shop's test mode (Shopify's `test`): kept, and counted nowhere.
    is_test = models.BooleanField(default=False)
    # The shop's customer, and the delivery of the version kept: an order placed
    # before its customer had an address joins her profile when one comes.
    customer_id = models.CharField(max_length=255, blank=True, db_index=True)
    delivery = models.ForeignKey(
        WebhookDelivery,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    def __str__(self) -> str:
        return self.name or self.shop_id
