from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine

from campaigns import demo
from campaigns.rendering import (
    EMPTY_LIST_KEYS,
    EMPTY_TEXT_KEYS,
    PROFILE_KEYS,
    ZERO_NUMBER_KEYS,
    TemplateError,
    email_render,
    profile_context,
    template_check,
    template_review,
)
from profiles.models import ProfileTag, TraitDefinition, TraitType
from profiles.traits import TraitRule
from tests.factories import ProfileFactory

LOCATION_BLOCK = (
    "{% if profile.country_code == 'BR' %}Frete grátis"
    "{% elsif profile.continent == 'Europe' %}Free shipping to "
    "{{ profile.city | default: 'Europe' }}"
    "{% else %}We ship worldwide{% endif %}"
)


def render_html(html: str, profile_data: dict) -> str:
    return email_render(
        subject="s", html=html, text="", context={"profile": profile_data}
    ).html


@pytest.mark.parametrize(
    ("profile_data", "expected"),
    [
        ({"country_code": "BR"}, "Frete grátis"),
        (
            {"country_code": "FR", "continent": "Europe", "city": "Paris"},
            "Free shipping to Paris",
        ),
        ({"country_code": "DE", "continent": "Europe"}, "Free shipping to Europe"),
        ({}, "We ship worldwide"),
    ],
)
def test_the_location_block_fits_where_the_profile_lives(profile_data, expected):
    assert render_html(LOCATION_BLOCK, profile_data) == expected


def test_missing_values_fall_back_and_never_break_the_layout():
    rendered = email_render(
        subject="{{ profile.first_name | default: 'Hello' }}, sale",
        html="<p>Hi {{ profile.first_name | default: 'there' }}{{ profile.no.such.thing }}</p>",
        text="",
        context={"profile": {}},
    )

    assert rendered.subject == "Hello, sale"
    assert rendered.html == "<p>Hi there</p>"


def test_profile_values_are_escaped_in_html_but_not_in_the_subject():
    context = {"profile": {"first_name": 'Robert "Bob" <b>'}}
    rendered = email_render(
        subject="{{ profile.first_name }}",
        html="{{ profile.first_name }}",
        text="",
        context=context,
    )

    assert rendered.subject == 'Robert "Bob" <b>'
    assert rendered.html == "Robert &#34;Bob&#34; &lt;b&gt;"


def test_runaway_loops_are_stopped():
    with pytest.raises(TemplateError, match="loop iteration limit"):
        render_html("{% for i in (1..100000) %}x{% endfor %}", {})


def test_syntax_errors_name_the_part_and_line():
    problems = template_check(subject="ok", html="<p>\n{% if %}", text="fine")

    assert problems == ["html, line 2: missing expression"]


def test_a_block_never_closed_is_named_at_the_line_that_opens_it():
    html = "<p>\n{% if a %}{% raw %}{% if %}{% endraw %}{% endif %}\n{% unless b %}x"

    problems = template_check(subject="ok", html=html, text="")

    # Liquid itself only says "expected tag endunless" at the end of the text.
    assert problems == ["html, line 3: the 'unless' tag opened here is never closed"]


@pytest.mark.django_db
def test_templates_see_plain_data_only():
    profile = ProfileFactory(
        email="chloe@example.org",
        first_name="Chloé",
        country_code="FR",
        lifetime_value="12.50",
        traits={"member_rating": 2},
    )
    ProfileTag.objects.create(profile=profile, name="Newsletter")
    profile.refresh_from_db()

    context = profile_context(profile)

    assert context["continent"] == "Europe"
    assert context["lifetime_value"] == 12.5
    assert context["tags"] == ["Newsletter"]
    assert context["member_rating"] == 2
    # Data, never a model or a queryset a template could walk from: the computed
    # times are plain datetimes, empty until the person has done the thing.
    assert all(
        v is None or isinstance(v, str | int | float | bool | list | dict | datetime)
        for v in context.values()
    )


@pytest.mark.django_db
def test_a_declared_trait_is_given_to_templates_as_its_type():
    # Imported as text before "points" and "vip" were declared.
    profile = ProfileFactory(
        traits={"points": "7000", "vip": "yes", "plan": "PRO", "note": "7000"}
    )
    TraitDefinition.objects.create(name="points", type=TraitType.NUMBER)
    TraitDefinition.objects.create(name="vip", type=TraitType.BOOLEAN)
    TraitDefinition.objects.create(
        name="plan", type=TraitType.TEXT, allowed_values=["Free", "Pro"]
    )
    html = (
        "{% if profile.points > 100 %}gold{% endif %} "
        "{% if profile.vip %}vip{% endif %} {{ profile.plan }} {{ profile.note }}"
    )

    context = profile_context(profile)

    assert (context["points"], context["vip"], context["plan"]) == (7000, True, "Pro")
    assert context["note"] == "7000"  # undeclared: as stored
    rendered = email_render(
        subject="s", html=html, text="", context={"profile": context}
    )
    assert rendered.html == "gold vip Pro 7000"


@pytest.mark.django_db
def test_a_stored_value_breaking_its_rule_is_given_typed_or_empty():
    profile = ProfileFactory(traits={"cap": "7000", "vip": "x", "tier": "lots"})
    TraitDefinition.objects.create(name="cap", type=TraitType.NUMBER, maximum=5000)
    TraitDefinition.objects.create(name="vip", type=TraitType.BOOLEAN)
    TraitDefinition.objects.create(name="tier", type=TraitType.NUMBER)
    html = "{% if profile.cap > 100 %}big{% endif %}{% if profile.vip %}vip{% endif %}"

    context = profile_context(profile)

    # Above its maximum, still the number; none of its type, empty.
    assert (context["cap"], context["vip"], context["tier"]) == (7000, None, None)
    rendered = email_render(
        subject="s", html=html, text="", context={"profile": context}
    )
    assert rendered.html == "big"


COMPUTED_TRAITS_HTML = (
    "You like {{ profile.favourite_category | default: 'gear' }}, "
    "{{ profile.order_count }} orders of {{ profile.average_order_value }} on average"
    "{% if profile.last_order_at %}, the last on "
    "{{ profile.last_order_at | date: '%b %d, %Y' }}{% endif %}; "
    "score {{ profile.engagement_score }}"
    "{% if profile.last_clicked_at == nil %}, no clicks yet{% endif %}."
)


@pytest.mark.django_db
def test_templates_read_the_computed_traits():
    ben = ProfileFactory(
        email="ben@example.net",
        favourite_category="Accessories",
        order_count=2,
        lifetime_value="70.00",
        average_order_value="35.00",
        last_order_at=datetime(2025, 3, 2, 18, 5, tzinfo=UTC),
        engagement_score=37,
    )
    ben.refresh_from_db()
    nobody = ProfileFactory(email="new@example.net")

    assert render_html(COMPUTED_TRAITS_HTML, profile_context(ben)) == (
        "You like Accessories, 2 orders of 35.0 on average, the last on "
        "Mar 02, 2025; score 37, no clicks yet."
    )
    assert render_html(COMPUTED_TRAITS_HTML, profile_context(nobody)) == (
        "You like gear, 0 orders of  on average; score 0, no clicks yet."
    )
    review = template_review(subject="Hi", html=COMPUTED_TRAITS_HTML)
    assert (review.errors, review.warnings) == ([], [])


def test_the_review_names_what_no_recipient_has_with_its_line():
    review = template_review(
        subject="Hi {{ profile.frist_name }}",
        html=(
            "<p>{{ first_name }}</p>\n{{ profile.tier }} {{ campaign.title }}"
            "{% for t in profile.tags %}{{ t }}{% endfor %}{{ unsubscribe_url }}"
        ),
        text="{{ profile.shoe_size | default: 42 }}",
        traits=["tier"],
    )

    assert review.errors == []
    assert review.warnings == [
        "subject, line 1: profile.frist_name is neither a profile field nor a "
        "declared trait: check the spelling, or declare the trait on the trait "
        "schema page",
        "html, line 1: 'first_name' is not a name templates can read; did you mean "
        "profile.first_name?",
        "html, line 2: campaign.title does not exist: use campaign.name or "
        "campaign.slug",
        "text, line 1: profile.shoe_size is neither a profile field nor a declared "
        "trait: check the spelling, or declare the trait on the trait schema page",
    ]


def test_a_template_that_does_not_parse_has_errors_and_no_name_review():
    review = template_review(subject="{{ profile.nope }}", html="{% if %}")

    assert [error.split(":")[0] for error in review.errors] == ["html, line 1"]
    assert len(review.warnings) == 1


def test_the_demo_template_reads_only_names_every_recipient_has():
    parts = {key: demo.TEMPLATE[key] for key in ("subject", "html", "text")}

    assert template_review(**parts) == template_review(**parts, traits=[])
    assert template_review(**parts).warnings == []
    assert template_review(**parts).errors == []


@pytest.mark.django_db
def test_the_review_knows_every_key_a_profile_gives_templates():
    profile = ProfileFactory(email="pat@example.com", traits={})

    assert set(profile_context(profile)) == PROFILE_KEYS


def test_an_unknown_filter_is_an_error_with_its_line():
    review = template_review(
        subject="Hi",
        html="<p>\n{{ profile.first_name | nosuchfilter }}</p>",
        text="{{ profile.first_name | upcase | default: 'you' }}",
    )

    assert review.errors == ["html, line 2: there is no filter 'nosuchfilter'"]


def test_a_template_that_includes_another_is_an_error():
    review = template_review(subject="Hi", html='<p>{% include "footer" %}</p>')

    assert review.errors == [
        "html: a template cannot include or render another one (footer)"
    ]


@pytest.mark.parametrize(
    ("html", "cause"),
    [
        ("{{ profile.order_count | divided_by: 0 }}", "can't divide by 0"),
        ("{% for i in (1..20000) %}x{% endfor %}", "loop iteration limit reached"),
    ],
)
def test_a_template_that_fails_for_a_sample_recipient_is_warned_about(html, cause):
    review = template_review(subject="Hi", html=html)

    assert review.errors == []
    (warning,) = review.warnings
    assert warning.startswith("html, line 1: it fails for a sample recipient (")
    assert cause in warning


@pytest.mark.parametrize(
    ("now", "birthday", "expected"),
    [
        ("2025-03-14T12:00:00Z", "--07-14", "Happy birthday on July 14, 2025"),
        # The 29th of February is the 28th outside a leap year, as in segments.
        ("2025-03-14T12:00:00Z", "--02-29", "Happy birthday on February 28, 2025"),
        ("2028-01-02T12:00:00Z", "--02-29", "Happy birthday on February 29, 2028"),
        ("2025-03-14T12:00:00Z", "1990-07-14", "Happy birthday on July 14, 1990"),
        # Not a day of any year: shown as written, as Liquid shows what it cannot read.
        ("2025-03-14T12:00:00Z", "--13-40", "Happy birthday on --13-40"),
    ],
)
def test_the_date_filter_reads_a_birthday_kept_without_its_year(
    now, birthday, expected
):
    with time_machine.travel(now, tick=False):
        rendered = email_render(
            subject='Happy birthday on {{ profile.birthday | date: "%B %d, %Y" }}',
            html='<p>{{ profile.birthday | date: "%d/%m" }}</p>',
            text="",
            context={"profile": {"birthday": birthday}},
        )

    assert rendered.subject == expected


def test_a_bare_test_of_a_field_that_is_never_nil_is_warned_about():
    # given conditions on fields that hold "", 0 or [] when there is nothing to say,
    # beside ones that are nil then or already compare
    review = template_review(
        subject="{% if profile.first_name %}Hi {{ profile.first_name }}{% endif %}",
        html=(
            "<p>{% if profile.city != blank %}{{ profile.city }}{% endif %}</p>\n"
            "{%- unless profile.region and profile.tier -%}x{%- endunless -%}\n"
            "{% if profile.last_order_at or profile.order_count %}y{% endif %}"
            "{% if profile.order_count > 0 %}z{% endif %}\n"
            "{% if profile['city'] != nil %}{% elsif profile.tags %}{% endif %}"
            "{% if profile.city %}again{% endif %}"
        ),
        traits=["tier"],
    )

    # then each bare test of such a field is named once a line, with the test to
    # write instead
    assert review.errors == []
    assert review.warnings == [
        "subject, line 1: in this 'if', profile.first_name counts as set for every "
        "recipient, since Liquid counts empty text as true: test "
        "profile.first_name != blank instead",
        "html, line 2: in this 'unless', profile.region counts as set for every "
        "recipient, since Liquid counts empty text as true: test profile.region "
        "!= blank instead",
        "html, line 3: in this 'if', profile.order_count counts as set for every "
        "recipient, since Liquid counts 0 as true: test profile.order_count > 0 "
        "instead",
        "html, line 4: in this 'if', profile.city counts as set for every "
        "recipient, since Liquid counts empty text as true: test profile.city != "
        "blank instead",
        "html, line 4: in this 'elsif', profile.tags counts as set for every "
        "recipient, since Liquid counts an empty list as true: test "
        "profile.tags.size > 0 instead",
    ]


def test_conditions_in_text_comments_and_values_are_not_warned_about():
    review = template_review(
        subject="Hi",
        html=(
            "{% raw %}{% if profile.city %}{% endraw %}"
            "{% comment %}{% if profile.city %}{% endcomment %}"
            "{% # if profile.city %}"
            '{{ "{% if profile.city %}" }}'
            '{% if profile.country_code == " or profile.city or " %}x{% endif %}'
            "{% if profile.email %}{{ profile.email }}{% endif %}"
        ),
    )

    assert review.warnings == []


@pytest.mark.parametrize(
    ("city", "shown"), [("", "Hi there"), ("Lyon", "Hi from Lyon")]
)
def test_the_test_the_warning_suggests_tells_an_empty_field_from_a_set_one(city, shown):
    rendered = email_render(
        subject=(
            "{% if profile.city != blank %}Hi from {{ profile.city }}"
            "{% else %}Hi there{% endif %}"
        ),
        html="",
        text="",
        context={"profile": {"city": city}},
    )

    assert rendered.subject == shown


@pytest.mark.django_db
def test_the_keys_warned_about_are_those_a_profile_with_nothing_has_as_0_or_empty():
    profile = ProfileFactory(
        email=None, first_name="", last_name="", city="", region="", timezone=""
    )
    profile.country_code = ""

    context = profile_context(profile)

    never_nil = {key for key, value in context.items() if value in ("", 0, [])}
    # Every recipient has an address: a test of it is no mistake.
    assert never_nil - {"email"} == EMPTY_TEXT_KEYS | ZERO_NUMBER_KEYS | EMPTY_LIST_KEYS


def test_the_review_reads_liquid_tags_sizes_and_comparisons_with_nil():
    review = template_review(
        subject="Hi",
        html=(
            "{% liquid\n  if profile.city\n    echo profile.city\n  endif %}\n"
            "{% if profile.tags.size %}t{% endif %}\n"
            "{% if profile.city == nil %}a{% elsif nil <> profile.region %}b{% endif %}\n"
            "{% doc %}{% if profile.city %}{% enddoc %}"
            "{% if profile.tags.size > 0 or profile.order_count == 0 %}ok{% endif %}"
        ),
    )

    assert review.errors == []
    assert [w.split(": test ")[1] for w in review.warnings] == [
        "profile.city != blank instead",
        "profile.tags.size > 0 instead",
        "profile.city == blank instead",
        "profile.region != blank instead",
    ]
    assert review.warnings[2] == (
        "html, line 6: in this 'if', profile.city == nil is false for every "
        "recipient, since it is empty text when there is nothing: test "
        "profile.city == blank instead"
    )
    assert review.warnings[0].startswith("html, line 2: in this 'if', ")


def test_a_time_nobody_has_yet_is_nothing_through_date_not_a_failed_message():
    # given a template that formats a computed time outside any if
    html = '<p>Last order: {{ profile.last_order_at | date: "%b %d" }}</p>'

    # when it is rendered for someone with no order, and reviewed
    rendered = email_render(
        subject="Hi", html=html, text="", context={"profile": {"last_order_at": None}}
    )

    # then it shows nothing there, as a missing value does, and is no problem
    assert rendered.html == "<p>Last order: </p>"
    assert template_review(subject="Hi", html=html).warnings == []


def test_a_template_that_fails_for_someone_with_no_orders_yet_is_warned_about():
    review = template_review(
        subject="Hi",
        html="Average: {{ profile.lifetime_value | divided_by: profile.order_count }}",
    )

    (warning,) = review.warnings
    assert warning.startswith(
        "html, line 1: it fails for a recipient with no name or orders yet ("
    )


DECLARED = {
    "score": TraitRule(name="score", type=TraitType.NUMBER),
    "vip": TraitRule(name="vip", type=TraitType.BOOLEAN),
    "plan": TraitRule(name="plan", type=TraitType.TEXT, allowed_values=("Free", "Pro")),
    "joined": TraitRule(name="joined", type=TraitType.DATE),
}


def test_a_declared_trait_compared_with_a_value_of_another_type_is_warned_about():
    # given conditions that compare declared traits with text, a number or true
    review = template_review(
        subject="Hi",
        html=(
            '{% if profile.score > "40" %}a{% endif %}\n'
            '{% if profile.vip == "true" %}b{% endif %}\n'
            "{% unless profile['score'] != true %}c{% endunless %}\n"
            '{% if profile.order_count > 0 and "2024-01-01" < profile.joined '
            "or profile.joined > 2024 %}d{% endif %}"
        ),
        traits=DECLARED,
    )

    # then each is named with its line, the trait, what it does for everyone and
    # the test to write instead, where there is one
    assert review.errors == []
    assert review.warnings == [
        "html, line 1: in this 'if', profile.score > \"40\" fails for every "
        "recipient who has the trait score, each then skipped when the campaign "
        "sends, since the declared trait score is a number, not text: test "
        "profile.score > 40 instead",
        "html, line 2: in this 'if', profile.vip == \"true\" is false for every "
        "recipient, since the declared trait vip is true or false, not text: test "
        "profile.vip == true instead",
        "html, line 3: in this 'unless', profile.score != true is true for every "
        "recipient, since the declared trait score is a number, not true or false",
        "html, line 4: in this 'if', profile.joined > 2024 fails for every "
        "recipient who has the trait joined, each then skipped when the campaign "
        "sends, since the declared trait joined is a date, which templates read as "
        "text (YYYY-MM-DD), not a number",
    ]


def test_a_declared_trait_compared_with_a_value_it_never_holds_is_warned_about():
    review = template_review(
        subject='{% if profile.plan == "pro" %}Pro{% endif %}',
        html=(
            "{% if profile.plan != 'Gold' %}a{% endif %}\n"
            '{% if profile.joined == "14/03/2025" %}b{% endif %}\n'
            '{% if profile.plan == "" %}c{% endif %}'
        ),
        traits=DECLARED,
    )

    assert review.warnings == [
        "subject, line 1: in this 'if', profile.plan == \"pro\" is false for every "
        'recipient, since the declared trait plan keeps "pro" as "Pro": test '
        'profile.plan == "Pro" instead',
        "html, line 1: in this 'if', profile.plan != 'Gold' is true for every "
        'value the declared trait plan allows ("Free", "Pro")',
        "html, line 2: in this 'if', profile.joined == \"14/03/2025\" is false for "
        "every recipient, since the declared trait joined is a date, which "
        'templates read as text (YYYY-MM-DD), and "14/03/2025" is not one',
        "html, line 3: in this 'if', profile.plan == \"\" is false for every value "
        'the declared trait plan allows ("Free", "Pro")',
    ]


BOUNDED = {
    "age": TraitRule(
        name="age", type=TraitType.NUMBER, minimum=Decimal(18), maximum=Decimal(120)
    ),
    "points": TraitRule(name="points", type=TraitType.NUMBER, minimum=Decimal(0)),
    "postcode": TraitRule(name="postcode", type=TraitType.TEXT, pattern=r"\d{5}"),
}


def test_a_declared_trait_compared_past_its_bounds_or_pattern_is_warned_about():
    review = template_review(
        subject='{% if profile.postcode == "SW1A 1AA" %}UK{% endif %}',
        html=(
            "{% if profile.age > 150 %}a{% endif %}\n"
            "{% if profile.age >= 18 %}b{% endif %}\n"
            "{% if 10 < profile.age %}c{% endif %}\n"
            "{% if profile.points < 0 %}d{% endif %}\n"
            "{% if profile.age == 12.5 %}e{% endif %}\n"
            "{% unless profile.postcode != '7501' %}f{% endunless %}"
        ),
        traits=BOUNDED,
    )

    assert review.warnings == [
        "subject, line 1: in this 'if', profile.postcode == \"SW1A 1AA\" is false "
        "for every value the declared trait postcode allows (each matches \\d{5})",
        "html, line 1: in this 'if', profile.age > 150 is false for every value the "
        "declared trait age allows (from 18 to 120)",
        "html, line 2: in this 'if', profile.age >= 18 is true for every value the "
        "declared trait age allows (from 18 to 120)",
        "html, line 3: in this 'if', 10 < profile.age is true for every value the "
        "declared trait age allows (from 18 to 120)",
        "html, line 4: in this 'if', profile.points < 0 is false for every value the "
        "declared trait points allows (at least 0)",
        "html, line 5: in this 'if', profile.age == 12.5 is false for every value the "
        "declared trait age allows (from 18 to 120)",
        "html, line 6: in this 'unless', profile.postcode != '7501' is true for every "
        "value the declared trait postcode allows (each matches \\d{5})",
    ]


def test_a_declared_trait_compared_within_its_bounds_and_pattern_is_not_warned_about():
    review = template_review(
        subject="Hi",
        html=(
            "{% if profile.age > 65 or profile.age <= 18 %}a{% endif %}"
            "{% if 100 > profile.points and profile.points > 0 %}b{% endif %}"
            '{% if profile.postcode == "75001" %}c{% endif %}'
        ),
        traits=BOUNDED,
    )

    assert (review.errors, review.warnings) == ([], [])


def test_declared_traits_compared_as_their_types_are_not_warned_about():
    review = template_review(
        subject="Hi",
        html=(
            "{% if profile.score > 40 and profile.plan == 'Pro' %}a{% endif %}"
            "{% if profile.vip %}b{% elsif profile.vip == true %}c{% endif %}"
            '{% if profile.joined >= "2025-01-01" or profile.plan != "Free" %}d'
            "{% endif %}{% if profile.score == nil or profile.vip > 0 %}e{% endif %}"
            "{% if profile.plan contains 'r' %}f{% endif %}"
        ),
        traits=DECLARED,
    )

    assert (review.errors, review.warnings) == ([], [])


def test_a_trait_not_declared_is_compared_as_before():
    html = '{% if profile.score > "40" or profile.vip == "true" %}a{% endif %}'

    # given by name only, the schema's types unknown, and then only vip declared
    by_name = template_review(subject="Hi", html=html, traits=["score", "vip"])
    vip_only = template_review(subject="Hi", html=html, traits={"vip": DECLARED["vip"]})

    assert by_name.warnings == []
    assert [warning.split(" is ")[0] for warning in vip_only.warnings] == [
        "html, line 1: profile.score",  # neither a field nor declared, as before
        "html, line 1: in this 'if', profile.vip == \"true\"",
    ]


def test_a_part_that_fails_for_one_allowed_value_is_warned_about_naming_it():
    # given parts that fail only for recipients on the Pro plan, or not vip
    review = template_review(
        subject="{% if profile.vip == false %}{{ 1 | divided_by: 0 }}{% endif %}",
        html='<p>\n{% if profile.plan == "Pro" %}{{ 1 | divided_by: 0 }}{% endif %}',
        traits=DECLARED,
    )

    # then the sample recipients carry each allowed value, and true and false
    assert review.warnings == [
        "subject, line 1: it fails for a sample recipient whose vip is false "
        "(divided_by: can't divide by 0); every recipient it fails for is skipped "
        "when the campaign sends",
        'html, line 2: it fails for a sample recipient whose plan is "Pro" '
        "(divided_by: can't divide by 0); every recipient it fails for is skipped "
        "when the campaign sends",
    ]


def test_a_declared_trait_compared_through_a_variable_is_warned_about():
    review = template_review(
        subject="Hi",
        html='{% assign least = "40" %}\n{% if profile.score > least %}a{% endif %}',
        traits=DECLARED,
    )

    assert review.warnings == [
        "html, line 2: it fails for a sample recipient whose score is 1 (text and "
        "a number cannot be compared with < or >); every recipient it fails for is "
        "skipped when the campaign sends"
    ]


def test_declared_traits_read_as_their_types_render_for_the_sample_recipients():
    traits = {
        **DECLARED,
        "seen": TraitRule(name="seen", type=TraitType.DATETIME),
        "rank": TraitRule(name="rank", type=TraitType.NUMBER, minimum=3, maximum=9),
    }
    review = template_review(
        subject="{{ profile.plan | upcase }} since {{ profile.joined | date: '%Y' }}",
        html=(
            "{{ profile.seen | date: '%b %d' }} {{ profile.rank | times: 2 }}"
            "{{ profile.score | plus: 1 }}{% if profile.vip != false %}v{% endif %}"
        ),
        traits=traits,
    )

    assert (review.errors, review.warnings) == ([], [])


def test_a_when_that_no_value_of_its_declared_trait_meets_is_warned_about():
    # given cases on declared traits, in tags and in a liquid tag, whose whens
    # name a value in another case, one not allowed, one of another type, and
    # values the traits hold
    review = template_review(
        subject="Hi",
        html=(
            "{% case profile.plan %}\n"
            '{% when "pro", "Free" %}a{% when "Gold" or "Pro" %}b{% endcase %}\n'
            "{% liquid\n  case profile['score']\n  when \"40\"\n    echo 1\n"
            "  when 40\n    echo 2\n  endcase %}"
        ),
        traits=DECLARED,
    )

    # then each when that is false for every recipient is named with its line
    assert review.warnings == [
        "html, line 2: in this 'when', profile.plan == \"pro\" is false for every "
        'recipient, since the declared trait plan keeps "pro" as "Pro": test '
        'profile.plan == "Pro" instead',
        "html, line 2: in this 'when', profile.plan == \"Gold\" is false for every "
        'value the declared trait plan allows ("Free", "Pro")',
        "html, line 5: in this 'when', profile.score == \"40\" is false for every "
        "recipient, since the declared trait score is a number, not text: test "
        "profile.score == 40 instead",
    ]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (
            'profile.order_count > "3"',
            'profile.order_count > "3" fails for every recipient, each then skipped '
            "when the campaign sends, since the profile's order_count is a number, "
            "not text: test profile.order_count > 3 instead",
        ),
        (
            'profile.lifetime_value == "100"',
            'profile.lifetime_value == "100" is false for every recipient, since the '
            "profile's lifetime_value is a number, not text: test "
            "profile.lifetime_value == 100 instead",
        ),
        (
            'profile.average_order_value >= "50"',
            'profile.average_order_value >= "50" fails for every recipient who has '
            "ordered, each then skipped when the campaign sends, since the "
            "profile's average_order_value is a number, not text: test "
            "profile.average_order_value >= 50 instead",
        ),
        (
            "profile.city == 3",
            "profile.city == 3 is false for every recipient, since the profile's "
            'city is text, not a number: test profile.city == "3" instead',
        ),
    ],
)
def test_a_profile_field_compared_with_a_value_of_another_type_is_warned_once(
    condition, expected
):
    # Walkthrough 22: the order count compared with "3" was warned of only as
    # Liquid's "'<' and '>' are not supported between 'Markup' and 'int'", with no
    # line, and compared for equality it was not warned of at all.
    html = f"<p>Hi</p>\n{{% if {condition} %}}VIP{{% endif %}}"

    review = template_review(subject="Hi", html=html)

    assert review.warnings == [f"html, line 2: in this 'if', {expected}"]


@pytest.mark.parametrize(
    "condition",
    [
        "profile.order_count > 3",
        "3 < profile.order_count",
        "profile.lifetime_value >= 100.5",
        'profile.first_name == "Ann"',
        'profile.country_code == "FR"',
        'profile.city contains "Ly"',
        'profile.email contains "@"',
        'profile.favourite_category == "Tents"',
    ],
)
def test_a_profile_field_compared_with_a_value_of_its_type_is_not_warned(condition):
    html = f"{{% if {condition} %}}x{{% endif %}}"

    assert template_review(subject="Hi", html=html).warnings == []
