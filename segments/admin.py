"""The Django admin for segments: rules, refresh state, and the stays they record."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from segments.language import rule_validate
from segments.membership import (
    SegmentBusy,
    segment_rebuild_cancel,
    segment_rebuild_start,
)
from segments.models import Segment, SegmentMembership
from segments.services import segment_save
from segments.tasks import segment_refresh_task


class SegmentForm(forms.ModelForm):
    class Meta:
        model = Segment
        fields = ("name", "slug", "description", "rule")

    def clean(self) -> dict:
        cleaned = super().clean()
        if "rule" in cleaned:
            errors = rule_validate(cleaned["rule"], slug=cleaned.get("slug"))
            if errors:
                self.add_error("rule", [str(error) for error in errors])
        return cleaned


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    form = SegmentForm
    list_display = (
        "name",
        "slug",
        "member_count",
        "time_dependent",
        "refreshed_at",
        "refresh_started_at",
        "refresh_error",
    )
    search_fields = ("name", "slug")
    readonly_fields = (
        "dependencies",
        "time_dependent",
        "version",
        "member_count",
        "refreshed_at",
        "refresh_started_at",
        "refresh_cancel_requested",
        "refresh_error",
    )
    actions = ("refresh", "rebuild", "cancel_rebuild")

    def save_model(
        self, request: HttpRequest, obj: Segment, form: Any, change: bool
    ) -> None:
        # Through the service, so dependencies, version and the refresh follow.
        saved = segment_save(
            name=obj.name, rule=obj.rule, slug=obj.slug, description=obj.description
        )
        obj.pk = saved.pk

    @admin.action(description="Refresh membership now")
    def refresh(self, request: HttpRequest, queryset: QuerySet[Segment]) -> None:
        for segment_id in queryset.values_list("pk", flat=True):
            segment_refresh_task.delay(segment_id)
        self.message_user(request, f"{queryset.count()} refreshes enqueued.")

    @admin.action(description="Rebuild membership (repair)")
    def rebuild(self, request: HttpRequest, queryset: QuerySet[Segment]) -> None:
        for segment in queryset:
            try:
                segment_rebuild_start(segment_id=segment.pk)
            except SegmentBusy:
                self.message_user(
                    request, f"{segment} is being refreshed already.", messages.WARNING
                )

    @admin.action(description="Cancel a running rebuild")
    def cancel_rebuild(self, request: HttpRequest, queryset: QuerySet[Segment]) -> None:
        for segment in queryset:
            if not segment_rebuild_cancel(segment_id=segment.pk):
                self.message_user(
                    request, f"{segment} has no rebuild running.", messages.WARNING
                )


@admin.register(SegmentMembership)
class SegmentMembershipAdmin(admin.ModelAdmin):
    """Stays are facts written by refreshes: shown, never edited by hand."""

    list_display = ("segment", "profile", "entered_at", "left_at")
    list_filter = ("segment",)
    list_select_related = ("segment", "profile")
    raw_id_fields = ("profile",)
    date_hierarchy = "entered_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
