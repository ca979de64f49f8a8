"""Segments: a named JSON rule over profiles, and who is in each one over time."""

from django.db import models


class Segment(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    rule = models.JSONField()
    # What the rule reads (events, fields, traits...), so an event re-evaluates only
    # the segments it can change; see segments.language.rule_dependencies.
    dependencies = models.JSONField(default=list, blank=True)
    # True when membership can change with the clock alone (a window lapses).
    time_dependent = models.BooleanField(default=False)
    version = models.PositiveIntegerField(default=1)
    member_count = models.PositiveIntegerField(default=0)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    refresh_started_at = models.DateTimeField(null=True, blank=True)
    refresh_cancel_requested = models.BooleanField(default=False)
    refresh_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name


class SegmentMembership(models.Model):
    """One stay of a profile in a segment: when it entered and, once gone, when it left."""

    segment = models.ForeignKey(
        Segment, on_delete=models.CASCADE, related_name="memberships"
    )
    profile = models.ForeignKey(
        "profiles.Profile", on_delete=models.CASCADE, related_name="segment_memberships"
    )
    entered_at = models.DateTimeField()
    left_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["segment", "profile"],
                condition=models.Q(left_at__isnull=True),
                name="membership_one_open_stay",
            ),
        ]
        indexes = [
            models.Index(fields=["profile", "left_at"]),
            models.Index(fields=["segment", "entered_at"]),
            models.Index(fields=["segment", "left_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.profile_id} in {self.segment_id}"
