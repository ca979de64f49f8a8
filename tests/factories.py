"""factory_boy factories for the models tests build on."""

import factory
from django.contrib.auth import get_user_model

from campaigns.models import Campaign, EmailTemplate
from profiles.models import Profile, SubscriptionStatus
from segments.models import Segment


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct-horse-battery")
    is_staff = True


class ProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Profile

    email = factory.Sequence(lambda n: f"person{n}@example.com")
    first_name = "Pat"
    subscription_status = SubscriptionStatus.SUBSCRIBED


class SegmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Segment

    name = factory.Sequence(lambda n: f"Segment {n}")
    slug = factory.Sequence(lambda n: f"segment-{n}")
    rule = {"all": []}


class EmailTemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = EmailTemplate

    name = factory.Sequence(lambda n: f"Template {n}")
    subject = "Hello {{ profile.first_name | default: 'there' }}"
    html = "<p>Hi {{ profile.first_name | default: 'there' }}</p>"


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    name = factory.Sequence(lambda n: f"Campaign {n}")
    slug = factory.Sequence(lambda n: f"campaign-{n}")
    template = factory.SubFactory(EmailTemplateFactory)
    segment = factory.SubFactory(SegmentFactory)
