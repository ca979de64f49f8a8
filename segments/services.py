"""Writes on segments: saving a rule only once it is valid."""

from django.db import transaction
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
        _refresh_on_commit(segment.pk)
        return segment

    changed = segment.rule != rule
    if changed:
        segment.version += 1
    segment.name, segment.rule, segment.description = name, rule, description
    segment.dependencies, segment.time_dependent = sorted(dependencies), time_dependent
    segment.save()
    if changed:
        _refresh_on_commit(segment.pk)
        _dependents_update(slug)
    return segment


def _dependents_update(slug: str) -> None:
    """Re-read what the segments built on this one read, and refresh them.

    A segment's dependencies include those of the segments it names, however deep,
    and whether the clock alone moves it: both change with the segment it names,
    and so do its members.
    """
    named = f"segment:{slug}"
    # In Python: few segments, and SQLite cannot ask a JSON list what it contains.
    for dependent in Segment.objects.exclude(slug=slug).only(
        "pk", "rule", "dependencies", "time_dependent"
    ):
        if named not in dependent.dependencies:
            continue
        dependencies, time_dependent = rule_dependencies(dependent.rule)
        dependent.dependencies = sorted(dependencies)
        dependent.time_dependent = time_dependent
        dependent.save(update_fields=["dependencies", "time_dependent"])
        _refresh_on_commit(dependent.pk)


def _refresh_on_commit(segment_id: int) -> None:
    # Imported here: the tasks module imports the membership services, which import
    # the compiler; keeping it out of this module's imports keeps saving light.
    from segments.tasks import segment_refresh_task

    transaction.on_commit(lambda: segment_refresh_task.delay(segment_id))
