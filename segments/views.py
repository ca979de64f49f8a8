"""Marketer pages for segments: the list with sizes, and the rule builder."""

import json
from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.contrib import messages as flash
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.text import slugify

from profiles.access import staff_required
from profiles.models import SubscriptionStatus
from profiles.traits import trait_schema_load
from segments.geo import CONTINENT_LABELS, CONTINENTS
from segments.language import (
    COUNT_OPS,
    DATE_OPS,
    METRICS,
    NUMBER_OPS,
    PROFILE_DATE_FIELDS,
    PROFILE_TEXT_FIELDS,
    PROPERTY_OPS,
    TEXT_OPS,
    TRAIT_OPS,
    TRAIT_TYPE_WORDS,
    RuleInvalid,
    declared_trait_ops,
)
from segments.models import Segment
from segments.preview import event_names, segment_summaries
from segments.selectors import segment_recent_changes, segment_size_history
from segments.services import segment_save

NEW_SEGMENT_RULE = {"all": []}
HISTORY_TABLE_DAYS = 7


class SegmentForm(forms.Form):
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(
        max_length=100,
        required=False,
        help_text="Left empty, it is made from the name. It cannot change later.",
    )
    description = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2})
    )
    rule = forms.CharField(
        label="Rule (JSON)",
        widget=forms.Textarea(attrs={"rows": 12, "spellcheck": "false"}),
    )

    def __init__(self, *args: Any, segment: Segment | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.segment = segment
        if segment is not None:
            self.fields["slug"].disabled = True

    def clean_rule(self) -> Any:
        try:
            return json.loads(self.cleaned_data["rule"])
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"This is not valid JSON: {exc}") from exc

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.segment is not None:
            cleaned["slug"] = self.segment.slug
            return cleaned

        slug = cleaned.get("slug") or slugify(cleaned.get("name", ""))
        if not slug:
            # slugify keeps ASCII letters and digits only: '日本' gives nothing.
            self.add_error(
                "slug",
                "Give a slug (letters a to z, digits and hyphens): the name has none "
                "of those to make one from.",
            )
        elif Segment.objects.filter(slug=slug).exists():
            self.add_error("slug", f"The slug {slug!r} is already used.")
        cleaned["slug"] = slug
        return cleaned


@staff_required
def segment_list(request: HttpRequest) -> HttpResponse:
    return render(request, "segments/segment_list.html", {"rows": segment_summaries()})


@staff_required
def segment_new(request: HttpRequest) -> HttpResponse:
    return _builder_page(request, segment=None)


@staff_required
def segment_edit(request: HttpRequest, pk: int) -> HttpResponse:
    segment = get_object_or_404(Segment, pk=pk)
    return _builder_page(request, segment=segment)


def _builder_page(request: HttpRequest, *, segment: Segment | None) -> HttpResponse:
    form = SegmentForm(
        request.POST if request.method == "POST" else None,
        segment=segment,
        initial=_initial(segment),
    )
    rule_errors: list[dict] = []
    if form.is_valid():
        try:
            saved = segment_save(
                name=form.cleaned_data["name"],
                slug=form.cleaned_data["slug"],
                description=form.cleaned_data["description"],
                rule=form.cleaned_data["rule"],
            )
        except RuleInvalid as exc:
            rule_errors = [{"path": e.path, "message": e.message} for e in exc.errors]
        else:
            flash.success(request, f"Segment “{saved.name}” saved.")
            return redirect("segment_edit", pk=saved.pk)

    context = {
        "form": form,
        "segment": segment,
        "rule_errors": rule_errors,
        "vocabulary": _vocabulary(exclude=segment),
        "history": _history(segment),
    }
    status = 400 if request.method == "POST" else 200
    return render(request, "segments/segment_edit.html", context, status=status)


def _history(segment: Segment | None) -> dict | None:
    """The segment's size at the end of each of the last 30 days, and who moved lately.

    Days before the segment was created have no size (None), not 0: it was not empty
    then, it did not exist.
    """
    if segment is None:
        return None

    zone = ZoneInfo(settings.BESPOKE_ACCOUNT_TIME_ZONE)
    created_on = segment.created_at.astimezone(zone).date()
    sizes = [
        {**row, "size": row["size"] if row["day"] >= created_on else None}
        for row in segment_size_history(segment_id=segment.pk, days=30)
    ]
    peak = max((row["size"] or 0 for row in sizes), default=0) or 1

    return {
        "sizes": [
            {**row, "percent": round(100 * (row["size"] or 0) / peak)} for row in sizes
        ],
        "last_days": sizes[::-1][:HISTORY_TABLE_DAYS],
        "changes": segment_recent_changes(segment_id=segment.pk, limit=20),
    }


def _initial(segment: Segment | None) -> dict:
    if segment is None:
        return {"rule": json.dumps(NEW_SEGMENT_RULE)}
    return {
        "name": segment.name,
        "slug": segment.slug,
        "description": segment.description,
        "rule": json.dumps(segment.rule, indent=2),
    }


# How the builder names each profile field a condition can test.
FIELD_LABELS = {
    **{
        name: name.replace("_", " ").capitalize()
        for name in (*PROFILE_TEXT_FIELDS, *PROFILE_DATE_FIELDS)
    },
    "country_code": "Country (two-letter code)",
    "created_at": "Profile created",
    "continent": "Continent",
    "tags": "Tags",
}


def _vocabulary(*, exclude: Segment | None) -> dict:
    """What the structured editor offers, taken from the rule language itself."""
    others = Segment.objects.order_by("name").values("slug", "name")
    if exclude is not None:
        others = others.exclude(pk=exclude.pk)
    return {
        "text_fields": sorted(PROFILE_TEXT_FIELDS),
        "date_fields": sorted(PROFILE_DATE_FIELDS),
        "field_labels": FIELD_LABELS,
        "metrics": METRICS,
        "ops": {
            "text": sorted(TEXT_OPS),
            "number": sorted(NUMBER_OPS),
            "date": sorted(DATE_OPS),
            "trait": sorted(TRAIT_OPS),
            "property": sorted(PROPERTY_OPS),
            "count": sorted(COUNT_OPS),
        },
        "continents": sorted(CONTINENTS),
        "continent_labels": CONTINENT_LABELS,
        "consent": [
            {"value": v, "label": label} for v, label in SubscriptionStatus.choices
        ],
        "segments": list(others),
        "events": event_names(),
        "traits": _declared_traits(),
    }


def _declared_traits() -> list[dict]:
    """The trait schema as the editor offers it: each trait's type, ops and values."""
    return [
        {
            "name": rule.name,
            "type": rule.type,
            "words": TRAIT_TYPE_WORDS[rule.type],
            "ops": sorted(declared_trait_ops(rule)),
            "allowed_values": list(rule.allowed_values),
            "minimum": None if rule.minimum is None else float(rule.minimum),
            "maximum": None if rule.maximum is None else float(rule.maximum),
        }
        for rule in sorted(trait_schema_load().values(), key=lambda r: r.name)
    ]
