"""Writes on segments: saving a rule only once it is valid."""

from django.utils.text import slugify

from segments.language import RuleInvalid, rule_validate
from segments.models import Segment


def segment_save(
    *, name: str, rule: dict, slug: str = "", description: str = ""
) -> Segment:
    """Create or update a segment by slug; raise RuleInvalid naming each bad node."""
    slug = slug or slugify(name)
    errors = rule_validate(rule, slug=slug)
    if errors:
        raise RuleInvalid(errors)

    segment, _ = Segment.objects.update_or_create(
        slug=slug, defaults={"name": name, "rule": rule, "description": description}
    )
    return segment
