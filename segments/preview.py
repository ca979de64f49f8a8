"""Reads for the segment builder: counts, samples, differences and explanations.

Everything here returns plain values (dicts, lists, ints) for the builder's pages and
API. Counts are SQL aggregates over the compiled rule; nothing loops over profiles in
Python. Each function raises RuleInvalid, naming the bad nodes, when the rule given
does not validate.
"""

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Case, Count, F, Q, QuerySet, Value, When
from django.utils import timezone

from profiles import selectors as profiles_selectors
from profiles.models import Event, Profile, SubscriptionStatus
from segments.compiler import rule_compile
from segments.language import RuleInvalid, SegmentLookup, rule_describe
from segments.models import Segment
from segments.selectors import segment_count

SAMPLE_SIZE = 10
EVENT_NAMES_SHOWN = 200

# Why a matched profile cannot be emailed. Each ineligible profile is counted once,
# under the first reason in this order, so the reasons add up to the ineligible total.
# The order is the one sending skips by (campaigns.sending.message_skip_reason): a
# bounced address, which is on the suppression list too, counts as cleaned, as the
# dashboard and the campaign's skipped messages say.
INELIGIBLE_REASONS = (
    "no_email",
    "unsubscribed",
    "cleaned",
    "not_subscribed",
    "suppressed",
    "needs_smtputf8",
)
_ELIGIBLE = "eligible"
# A non-ASCII character before the @: sending needs SMTPUTF8 (BESPOKE_SMTPUTF8).
# Written for both PostgreSQL's regular expressions and Python's (SQLite).
NON_ASCII_LOCAL_PART = r"^[^@]*[^\x01-\x7f][^@]*@"


def rule_preview(
    *,
    rule: Any,
    now: datetime | None = None,
    sample_size: int = SAMPLE_SIZE,
    slug: str | None = None,
) -> dict:
    """Return who the rule matches: the count, who can be emailed, why not, a sample.

    The counts come from one aggregate query; the sample is a second query.
    """
    matched = Profile.objects.filter(
        rule_compile(rule, now=now, slug=slug, check_schema=True)
    )
    counts = matched.alias(reason=_email_reason()).aggregate(
        matched=Count("pk"),
        **{
            key: Count("pk", filter=Q(reason=key))
            for key in (_ELIGIBLE, *INELIGIBLE_REASONS)
        },
    )

    ineligible = {reason: counts[reason] for reason in INELIGIBLE_REASONS}
    return {
        "matched": counts["matched"],
        "eligible": counts[_ELIGIBLE],
        "ineligible": {"total": sum(ineligible.values()), **ineligible},
        "sample": profiles_sample(matched, size=sample_size),
    }


def _email_reason() -> Case:
    """Label each profile 'eligible' or with the first reason it cannot be emailed.

    A subscribed profile whose address needs SMTPUTF8 is counted under that reason
    only when the ESP lacks it, as sending skips it (campaigns/sending.py).
    """
    subscribed = Q(subscription_status=SubscriptionStatus.SUBSCRIBED)
    return Case(
        When(Q(email__isnull=True) | Q(email=""), then=Value("no_email")),
        When(~subscribed, then=F("subscription_status")),
        When(suppressed_at__isnull=False, then=Value("suppressed")),
        *(
            []
            if settings.BESPOKE_SMTPUTF8
            else [When(email__regex=NON_ASCII_LOCAL_PART, then=Value("needs_smtputf8"))]
        ),
        default=Value(_ELIGIBLE),
    )


def profiles_sample(profiles: QuerySet[Profile], *, size: int) -> list[dict]:
    """Return the most recently seen of the profiles as plain rows."""
    rows = profiles.order_by(F("last_seen_at").desc(nulls_last=True), "-pk").values(
        "pk", "email", "first_name", "last_name", "country_code"
    )[:size]
    return [
        {
            "id": row["pk"],
            "email": row["email"] or "",
            "name": " ".join(
                part for part in (row["first_name"], row["last_name"]) if part
            ),
            "country": row["country_code"],
        }
        for row in rows
    ]


def rule_nodes(rule: Any, path: str = "rule") -> list[tuple[str, str, dict]]:
    """Return (path, kind, node) for every group and condition, parents first.

    Paths are those rule_validate uses. Another segment's rule, referred to by a
    'segment' condition, is one node here: it is not opened up.
    """
    for key in ("all", "any"):
        if key in rule:
            found = [(path, key, rule)]
            for index, child in enumerate(rule[key]):
                found += rule_nodes(child, f"{path}.{key}[{index}]")
            return found
    if "not" in rule:
        return [(path, "not", rule), *rule_nodes(rule["not"], f"{path}.not")]
    return [(path, "condition", rule)]


def rule_condition_counts(
    *, rule: Any, now: datetime | None = None, slug: str | None = None
) -> list[dict]:
    """Return, for every node of the rule, how many profiles that node alone matches.

    All the counts come from one query: one filtered COUNT per node.
    """
    now = now or timezone.now()
    lookup = SegmentLookup()  # one read of the trait schema for every node
    # Validates the whole tree once, up front.
    rule_compile(rule, now=now, slug=slug, lookup=lookup, check_schema=True)

    nodes = rule_nodes(rule)
    counts = Profile.objects.aggregate(
        **{
            f"node{index}": Count(
                "pk", filter=rule_compile(node, now=now, slug=slug, lookup=lookup)
            )
            for index, (_, _, node) in enumerate(nodes)
        }
    )
    return [
        {
            "path": path,
            "kind": kind,
            "description": rule_describe(node),
            "count": counts[f"node{index}"],
        }
        for index, (path, kind, node) in enumerate(nodes)
    ]


def rule_diff(
    *,
    segment: Segment,
    rule: Any,
    now: datetime | None = None,
    sample_size: int = SAMPLE_SIZE,
) -> dict:
    """Return who would enter and who would leave the segment if the rule were saved.

    The two counts come from one aggregate query, each sample from one more. A saved
    rule that no longer compiles is reported in 'saved_rule_error', with no counts.
    """
    now = now or timezone.now()
    lookup = SegmentLookup()
    proposed = rule_compile(
        rule, now=now, slug=segment.slug, lookup=lookup, check_schema=True
    )
    try:
        saved = rule_compile(segment.rule, now=now, slug=segment.slug, lookup=lookup)
    except RuleInvalid as exc:
        return {"saved_rule_error": str(exc), "unchanged": False}

    entering, leaving = proposed & ~saved, saved & ~proposed
    counts = Profile.objects.aggregate(
        entering=Count("pk", filter=entering), leaving=Count("pk", filter=leaving)
    )
    return {
        "unchanged": rule == segment.rule,
        "entering": counts["entering"],
        "leaving": counts["leaving"],
        "entering_sample": profiles_sample(
            Profile.objects.filter(entering), size=sample_size
        ),
        "leaving_sample": profiles_sample(
            Profile.objects.filter(leaving), size=sample_size
        ),
    }


def rule_explain(
    *,
    rule: Any,
    profile_id: int,
    now: datetime | None = None,
    slug: str | None = None,
) -> dict:
    """Return, for one profile, whether each node held, and which nodes decided.

    Every node is evaluated in SQL against the one profile, all in one query (a
    filtered COUNT per node, each 0 or 1), so the answer is the compiler's own.
    """
    now = now or timezone.now()
    lookup = SegmentLookup()
    rule_compile(rule, now=now, slug=slug, lookup=lookup, check_schema=True)

    nodes = rule_nodes(rule)
    held = Profile.objects.filter(pk=profile_id).aggregate(
        **{
            f"node{index}": Count(
                "pk", filter=rule_compile(node, now=now, slug=slug, lookup=lookup)
            )
            for index, (_, _, node) in enumerate(nodes)
        }
    )
    results = {
        path: held[f"node{index}"] == 1 for index, (path, _, _) in enumerate(nodes)
    }

    decided_by = [
        {"path": path, "description": rule_describe(node), "held": results[path]}
        for path, node in _deciding(rule, "rule", results)
    ]
    return {
        "in": results["rule"],
        "nodes": [
            {
                "path": path,
                "kind": kind,
                "description": rule_describe(node),
                "held": results[path],
            }
            for path, kind, node in nodes
        ],
        "decided_by": decided_by,
        "summary": _summary(results["rule"], decided_by),
    }


def _deciding(node: dict, path: str, results: dict[str, bool]) -> list[tuple]:
    """Return the conditions whose outcome made this node come out as it did.

    'All' that held needs every child, 'all' that failed is decided by the children
    that failed; 'any' the other way round. 'Not' is decided by what decided its child.
    """
    for key in ("all", "any"):
        if key not in node:
            continue
        if not node[key]:
            return [(path, node)]

        children = [
            (f"{path}.{key}[{index}]", child) for index, child in enumerate(node[key])
        ]
        every_child_counts = results[path] == (key == "all")
        found = []
        for child_path, child in children:
            if every_child_counts or results[child_path] == results[path]:
                found += _deciding(child, child_path, results)
        return found
    if "not" in node:
        return _deciding(node["not"], f"{path}.not", results)
    return [(path, node)]


def _summary(is_in: bool, decided_by: list[dict]) -> str:
    reasons = "; ".join(
        f"{item['description']} ({'held' if item['held'] else 'failed'})"
        for item in decided_by
    )
    return f"{'In' if is_in else 'Out'} because: {reasons}"


def profile_find(reference: str) -> dict | None:
    """Return the profile a marketer names (id, address, userId), as plain values."""
    profile = profiles_selectors.profile_find(reference)
    if profile is None:
        return None
    return {
        "id": profile.pk,
        "email": profile.email or "",
        "name": " ".join(
            part for part in (profile.first_name, profile.last_name) if part
        ),
    }


def segment_summaries() -> list[dict]:
    """Return every segment with its size now; a rule that no longer compiles says why.

    One count query per segment, fine for the tens of segments an account has.
    """
    rows = []
    for segment in Segment.objects.order_by("name", "pk"):
        try:
            size, error = segment_count(segment), ""
        except RuleInvalid as exc:
            size, error = None, str(exc)
        rows.append(
            {
                "id": segment.pk,
                "slug": segment.slug,
                "name": segment.name,
                "description": segment.description,
                "size": size,
                "error": error,
            }
        )
    return rows


def event_names() -> list[str]:
    """Return the names of tracked events, for the editor's suggestions."""
    names = (
        Event.objects.exclude(event="")
        .order_by("event")
        .values_list("event", flat=True)
        .distinct()
    )
    return list(names[:EVENT_NAMES_SHOWN])
