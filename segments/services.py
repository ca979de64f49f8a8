"""Writes on segments: saving a rule only once it is valid."""

from django.utils.text import slugify

from segments.language import RuleInvalid, rule_dependencies, rule_validate
from segments.models import Segment


def segment_save(
    *, name: str, rule: dict, slug: str = "", description: str = ""
) -> Segment:
    """Create or update a segment by slug; raise RuleInvalid naming each bad node."""
    slug = slug or slugify(name)
    errors = rule_validate(rule, slug=slug)
    if errors:
        raise RuleInvalid(errors)

    dependencies, time_dependent = rule_dependencies(rule)
    segment, created = Segment.objects.get_or_create(
        slug=slug,
        defaults={
            "name": name,
            "rule": rule,
            "description": description,
            "dependencies": sorted(dependencies),
            "time_dependent": time_dependent,
        },
    )
    if created:
        return segment

    if segment.rule != rule:
        segment.version += 1
    segment.name, segment.rule, segment.description = name, rule, description
    segment.dependencies, segment.time_dependent = sorted(dependencies), time_dependent
    segment.save()
    return segment
