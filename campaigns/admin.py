"""Admin pages for templates, campaigns and the message log (power use)."""

from django.contrib import admin

from campaigns.models import Campaign, EmailTemplate, Message, OutboxEmail


@admin.register(EmailTemplate)
class EmailTemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "subject", "updated_at")
    search_fields = ("name", "subject")


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
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


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("campaign", "profile", "status", "skip_reason", "sent_at")
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
