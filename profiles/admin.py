"""The Django admin for profiles, identities, events and consent."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone

from profiles.deliveries import delivery_applier
from profiles.emails import InvalidEmail, email_normalize
from profiles.keys import (
    write_key_name_clean,
    write_key_name_refusal,
    write_key_secret,
)
from profiles.models import (
    PAYLOAD_REFUSED,
    PERSON_FIELDS,
    ConsentRecord,
    ContactImport,
    Event,
    Profile,
    ProfileIdentity,
    ProfileMerge,
    ProfileTag,
    RefusedRequest,
    RejectedEvent,
    ShopCheckout,
    ShopOrder,
    Suppression,
    SuppressionReason,
    WebhookDelivery,
    WriteKey,
)
from profiles.names import tag_key
from profiles.processing import events_process_again
from profiles.selectors import profile_is_suppressed, profile_merged_into
from profiles.services import (
    profile_by_email_key,
    profile_email_flags_set,
    suppression_add,
)
from profiles.signals import profiles_changed
from profiles.traits import (
    TraitInvalid,
    trait_coerce,
    trait_name_is_reserved,
    trait_schema_load,
)
from profiles.value_times import value_time_text, values_stamp


class WriteKeyAdminForm(forms.ModelForm):
    class Meta:
        model = WriteKey
        fields = ("name", "revoked_at")

    def clean_name(self) -> str:
        name = write_key_name_clean(self.cleaned_data["name"])
        unchanged = self.instance.pk is not None and self.instance.name == name
        refusal = None if unchanged else write_key_name_refusal(name)
        if refusal:
            raise forms.ValidationError(refusal)
        return name


class IdentityInline(admin.TabularInline):
    model = ProfileIdentity
    extra = 0
    fields = ("kind", "value", "created_at")
    readonly_fields = ("created_at",)


class TagFormSet(BaseInlineFormSet):
    """A profile's tags, refused when two are one tag written in another case.

    The unique index is on lower(name); the form cannot check it, the profile
    being left out of each tag's own validation.
    """

    def clean(self) -> None:
        super().clean()
        kept = [
            form
            for form in self.forms
            if form.cleaned_data.get("name") and not form.cleaned_data.get("DELETE")
        ]
        seen: dict[str, str] = {}
        for form in kept:
            name = form.cleaned_data["name"]
            earlier = seen.get(tag_key(name))
            if earlier is None:
                seen[tag_key(name)] = name
                continue
            form.add_error(
                "name",
                f"“{name}” is the tag “{earlier}” again (tags differing only in "
                "case are one): a profile holds a tag once.",
            )


class TagInline(admin.TabularInline):
    model = ProfileTag
    formset = TagFormSet
    extra = 0


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that are facts: shown, never added, changed or deleted by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ConsentInline(admin.TabularInline):
    model = ConsentRecord
    extra = 0
    fields = ("occurred_at", "status", "channel", "source", "ip_address")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ProfileAdminForm(forms.ModelForm):
    """The profile form: an address is stored as every input path stores it.

    Each field also sends the value the page was shown with, so that a field counts
    as changed only where the marketer changed it: what events wrote to the profile
    while the page was open is neither written back nor taken for an edit.
    """

    class Meta:
        model = Profile
        # What a marketer may edit; ProfileAdmin shows the rest read-only.
        fields = ("email", *PERSON_FIELDS, "traits", "suppressed_at")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.show_hidden_initial = True

    def clean_email(self) -> str | None:
        written = self.cleaned_data.get("email") or ""
        if not written.strip():
            self.normalized_email = None
            return None
        try:
            email = email_normalize(written)
        except InvalidEmail as exc:
            raise forms.ValidationError(
                f"{written.strip()} is not an email address: {exc.detail}"
            ) from exc
        owner = profile_by_email_key(email.key)
        if owner is not None and owner.pk != self.instance.pk:
            raise forms.ValidationError(
                f"{email.key} is the address of profile #{owner.pk}. Remove it there "
                "first, or merge the two profiles on that profile's page."
            )
        self.normalized_email = email
        return email.key

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        email = cleaned.get("email")
        lifted = "suppressed_at" in self.changed_data and not cleaned.get(
            "suppressed_at"
        )
        if lifted and email and profile_is_suppressed(email):
            # Sending reads the list: clearing the mark would only make segments
            # and the preview count someone Bespoke will never email.
            self.add_error(
                "suppressed_at",
                f"{email} is on the suppression list (a bounce, a complaint, an "
                "erasure or by hand): Bespoke never sends to it, so the profile "
                "stays suppressed.",
            )
        return cleaned

    def clean_traits(self) -> dict[str, Any]:
        """Hold a trait the marketer adds or changes to the rules every input obeys.

        A value kept from before its rule was declared is left as it is.
        """
        traits = self.cleaned_data.get("traits")
        if not isinstance(traits, dict):
            raise forms.ValidationError("Traits must be a JSON object of names.")
        before = self.initial.get("traits") or {}
        schema = trait_schema_load()
        errors, stored = [], {}
        for name, value in traits.items():
            if name in before and before[name] == value:
                continue
            if trait_name_is_reserved(name):
                errors.append(
                    f"{name!r} is the name of a profile field or computed trait; "
                    "edit the field itself, or name the trait otherwise."
                )
                continue
            if name in schema:
                try:
                    stored[name] = trait_coerce(schema[name], value)
                except TraitInvalid as exc:
                    errors.append(exc.message)
        if errors:
            raise forms.ValidationError(errors)
        return {**traits, **stored}

    def save(self, commit: bool = True) -> Profile:
        profile = super().save(commit=False)
        if profile.pk is not None:
            # The form put the page's values on every field; where the marketer
            # changed nothing, the profile keeps what the database holds now.
            for name in self.fields:
                if name not in self.changed_data and name in self.initial:
                    setattr(profile, name, self.initial[name])
        if "email" in self.changed_data:
            email = self.normalized_email
            profile.email_display = email.display if email else ""
            profile_email_flags_set(profile, email)
        if commit:
            profile_admin_save(profile, self)
            self.save_m2m()
        return profile

    def fields_changed(self) -> list[str]:
        """The profile's fields this form changes, and what follows from them."""
        names = {field.name for field in Profile._meta.concrete_fields}
        changed = [name for name in self.changed_data if name in names]
        if "email" in changed:
            changed += ["email_display", "traits", "suppressed_at"]
        return changed


class ProfileGone(Exception):
    """The profile being saved was deleted (merged away) since its page was read."""


def profile_admin_save(
    profile: Profile, form: ProfileAdminForm, *, by: str = ""
) -> None:
    # A changed profile is saved by the fields its form changed: the rest of the
    # row (what an event processed meanwhile wrote: computed traits and what they
    # are kept from, identify fields) is left as the database has it.
    if profile._state.adding:
        profile.save()
    else:
        # Locked until the page's transaction ends, so no merge takes it meanwhile.
        if not Profile.objects.select_for_update().filter(pk=profile.pk).exists():
            raise ProfileGone(profile.pk)
        changed = form.fields_changed()
        if not changed:
            return
        _hand_edit_date(profile, form, changed)
        profile.save(
            update_fields=[*dict.fromkeys(changed), "value_times", "updated_at"]
        )
    if "suppressed_at" in form.changed_data and profile.suppressed_at:
        # Suppressed by hand: the address goes on the list, which sending reads,
        # and a profile made for it later (an identify, an import) starts so. The
        # address the page showed goes too, should the same save change or clear it.
        shown = form.initial.get("email") or ""
        for address in dict.fromkeys(a.lower() for a in (profile.email, shown) if a):
            suppression_add(
                email_key=address,
                reason=SuppressionReason.MANUAL,
                source=f"admin: profile #{profile.pk}" + (f" by {by}" if by else ""),
            )
    # As after an event: every segment reads the profile again.
    transaction.on_commit(
        lambda: profiles_changed.send(
            sender=Profile, profile_ids=[profile.pk], changed=None
        )
    )


def _hand_edit_date(
    profile: Profile, form: ProfileAdminForm, changed: list[str]
) -> None:
    """Date what the marketer changed, and keep what processing wrote meanwhile.

    Read under the row's lock (profile_admin_save): an identify processed while
    the page was open may have said more. Of the traits, only the keys the marketer
    changed are written, onto the traits as they are now; each changed value is
    dated now (profiles/value_times.py), so that older news does not undo it.
    """
    current = Profile.objects.filter(pk=profile.pk).values("traits", "value_times")
    stored = current.get()
    names = [name for name in changed if name in PERSON_FIELDS]
    if "traits" in changed:
        shown = _traits_shown(form)
        posted = profile.traits if isinstance(profile.traits, dict) else {}
        edited = [
            key
            for key in {*shown, *posted}
            if shown.get(key, _NONE) != posted.get(key, _NONE)
        ]
        traits = {k: v for k, v in stored["traits"].items() if k not in edited}
        traits.update({key: posted[key] for key in edited if key in posted})
        profile.traits = traits
        names += edited
    profile.value_times = stored["value_times"]
    values_stamp(profile, names, value_time_text(timezone.now()))


def _traits_shown(form: ProfileAdminForm) -> dict[str, Any]:
    # As the page showed them (its hidden initial value), as changed_data reads.
    posted = form.data.get(form.add_initial_prefix("traits"))
    shown = form.initial.get("traits")
    if posted is not None:
        try:
            shown = form.fields["traits"].to_python(posted)
        except forms.ValidationError:
            # A page that was not Bespoke's: nothing is known to have been shown.
            shown = {}
    return shown if isinstance(shown, dict) else {}


_NONE = object()


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    form = ProfileAdminForm
    list_display = (
        "__str__",
        "first_name",
        "last_name",
        "subscription_status",
        "country_code",
        "order_count",
        "lifetime_value",
        "last_seen_at",
    )
    list_filter = ("subscription_status", "country_code")
    search_fields = ("email", "first_name", "last_name", "identities__value")
    # Consent moves only through consent records; computed traits through events.
    readonly_fields = (
        "email_display",
        "subscription_status",
        "subscription_changed_at",
        "lifetime_value",
        "order_count",
        "first_order_at",
        "last_order_at",
        "average_order_value",
        "last_seen_at",
        "last_opened_at",
        "last_clicked_at",
        "engagement_score",
        "favourite_category",
        "value_times",
        "created_at",
        "updated_at",
    )
    inlines = (IdentityInline, TagInline, ConsentInline)

    def save_model(
        self, request: HttpRequest, obj: Profile, form: ProfileAdminForm, change: bool
    ) -> None:
        profile_admin_save(obj, form, by=request.user.get_username())

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # A profile merged away, before its page was opened or while it was open:
        # the marketer is sent to the kept profile, where the edits belong.
        gone = object_id.isdigit() and not Profile.objects.filter(pk=object_id).exists()
        if not gone:
            try:
                return super().change_view(request, object_id, form_url, extra_context)
            except ProfileGone:
                gone = True
        merge = profile_merged_into(int(object_id)) if gone else None
        if merge is None:
            return super().change_view(request, object_id, form_url, extra_context)

        unsaved = (
            " Nothing was saved: make the change here."
            if request.method == "POST"
            else ""
        )
        self.message_user(
            request,
            f"Profile #{object_id} was merged into this one, #{merge.kept_id}.{unsaved}",
            messages.WARNING,
        )
        return redirect("admin:profiles_profile_change", merge.kept_id)


@admin.register(ProfileIdentity)
class ProfileIdentityAdmin(admin.ModelAdmin):
    list_display = ("value", "kind", "profile", "created_at")
    list_filter = ("kind",)
    search_fields = ("value", "profile__email")
    raw_id_fields = ("profile",)


@admin.register(ProfileMerge)
class ProfileMergeAdmin(ReadOnlyAdmin):
    list_display = ("merged_at", "kept", "merged_profile_id", "reason")
    search_fields = ("kept__email", "merged_profile_id")
    date_hierarchy = "merged_at"


@admin.register(WriteKey)
class WriteKeyAdmin(admin.ModelAdmin):
    """Keys are named here as on the sources page; their secret is always random."""

    form = WriteKeyAdminForm
    list_display = ("name", "created_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name",)
    readonly_fields = ("key", "created_at", "last_used_at")

    def save_model(
        self, request: HttpRequest, obj: WriteKey, form: Any, change: bool
    ) -> None:
        if not change:
            obj.key = write_key_secret()
        super().save_model(request, obj, form, change)


@admin.action(description="Process the selected events again")
def events_reprocess(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Event]
) -> None:
    # The beat sweep picks them up; nothing here runs the processing inline.
    count = events_process_again(events=queryset)
    events = "event" if count == 1 else "events"
    modeladmin.message_user(request, f"{count} {events} queued for processing again.")


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = (
        "timestamp",
        "type",
        "event",
        "name",
        "user_id",
        "anonymous_id",
        "profile",
        "processed_at",
        "processing_error",
    )
    list_filter = ("type", "source", ("processed_at", admin.EmptyFieldListFilter))
    search_fields = ("message_id", "event", "user_id", "anonymous_id")
    date_hierarchy = "timestamp"
    list_select_related = ("profile",)
    actions = (events_reprocess,)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Read-only rows, but the reprocess action needs change permission.
        return obj is None and request.user.has_perm("profiles.change_event")


@admin.register(RejectedEvent)
class RejectedEventAdmin(ReadOnlyAdmin):
    list_display = ("received_at", "code", "message_id", "source", "message")
    list_filter = ("code", "source")
    search_fields = ("message_id", "message")
    date_hierarchy = "received_at"


@admin.register(RefusedRequest)
class RefusedRequestAdmin(ReadOnlyAdmin):
    """Requests refused whole, counted by the hour; nothing of them was stored."""

    list_display = ("hour", "source", "code", "count", "last_at", "message")
    list_filter = ("code", "source")
    date_hierarchy = "hour"


@admin.register(ConsentRecord)
class ConsentRecordAdmin(ReadOnlyAdmin):
    """Consent records are append-only: the admin shows them and nothing more."""

    list_display = ("occurred_at", "profile", "status", "channel", "source")
    list_filter = ("status", "channel", "source")
    search_fields = ("profile__email", "source")
    date_hierarchy = "occurred_at"
    list_select_related = ("profile",)


@admin.register(Suppression)
class SuppressionAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "reason", "source")
    list_filter = ("reason",)


@admin.register(ContactImport)
class ContactImportAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "filename", "status", "accepted", "rejected")
    list_filter = ("status",)
    search_fields = ("filename",)


@admin.action(description="Apply the selected unfinished deliveries again now")
def deliveries_retry(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[WebhookDelivery],
) -> None:
    # A finished delivery is never applied twice; the sweeps give up after 7 days,
    # so this is how an older one that failed (its cause since fixed) is finished.
    # Each by its own feed's service: the shop's would read an ESP's bounce as a
    # topic it does not use, and finish it unapplied.
    pending = list(
        queryset.filter(processed_at=None).values_list("pk", "source").order_by("pk")
    )
    unknown = 0
    for delivery_id, source in pending:
        apply = delivery_applier(source)
        if apply is None:
            unknown += 1
            continue
        apply(delivery_id=delivery_id)
    finished = WebhookDelivery.objects.filter(
        pk__in=[pk for pk, _ in pending], processed_at__isnull=False
    ).count()
    message = (
        f"{finished} of {len(pending)} unfinished deliveries applied; "
        f"{queryset.count() - len(pending)} selected were finished already."
    )
    if unknown:
        message += f" {unknown} came from a feed Bespoke no longer applies."
    modeladmin.message_user(request, message)


class DeliveryErrorFilter(admin.SimpleListFilter):
    # One field holds both: the note of a delivery applied (a stale version, a
    # topic not used) and the error of one not applied yet.
    title = "note or error"
    parameter_name = "has_error"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("note", "Applied, with a note"),
            ("refused", "Refused: its payload cannot be read"),
            ("unfinished", "Not applied yet: an error, or waiting"),
            ("yes", "With a note or an error"),
            ("no", "Without"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        said = queryset.exclude(error="")
        refused = Q(error__startswith=PAYLOAD_REFUSED)
        if self.value() == "note":
            return said.filter(processed_at__isnull=False).exclude(refused)
        if self.value() == "refused":
            return queryset.filter(refused, processed_at__isnull=False)
        if self.value() == "unfinished":
            return queryset.filter(processed_at__isnull=True)
        if self.value() == "yes":
            return said
        if self.value() == "no":
            return queryset.filter(error="")
        return queryset


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """Shop webhooks as received: what each delivery said and whether it applied."""

    list_display = (
        "received_at",
        "topic",
        "shop_domain",
        "delivery_id",
        "processed_at",
        "outcome",
    )
    list_filter = (
        "source",
        "topic",
        ("processed_at", admin.EmptyFieldListFilter),
        DeliveryErrorFilter,
    )
    search_fields = ("delivery_id", "shop_domain", "error")
    date_hierarchy = "received_at"
    actions = (deliveries_retry,)

    @admin.display(description="Outcome")
    def outcome(self, delivery: WebhookDelivery) -> str:
        # A note on an applied delivery is no error: an older version ignored, a
        # topic Bespoke does not use.
        if delivery.processed_at is None:
            return f"Not applied yet: {delivery.error}" if delivery.error else "Waiting"
        if delivery.error.startswith(PAYLOAD_REFUSED):
            return f"Refused: {delivery.error.removeprefix(PAYLOAD_REFUSED)}"
        return (
            f"Applied, with a note: {delivery.error}" if delivery.error else "Applied"
        )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Read-only rows, but the retry action needs change permission.
        return obj is None and request.user.has_perm("profiles.change_webhookdelivery")


@admin.register(ShopCheckout)
class ShopCheckoutAdmin(ReadOnlyAdmin):
    """Checkouts by token; one with no completion time is abandoned (so far)."""

    list_display = (
        "started_at",
        "email",
        "profile",
        "total",
        "currency",
        "completed_at",
        "order_shop_id",
    )
    list_filter = (("completed_at", admin.EmptyFieldListFilter), "currency")
    search_fields = ("token", "email", "order_shop_id")
    date_hierarchy = "started_at"
    list_select_related = ("profile",)


@admin.register(ShopOrder)
class ShopOrderAdmin(ReadOnlyAdmin):
    list_display = (
        "placed_at",
        "name",
        "email",
        "profile",
        "total",
        "currency",
        "financial_status",
        "is_test",
    )
    list_filter = ("financial_status", "currency", "is_test")
    search_fields = ("shop_id", "name", "email", "checkout_token", "customer_id")
    date_hierarchy = "placed_at"
    list_select_related = ("profile",)
