"""Admin pages for templates, campaigns and the message log (power use)."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from campaigns.models import Campaign, EmailTemplate, Message, OutboxEmail
from campaigns.rendering import TemplateReview, template_review
from campaigns.sending import campaign_render_problem, campaign_schedule
from profiles.traits import trait_schema_load


class EmailTemplateForm(forms.ModelForm):
    """Refuses a template that does not parse; keeps the names no one has as warnings."""

    review = TemplateReview([], [])

    class Meta:
        model = EmailTemplate
        fields = ("name", "subject", "html", "text")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        self.review = template_review(
            subject=cleaned.get("subject") or "",
            html=cleaned.get("html") or "",
            text=cleaned.get("text") or "",
            traits=trait_schema_load(),
        )
        for error in self.review.errors:
            part = error.split(":", 1)[0].split(",", 1)[0]
            self.add_error(part if part in self.fields else None, error)
        return cleaned


@admin.register(EmailTemplate)
class EmailTemplateAdmin(admin.ModelAdmin):
    form = EmailTemplateForm
    list_display = ("name", "subject", "updated_at")
    search_fields = ("name", "subject")

    def save_model(
        self, request: HttpRequest, obj: EmailTemplate, form: Any, change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        for warning in form.review.warnings:
            self.message_user(request, warning, level=messages.WARNING)


class CampaignForm(forms.ModelForm):
    """Refuses a time to send while the email cannot be rendered for a recipient."""

    class Meta:
        model = Campaign
        fields = ("name", "slug", "template", "segment", "from_email", "scheduled_at")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        segment, template = cleaned.get("segment"), cleaned.get("template")
        if cleaned.get("scheduled_at") and segment and template:
            # As "Send now" checks: the sweep would start it unwatched, and each
            # recipient it fails for would be skipped for good.
            unsaved = Campaign(
                name=cleaned.get("name") or "",
                slug=cleaned.get("slug") or "",
                segment=segment,
                template=template,
            )
            problem = campaign_render_problem(unsaved)
            if problem:
                self.add_error(
                    "scheduled_at",
                    f"The email cannot be rendered for {problem}. Fix the template, "
                    "then schedule it.",
                )
        return cleaned


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignForm
    list_display = (
        "name",
        "segment",
        "template",
        "status",
        "scheduled_at",
        "finished_at",
    )
    list_filter = ("status",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    # Sending state moves only through campaigns.sending, which claims it safely.
    readonly_fields = ("status", "started_at", "finished_at")

    def save_model(
        self, request: HttpRequest, obj: Campaign, form: Any, change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        # A time to send makes it scheduled; the beat sweep starts it then.
        campaign_schedule(campaign_id=obj.pk)
        obj.refresh_from_db(fields=["status"])


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = (
        "campaign",
        "profile",
        "status",
        "skip_reason",
        "sent_at",
        "delivered_at",
        "opened_at",
        "clicked_at",
        "bounced_at",
    )
    list_filter = ("status", "skip_reason", "campaign")
    raw_id_fields = ("profile",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(OutboxEmail)
class OutboxEmailAdmin(admin.ModelAdmin):
    list_display = ("subject", "created_at")
    search_fields = ("subject",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
