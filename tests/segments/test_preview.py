"""The builder's reads: counts with reasons, per-node counts, diff and explanations."""

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from campaigns.sending import message_skip_reason
from profiles.models import (
    Event,
    IdentityKind,
    Profile,
    ProfileIdentity,
    SubscriptionStatus,
    SuppressionReason,
)
from profiles.services import suppression_add
from segments.language import RuleInvalid
from segments.preview import (
    event_names,
    profile_find,
    rule_condition_counts,
    rule_diff,
    rule_explain,
    rule_nodes,
    rule_preview,
    segment_summaries,
)
from tests.factories import ProfileFactory, SegmentFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
GOLD = {"attribute": "traits.tier", "op": "eq", "value": "gold"}
FRENCH = {"attribute": "country_code", "op": "eq", "value": "FR"}
NESTED = {
    "all": [
        GOLD,
        {"any": [FRENCH, {"not": {"consent": "unsubscribed"}}]},
    ]
}


def person(name: str, **fields):
    defaults = {
        "email": f"{name}@example.com",
        "first_name": name.capitalize(),
        "last_name": "Test",
        "traits": {"tier": "gold"},
    }
    return ProfileFactory(**{**defaults, **fields})


@pytest.fixture
def people() -> dict:
    status = SubscriptionStatus
    return {
        "ana": person("ana", country_code="FR", last_seen_at=NOW - timedelta(days=1)),
        "bo": person(
            "bo",
            country_code="FR",
            subscription_status=status.UNSUBSCRIBED,
            last_seen_at=NOW - timedelta(days=3),
        ),
        "cy": person("cy", country_code="DE", subscription_status=status.UNSUBSCRIBED),
        "dee": person("dee", country_code="DE", subscription_status=status.CLEANED),
        "eli": person(
            "eli", country_code="US", subscription_status=status.NOT_SUBSCRIBED
        ),
        "anon": person("anon", email=None, subscription_status=status.NOT_SUBSCRIBED),
        "fay": person(
            "fay",
            country_code="US",
            suppressed_at=NOW - timedelta(days=5),
            last_seen_at=NOW - timedelta(days=2),
        ),
        "gus": person("gus", country_code="FR", traits={"tier": "silver"}),
    }


def test_it_counts_matches_and_says_why_each_cannot_be_emailed(people):
    preview = rule_preview(rule=GOLD, now=NOW, sample_size=4)

    assert preview["matched"] == 7
    assert preview["eligible"] == 1
    assert preview["ineligible"] == {
        "total": 6,
        "no_email": 1,
        "suppressed": 1,
        "unsubscribed": 2,
        "cleaned": 1,
        "not_subscribed": 1,
        "needs_smtputf8": 0,
    }


def test_it_counts_addresses_that_need_smtputf8_as_not_emailable(people, settings):
    # given the ESP does not support SMTPUTF8, and a subscribed gold profile whose
    # address has a non-ASCII local part
    settings.BESPOKE_SMTPUTF8 = False
    person("jörg", email="sendtest.jörg@example.com", traits={"tier": "gold"})
    person("kai", email="kai@bücher.example.com", traits={"tier": "gold"})

    # when the rule is previewed
    preview = rule_preview(rule=GOLD, now=NOW)

    # then that profile cannot be emailed, for its own reason; an IDN domain can be
    assert (preview["matched"], preview["eligible"]) == (9, 2)
    assert preview["ineligible"]["needs_smtputf8"] == 1
    assert preview["ineligible"]["total"] == 7


def test_addresses_that_need_smtputf8_can_be_emailed_when_the_esp_supports_it(
    people, settings
):
    settings.BESPOKE_SMTPUTF8 = True
    person("jörg", email="sendtest.jörg@example.com", traits={"tier": "gold"})

    preview = rule_preview(rule=GOLD, now=NOW)

    assert (preview["matched"], preview["eligible"]) == (8, 2)
    assert preview["ineligible"]["needs_smtputf8"] == 0


def test_the_sample_shows_the_most_recently_seen_first(people):
    preview = rule_preview(rule=GOLD, now=NOW, sample_size=4)

    assert preview["sample"] == [
        {
            "id": people["ana"].pk,
            "email": "ana@example.com",
            "name": "Ana Test",
            "country": "FR",
        },
        {
            "id": people["fay"].pk,
            "email": "fay@example.com",
            "name": "Fay Test",
            "country": "US",
        },
        {
            "id": people["bo"].pk,
            "email": "bo@example.com",
            "name": "Bo Test",
            "country": "FR",
        },
        # Never seen: the newest profile first.
        {"id": people["anon"].pk, "email": "", "name": "Anon Test", "country": ""},
    ]


def test_it_counts_the_reasons_in_one_query(people, django_assert_num_queries):
    # The trait schema (GOLD reads a trait), the counts, then the sample.
    with django_assert_num_queries(3):
        rule_preview(rule=GOLD, now=NOW)


def test_an_invalid_rule_is_refused_with_the_bad_node(people):
    with pytest.raises(RuleInvalid) as caught:
        rule_preview(rule={"all": [GOLD, {"consent": "maybe"}]}, now=NOW)

    assert [error.path for error in caught.value.errors] == ["rule.all[1]"]


def test_the_nodes_are_listed_parents_first_with_validation_paths():
    assert [(path, kind) for path, kind, _ in rule_nodes(NESTED)] == [
        ("rule", "all"),
        ("rule.all[0]", "condition"),
        ("rule.all[1]", "any"),
        ("rule.all[1].any[0]", "condition"),
        ("rule.all[1].any[1]", "not"),
        ("rule.all[1].any[1].not", "condition"),
    ]


def test_each_node_is_counted_on_its_own(people, django_assert_num_queries):
    with django_assert_num_queries(2):  # the trait schema once, then every count
        counts = rule_condition_counts(rule=NESTED, now=NOW)

    assert counts == [
        {
            "path": "rule",
            "kind": "all",
            "description": (
                "(traits.tier is 'gold' AND "
                "(country_code is 'FR' OR NOT subscription is unsubscribed))"
            ),
            "count": 6,
        },
        {
            "path": "rule.all[0]",
            "kind": "condition",
            "description": "traits.tier is 'gold'",
            "count": 7,
        },
        {
            "path": "rule.all[1]",
            "kind": "any",
            "description": "(country_code is 'FR' OR NOT subscription is unsubscribed)",
            "count": 7,
        },
        {
            "path": "rule.all[1].any[0]",
            "kind": "condition",
            "description": "country_code is 'FR'",
            "count": 3,
        },
        {
            "path": "rule.all[1].any[1]",
            "kind": "not",
            "description": "NOT subscription is unsubscribed",
            "count": 6,
        },
        {
            "path": "rule.all[1].any[1].not",
            "kind": "condition",
            "description": "subscription is unsubscribed",
            "count": 2,
        },
    ]


def test_event_windows_are_counted_at_the_time_given(people):
    for days_ago in (2, 40):
        Event.objects.create(
            message_id=f"order-{days_ago}",
            type="track",
            event="Order Completed",
            profile=people["ana" if days_ago == 2 else "bo"],
            timestamp=NOW - timedelta(days=days_ago),
            received_at=NOW,
        )
    rule = {"any": [{"event": "Order Completed", "within_days": 30}]}

    counts = rule_condition_counts(rule=rule, now=NOW)
    later = rule_condition_counts(rule=rule, now=NOW + timedelta(days=29))

    assert [row["count"] for row in counts] == [1, 1]
    assert [row["count"] for row in later] == [0, 0]
    assert event_names() == ["Order Completed"]


def test_a_trend_is_counted_and_described_like_any_other_node(people):
    # Ana opened three times in the earlier half of 60 days and once in the recent
    # half (declining); Bo opened once early and twice lately (rising).
    opens = {"ana": (45, 40, 35, 10), "bo": (50, 20, 5)}
    for name, days in opens.items():
        for days_ago in days:
            Event.objects.create(
                message_id=f"open-{name}-{days_ago}",
                type="track",
                event="Email Opened",
                profile=people[name],
                timestamp=NOW - timedelta(days=days_ago),
                received_at=NOW,
            )
    trend = {"trend": "Email Opened", "over_days": 60, "direction": "declining"}
    rule = {"all": [trend, {"engagement": "opened", "within_days": 30}]}

    counts = rule_condition_counts(rule=rule, now=NOW)

    assert [(row["path"], row["count"]) for row in counts] == [
        ("rule", 1),
        ("rule.all[0]", 1),
        ("rule.all[1]", 2),
    ]
    assert counts[1]["description"] == "Email Opened declining over 60 days"


def test_the_diff_says_who_would_enter_and_who_would_leave(people):
    segment = SegmentFactory(slug="french", rule=FRENCH)

    diff = rule_diff(segment=segment, rule=GOLD, now=NOW, sample_size=2)

    assert diff["unchanged"] is False
    assert diff["entering"] == 5
    assert diff["leaving"] == 1
    assert [row["id"] for row in diff["entering_sample"]] == [
        people["fay"].pk,
        people["anon"].pk,
    ]
    assert [row["email"] for row in diff["leaving_sample"]] == ["gus@example.com"]


def test_an_unchanged_rule_moves_no_one(people):
    segment = SegmentFactory(slug="gold", rule=GOLD)

    diff = rule_diff(segment=segment, rule=GOLD, now=NOW)

    assert (diff["unchanged"], diff["entering"], diff["leaving"]) == (True, 0, 0)


def test_the_diff_refuses_a_rule_that_refers_to_its_own_segment(people):
    segment = SegmentFactory(slug="gold", rule=GOLD)

    with pytest.raises(RuleInvalid) as caught:
        rule_diff(segment=segment, rule={"segment": "gold"}, now=NOW)

    assert [error.path for error in caught.value.errors] == ["rule"]


def test_a_saved_rule_that_no_longer_compiles_is_reported(people):
    segment = SegmentFactory(slug="broken", rule={"segment": "deleted"})

    diff = rule_diff(segment=segment, rule=GOLD, now=NOW)

    assert diff == {
        "unchanged": False,
        "saved_rule_error": "rule: there is no segment 'deleted'",
    }


def test_it_explains_why_a_profile_is_out(people, django_assert_num_queries):
    with django_assert_num_queries(2):  # the trait schema once, then every node
        explained = rule_explain(rule=NESTED, profile_id=people["cy"].pk, now=NOW)

    assert explained["in"] is False
    assert [(node["path"], node["held"]) for node in explained["nodes"]] == [
        ("rule", False),
        ("rule.all[0]", True),
        ("rule.all[1]", False),
        ("rule.all[1].any[0]", False),
        ("rule.all[1].any[1]", False),
        ("rule.all[1].any[1].not", True),
    ]
    assert explained["decided_by"] == [
        {
            "path": "rule.all[1].any[0]",
            "description": "country_code is 'FR'",
            "held": False,
        },
        {
            "path": "rule.all[1].any[1].not",
            "description": "subscription is unsubscribed",
            "held": True,
        },
    ]
    assert explained["summary"] == (
        "Out because: country_code is 'FR' (failed); "
        "subscription is unsubscribed (held)"
    )


def test_it_explains_why_a_profile_is_in(people):
    explained = rule_explain(rule=NESTED, profile_id=people["dee"].pk, now=NOW)

    assert explained["in"] is True
    assert explained["summary"] == (
        "In because: traits.tier is 'gold' (held); "
        "subscription is unsubscribed (failed)"
    )


def test_an_empty_group_decides_on_its_own(people):
    explained = rule_explain(rule={"any": []}, profile_id=people["ana"].pk, now=NOW)

    assert explained["in"] is False
    assert explained["summary"] == "Out because: no one (failed)"


def test_a_profile_is_found_by_id_or_by_email_in_any_case(people):
    ana = people["ana"]

    assert profile_find(str(ana.pk)) == {
        "id": ana.pk,
        "email": "ana@example.com",
        "name": "Ana Test",
    }
    assert profile_find(" ANA@example.com ")["id"] == ana.pk
    assert profile_find("nobody@example.com") is None


def test_a_profile_is_found_by_the_punycode_form_of_an_idn_address(people):
    kai = person("kai", email="kai@bücher.example.com")

    assert profile_find("kai@xn--bcher-kva.example.com")["id"] == kai.pk
    assert profile_find("KAI@BÜCHER.example.com")["id"] == kai.pk


def test_a_profile_is_found_by_a_user_id_and_an_id_comes_first(people):
    ana, bo = people["ana"], people["bo"]
    ProfileIdentity.objects.create(
        profile=ana, kind=IdentityKind.USER_ID, value="usr_1001"
    )
    ProfileIdentity.objects.create(
        profile=ana, kind=IdentityKind.USER_ID, value=str(bo.pk)
    )
    ProfileIdentity.objects.create(
        profile=bo, kind=IdentityKind.ANONYMOUS_ID, value="anon_1"
    )

    assert profile_find("usr_1001")["id"] == ana.pk
    assert profile_find(str(bo.pk))["id"] == bo.pk
    # The same lookup as the merge form's: an anonymousId names its profile too.
    assert profile_find("anon_1")["id"] == bo.pk
    assert profile_find("") is None


def test_the_segment_list_shows_sizes_and_rules_that_no_longer_compile(people):
    SegmentFactory(name="Gold", slug="gold", rule=GOLD, description="Tier gold")
    SegmentFactory(name="Broken", slug="broken", rule={"segment": "deleted"})

    rows = segment_summaries()

    assert [(row["name"], row["size"], row["error"]) for row in rows] == [
        ("Broken", None, "rule: there is no segment 'deleted'"),
        ("Gold", 7, ""),
    ]
    assert rows[1]["description"] == "Tier gold"


def test_a_bounced_or_unsubscribed_address_counts_as_sending_would_skip_it(db):
    # given a bounced and an unsubscribed profile, both on the suppression list as
    # a bounce and a complaint put them, and a subscribed one suppressed by hand
    cleaned = person("hal", subscription_status=SubscriptionStatus.CLEANED)
    gone = person("ida", subscription_status=SubscriptionStatus.UNSUBSCRIBED)
    held = person("jo")
    for profile, reason in (
        (cleaned, SuppressionReason.HARD_BOUNCE),
        (gone, SuppressionReason.COMPLAINT),
        (held, SuppressionReason.MANUAL),
    ):
        suppression_add(email_key=profile.email, reason=reason, source="test")

    # when the rule is previewed
    preview = rule_preview(rule=GOLD, now=NOW)

    # then each counts under the reason a campaign would skip it for
    skipped = Counter(
        message_skip_reason(profile)
        for profile in Profile.objects.filter(pk__in=[cleaned.pk, gone.pk, held.pk])
    )
    assert skipped == {"cleaned": 1, "unsubscribed": 1, "suppressed": 1}
    counted = {key: n for key, n in preview["ineligible"].items() if n}
    assert counted == {"total": 3, **skipped}
