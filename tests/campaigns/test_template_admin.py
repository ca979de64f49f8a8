"""Saving a template in the admin: refused when it does not parse, warned on names."""

import pytest
from django.urls import reverse

from campaigns.models import EmailTemplate
from profiles.models import TraitDefinition, TraitType

pytestmark = pytest.mark.django_db

ADD = "admin:campaigns_emailtemplate_add"


def post(admin_client, html: str):
    return admin_client.post(
        reverse(ADD),
        {"name": "Welcome", "subject": "Hi {{ profile.first_name }}", "html": html},
        follow=True,
    )


def test_a_template_that_does_not_parse_is_not_saved(admin_client):
    response = post(admin_client, "<p>{% if %}</p>")

    assert EmailTemplate.objects.count() == 0
    assert "html, line 1: missing expression" in response.content.decode()


def test_a_trait_no_one_declared_saves_with_a_warning(admin_client):
    response = post(admin_client, "<p>Your tier: {{ profile.tier }}</p>")

    assert EmailTemplate.objects.count() == 1
    page = response.content.decode()
    assert "profile.tier is neither a profile field nor a declared trait" in page


def test_a_declared_trait_saves_without_a_warning(admin_client):
    TraitDefinition.objects.create(name="tier", type=TraitType.TEXT)

    response = post(admin_client, "<p>Your tier: {{ profile.tier }}</p>")

    assert EmailTemplate.objects.count() == 1
    assert "neither a profile field" not in response.content.decode()


def test_a_template_with_an_unknown_filter_is_not_saved(admin_client):
    response = post(admin_client, "<p>{{ profile.first_name | nosuchfilter }}</p>")

    assert EmailTemplate.objects.count() == 0
    assert "there is no filter &#x27;nosuchfilter&#x27;" in response.content.decode()


def test_a_declared_trait_compared_as_another_type_saves_with_a_warning(admin_client):
    TraitDefinition.objects.create(name="score", type=TraitType.NUMBER)

    response = post(admin_client, '<p>{% if profile.score > "40" %}gold{% endif %}</p>')

    assert EmailTemplate.objects.count() == 1
    page = response.content.decode()
    assert (
        "Html, line 1: in this &#x27;if&#x27;, profile.score &gt; &quot;40&quot; "
        "fails for every recipient who has the trait score"
    ) in page
