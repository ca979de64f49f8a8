"""The builder's API and pages: staff only, exact counts, errors that name the node."""

import json

import pytest
from django.urls import reverse

from profiles.models import IdentityKind, ProfileIdentity, SubscriptionStatus
from segments.models import Segment
from segments.services import segment_save
from tests.factories import ProfileFactory, SegmentFactory, UserFactory

pytestmark = pytest.mark.django_db

PREVIEW = "/segments/api/preview"
EXPLAIN = "/segments/api/explain"
FRENCH = {"attribute": "country_code", "op": "eq", "value": "FR"}
SUBSCRIBED = {"consent": "subscribed"}


@pytest.fixture
def marketer_client(client, marketer):
    client.force_login(marketer)
    return client


@pytest.fixture
def outsider_client(client):
    client.force_login(UserFactory(username="outsider", is_staff=False))
    return client


@pytest.fixture
def people() -> dict:
    return {
        "ana": ProfileFactory(email="ana@example.com", country_code="FR"),
        "bo": ProfileFactory(
            email="bo@example.com",
            country_code="FR",
            subscription_status=SubscriptionStatus.UNSUBSCRIBED,
        ),
        "cy": ProfileFactory(email=None, country_code="FR"),
        "dee": ProfileFactory(email="dee@example.com", country_code="DE"),
    }


def post_json(client, url: str, body: dict):
    return client.post(url, json.dumps(body), content_type="application/json")


def test_the_preview_counts_reasons_nodes_and_describes_the_rule(
    marketer_client, people
):
    rule = {"any": [FRENCH, {"all": [SUBSCRIBED]}]}

    response = post_json(marketer_client, PREVIEW, {"rule": rule})

    assert response.status_code == 200
    body = response.json()
    assert (body["matched"], body["eligible"]) == (4, 2)
    assert body["ineligible"] == {
        "total": 2,
        "no_email": 1,
        "suppressed": 0,
        "unsubscribed": 1,
        "cleaned": 0,
        "not_subscribed": 0,
        "needs_smtputf8": 0,
    }
    assert [(c["path"], c["count"]) for c in body["conditions"]] == [
        ("rule", 4),
        ("rule.any[0]", 3),
        ("rule.any[1]", 3),
        ("rule.any[1].all[0]", 3),
    ]
    assert body["description"] == "(country_code is 'FR' OR subscription is subscribed)"
    assert body["diff"] is None
    assert len(body["sample"]) == 4
    assert body["sample"][0] == {
        "id": people["dee"].pk,
        "email": "dee@example.com",
        "name": "Pat",
        "country": "DE",
    }


def test_the_preview_of_a_saved_segment_includes_the_diff(marketer_client, people):
    segment = SegmentFactory(slug="french", rule=FRENCH)

    response = post_json(
        marketer_client,
        PREVIEW,
        {"rule": {"all": [FRENCH, SUBSCRIBED]}, "segment_id": segment.pk},
    )

    diff = response.json()["diff"]
    assert (diff["unchanged"], diff["entering"], diff["leaving"]) == (False, 0, 1)
    assert diff["leaving_sample"] == [
        {
            "id": people["bo"].pk,
            "email": "bo@example.com",
            "name": "Pat",
            "country": "FR",
        }
    ]


def test_a_bad_rule_gets_a_400_naming_each_node(marketer_client, people):
    rule = {"all": [FRENCH, {"any": [{"consent": "maybe"}, {"metric": "height"}]}]}

    response = post_json(marketer_client, PREVIEW, {"rule": rule})

    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            {
                "path": "rule.all[1].any[0]",
                "message": (
                    "'consent' must be one of "
                    "subscribed, unsubscribed, cleaned, not_subscribed"
                ),
            },
            {
                "path": "rule.all[1].any[1]",
                "message": (
                    "unknown metric 'height': use average_order_value, "
                    "engagement_score, favourite_category, first_order_at, "
                    "last_clicked_at, last_opened_at, last_order_at, last_seen_at, "
                    "lifetime_value, order_count"
                ),
            },
        ]
    }


def test_a_missing_rule_and_an_unknown_segment_are_refused(marketer_client):
    missing = post_json(marketer_client, PREVIEW, {})
    unknown = post_json(marketer_client, PREVIEW, {"rule": FRENCH, "segment_id": 999})

    assert missing.status_code == 400
    assert missing.json() == {
        "errors": [{"path": "rule", "message": "This field is required."}]
    }
    assert unknown.status_code == 400
    assert unknown.json()["errors"][0]["path"] == "segment_id"


def test_the_api_refuses_non_staff_and_anonymous_visitors(
    client, outsider_client, people
):
    as_outsider = post_json(outsider_client, PREVIEW, {"rule": FRENCH})
    client.logout()
    as_anonymous = post_json(client, EXPLAIN, {"rule": FRENCH, "profile": "1"})

    assert as_outsider.status_code == 403
    assert "matched" not in as_outsider.json()
    assert as_anonymous.status_code == 403
    assert "in" not in as_anonymous.json()


def test_explain_says_which_nodes_held_and_failed(marketer_client, people):
    rule = {"all": [FRENCH, SUBSCRIBED]}

    response = post_json(
        marketer_client, EXPLAIN, {"rule": rule, "profile": "BO@example.com"}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["in"] is False
    assert body["profile"] == {
        "id": people["bo"].pk,
        "email": "bo@example.com",
        "name": "Pat",
    }
    assert [(n["path"], n["held"]) for n in body["nodes"]] == [
        ("rule", False),
        ("rule.all[0]", True),
        ("rule.all[1]", False),
    ]
    assert body["summary"] == "Out because: subscription is subscribed (failed)"


def test_explain_finds_a_profile_by_id_and_says_when_there_is_none(
    marketer_client, people
):
    by_id = post_json(
        marketer_client, EXPLAIN, {"rule": FRENCH, "profile": str(people["ana"].pk)}
    )
    nobody = post_json(
        marketer_client, EXPLAIN, {"rule": FRENCH, "profile": "zed@example.com"}
    )

    assert by_id.json()["in"] is True
    assert nobody.status_code == 404
    assert nobody.json()["errors"][0]["path"] == "profile"


def test_explain_finds_a_profile_by_the_punycode_form_of_its_address(
    marketer_client, people
):
    kai = ProfileFactory(email="kai@bücher.example.com", country_code="FR")

    response = post_json(
        marketer_client,
        EXPLAIN,
        {"rule": FRENCH, "profile": "Kai@xn--bcher-kva.example.com"},
    )

    assert response.status_code == 200
    assert response.json()["profile"]["id"] == kai.pk
    assert response.json()["in"] is True


def test_explain_finds_a_profile_by_its_user_id(marketer_client, people):
    kai = ProfileFactory(email="kai@example.com", country_code="DE")
    ProfileIdentity.objects.create(
        profile=kai, kind=IdentityKind.USER_ID, value="usr_1001"
    )

    response = post_json(
        marketer_client, EXPLAIN, {"rule": FRENCH, "profile": "usr_1001"}
    )

    assert response.status_code == 200
    assert response.json()["profile"]["id"] == kai.pk
    assert response.json()["in"] is False


def test_explain_refuses_a_bad_rule_with_its_path(marketer_client, people):
    response = post_json(
        marketer_client,
        EXPLAIN,
        {"rule": {"any": [{"suppressed": "yes"}]}, "profile": "ana@example.com"},
    )

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"path": "rule.any[0]", "message": "'suppressed' must be true or false"}
    ]


# Pages ---------------------------------------------------------------------


def test_the_list_shows_each_segment_with_its_size(marketer_client, people):
    segment = SegmentFactory(name="French", slug="french", rule=FRENCH)

    response = marketer_client.get(reverse("segment_list"))

    page = response.content.decode()
    assert response.status_code == 200
    assert f'href="/segments/{segment.pk}/"' in page
    assert '<span data-segment="french">3</span>' in page


def test_the_pages_send_anonymous_visitors_to_sign_in_and_refuse_outsiders(
    client, outsider_client
):
    segment = SegmentFactory()

    refused = outsider_client.get(reverse("segment_edit", args=[segment.pk]))
    client.logout()
    anonymous = client.get(reverse("segment_list"))

    assert refused.status_code == 403
    assert anonymous.status_code == 302
    assert anonymous["Location"] == "/accounts/login/?next=/segments/"


def test_a_marketer_creates_a_segment(marketer_client):
    response = marketer_client.post(
        reverse("segment_new"),
        {
            "name": "French readers",
            "slug": "",
            "description": "In France",
            "rule": json.dumps({"all": [FRENCH]}),
        },
    )

    segment = Segment.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/segments/{segment.pk}/"
    assert (segment.slug, segment.description) == ("french-readers", "In France")
    assert segment.rule == {"all": [FRENCH]}
    assert segment.dependencies == ["field:country_code"]


def test_a_new_segment_cannot_take_a_slug_in_use(marketer_client):
    SegmentFactory(slug="french", rule=FRENCH)

    response = marketer_client.post(
        reverse("segment_new"),
        {"name": "French", "slug": "", "rule": json.dumps(SUBSCRIBED)},
    )

    assert response.status_code == 400
    assert "The slug &#x27;french&#x27; is already used." in response.content.decode()
    assert Segment.objects.get().rule == FRENCH


def test_a_name_with_no_latin_letters_asks_for_a_slug_saying_which(marketer_client):
    response = marketer_client.post(
        reverse("segment_new"),
        {"name": "日本", "slug": "", "rule": json.dumps(SUBSCRIBED)},
    )

    assert response.status_code == 400
    assert (
        "Give a slug (letters a to z, digits and hyphens): the name has none of "
        "those to make one from."
    ) in response.content.decode()
    assert not Segment.objects.exists()


def test_an_invalid_rule_is_shown_next_to_its_node_and_nothing_is_saved(
    marketer_client,
):
    segment = SegmentFactory(name="French", slug="french", rule=FRENCH)
    bad = {"all": [FRENCH, {"consent": "maybe"}]}

    response = marketer_client.post(
        reverse("segment_edit", args=[segment.pk]),
        {"name": "Renamed", "description": "", "rule": json.dumps(bad)},
    )

    page = response.content.decode()
    assert response.status_code == 400
    assert "<code>rule.all[1]</code>: &#x27;consent&#x27; must be one of" in page
    # The same errors go to the editor, which marks the node.
    assert '"path": "rule.all[1]"' in page
    segment.refresh_from_db()
    assert (segment.name, segment.rule, segment.version) == ("French", FRENCH, 1)


def test_text_that_is_not_json_is_refused(marketer_client):
    segment = SegmentFactory(slug="french", rule=FRENCH)

    response = marketer_client.post(
        reverse("segment_edit", args=[segment.pk]),
        {"name": "French", "rule": "{all: ["},
    )

    assert response.status_code == 400
    assert "This is not valid JSON" in response.content.decode()
    segment.refresh_from_db()
    assert segment.rule == FRENCH


def test_editing_saves_the_rule_under_the_same_slug(marketer_client):
    segment = SegmentFactory(name="French", slug="french", rule=FRENCH)
    rule = {"all": [FRENCH, SUBSCRIBED]}

    response = marketer_client.post(
        reverse("segment_edit", args=[segment.pk]),
        {"name": "French subscribers", "slug": "ignored", "rule": json.dumps(rule)},
    )

    assert response.status_code == 302
    segment.refresh_from_db()
    assert (segment.slug, segment.name, segment.version) == (
        "french",
        "French subscribers",
        2,
    )
    assert segment.rule == rule
    assert Segment.objects.count() == 1


def test_the_edit_page_carries_the_rule_and_the_editor_vocabulary(marketer_client):
    SegmentFactory(name="Other", slug="other")
    segment = SegmentFactory(name="French", slug="french", rule=FRENCH)

    response = marketer_client.get(reverse("segment_edit", args=[segment.pk]))

    vocabulary = response.context["vocabulary"]
    assert response.status_code == 200
    assert vocabulary["segments"] == [{"slug": "other", "name": "Other"}]
    assert vocabulary["continents"][:2] == ["Africa", "Asia"]
    assert f'data-segment-id="{segment.pk}"' in response.content.decode()


@pytest.mark.django_db
def test_the_edit_page_shows_the_size_over_time_and_who_moved(client, marketer):
    from django.utils import timezone

    from profiles.models import Profile
    from segments.membership import segment_refresh

    Profile.objects.create(email="fr@example.com", country_code="FR")
    segment = segment_save(
        name="French", rule={"attribute": "country_code", "op": "eq", "value": "FR"}
    )
    segment_refresh(segment_id=segment.pk, now=timezone.now())
    client.force_login(marketer)

    response = client.get(f"/segments/{segment.pk}/")

    assert response.status_code == 200
    assert response.context["history"]["sizes"][-1]["size"] == 1
    assert response.context["history"]["changes"][0]["email"] == "fr@example.com"
    assert b"Size over the last 30 days" in response.content


def test_days_before_the_segment_existed_have_no_size_and_anonymous_profiles_a_name(
    client, marketer
):
    from datetime import timedelta

    from django.utils import timezone

    from profiles.models import Profile
    from segments.membership import segment_refresh

    # Given a segment created two days ago whose one member has no email address
    anonymous = Profile.objects.create(email=None, country_code="FR")
    segment = segment_save(
        name="French", rule={"attribute": "country_code", "op": "eq", "value": "FR"}
    )
    Segment.objects.filter(pk=segment.pk).update(
        created_at=timezone.now() - timedelta(days=2)
    )
    segment_refresh(segment_id=segment.pk, now=timezone.now())
    client.force_login(marketer)

    # When the marketer opens it
    response = client.get(f"/segments/{segment.pk}/")

    # Then the 27 days before it existed are blank, not 0, and the table is a week
    sizes = [row["size"] for row in response.context["history"]["sizes"]]
    assert sizes == [None] * 27 + [0, 0, 1]
    last_days = [row["size"] for row in response.context["history"]["last_days"]]
    assert last_days == [1, 0, 0, None, None, None, None]
    page = response.content.decode()
    assert "<h3>Last 7 days</h3>" in page
    assert page.count('<td data-size class="muted"') == 4
    assert f">Profile {anonymous.pk}</a></td>" in page


@pytest.mark.django_db
def test_the_builder_offers_the_declared_traits_with_their_ops(marketer_client):
    from profiles.models import TraitDefinition, TraitType

    TraitDefinition.objects.create(name="vip", type=TraitType.BOOLEAN)
    TraitDefinition.objects.create(
        name="orders", type=TraitType.NUMBER, minimum=0, maximum=500
    )

    response = marketer_client.get(reverse("segment_new"))

    traits = response.context["vocabulary"]["traits"]
    assert [(t["name"], t["type"], t["words"]) for t in traits] == [
        ("orders", "number", "a number"),
        ("vip", "boolean", "true or false"),
    ]
    assert (traits[0]["minimum"], traits[0]["maximum"]) == (0, 500)
    assert "in" in traits[0]["ops"]
    assert "contains" not in traits[0]["ops"]
    assert traits[1]["ops"] == ["eq", "exists", "is_empty", "neq"]
