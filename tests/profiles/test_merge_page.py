"""A marketer merges two profiles of one person by hand, from the profile page."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.template import Context, Template
from django.urls import reverse

from profiles.models import (
    Event,
    IdentityKind,
    Profile,
    ProfileIdentity,
    ProfileMerge,
    ProfileTag,
)
from profiles.signals import profiles_changed
from profiles.views import people
from segments.models import SegmentMembership
from segments.services import segment_save
from tests.factories import ProfileFactory, UserFactory

pytestmark = pytest.mark.django_db

WHEN = datetime(2025, 3, 14, 15, 0, tzinfo=UTC)
VIP_RULE = {"attribute": "tags", "op": "contains", "value": "VIP"}


@pytest.fixture
def heard():
    """Collect what profiles_changed says, as (profile_ids, changed)."""
    said: list[tuple[list[int] | None, set[str] | None]] = []

    def listen(sender, *, profile_ids, changed, **kwargs):
        said.append((profile_ids, changed))

    profiles_changed.connect(listen)
    yield said
    profiles_changed.disconnect(listen)


def events(profile: Profile, count: int) -> None:
    for n in range(count):
        Event.objects.create(
            message_id=f"msg-{profile.pk}-{n}",
            type="track",
            event="Product Viewed",
            profile=profile,
            timestamp=WHEN + timedelta(minutes=n),
            received_at=WHEN + timedelta(minutes=n),
        )


def user_id(profile: Profile, value: str) -> None:
    ProfileIdentity.objects.create(
        profile=profile, kind=IdentityKind.USER_ID, value=value
    )


def shown_time(profile: Profile) -> str:
    """Return a profile's creation time as the page writes it."""
    return Template("{{ when }}").render(Context({"when": profile.created_at}))


def merge_url(profile: Profile) -> str:
    return reverse("profile_merge", kwargs={"pk": profile.pk})


def rows(page: str) -> list[list[str]]:
    """Return the text of each cell of the confirmation's table, row by row."""
    table = re.search(r'<table class="merge">(.*?)</table>', page, re.S).group(1)
    found = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S):
        texts = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        found += [[" ".join(re.sub(r"<[^>]+>", " ", t).split()) for t in texts]]
    return [row for row in found if row]


def error_of(response) -> str:
    found = re.search(
        r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', response.text, re.S
    )
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


def nothing_merged(*profiles: Profile) -> bool:
    still_there = Profile.objects.filter(pk__in=[p.pk for p in profiles]).count()
    return still_there == len(profiles) and not ProfileMerge.objects.exists()


# Who may merge ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_stranger_is_sent_to_sign_in_and_nothing_is_merged(client, method):
    ana = ProfileFactory(email="ana@example.com")
    anonymous = Profile.objects.create()
    url = merge_url(ana)

    response = getattr(client, method)(url, {"other": str(anonymous.pk)})

    assert response.status_code == 302
    assert response.url.startswith(f"{reverse('login')}?next={url}")
    assert nothing_merged(ana, anonymous)


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_signed_in_user_who_is_not_staff_is_refused_and_nothing_is_merged(
    client, method
):
    client.force_login(UserFactory(username="outsider", is_staff=False))
    ana = ProfileFactory(email="ana@example.com")
    anonymous = Profile.objects.create()

    response = getattr(client, method)(merge_url(ana), {"other": str(anonymous.pk)})

    assert response.status_code == 403
    assert nothing_merged(ana, anonymous)


# Choosing and confirming -----------------------------------------------------------


def test_the_profile_page_offers_the_merge_form(signed_in):
    ana = ProfileFactory(email="ana@example.com")

    response = signed_in.get(reverse("profile_detail", kwargs={"pk": ana.pk}))

    assert "Merge another profile into this one" in response.text
    assert f'action="{merge_url(ana)}"' in response.text
    assert 'name="other"' in response.text
    assert (
        "Its profile id (42 or #42), email address, userId or anonymousId."
        in response.text
    )


def test_the_confirmation_names_both_profiles_their_events_and_the_one_kept(
    signed_in,
):
    ana = ProfileFactory(email="ana@example.com", first_name="Ana")
    anonymous = Profile.objects.create(first_name="Ann")
    user_id(anonymous, "usr_1001")
    events(ana, 1)
    events(anonymous, 3)

    response = signed_in.get(merge_url(ana), {"other": str(anonymous.pk)})

    assert response.status_code == 200
    assert rows(response.text) == [
        ["kept", f"#{ana.pk}", "ana@example.com", "Ana", "1", "—", shown_time(ana)],
        [
            "merged into it",
            f"#{anonymous.pk}",
            "no email address",
            "Ann",
            "3",
            "usr_1001",
            shown_time(anonymous),
        ],
    ]
    assert (
        f"Profile #{ana.pk} (ana@example.com) is kept, because it has an email address."
    ) in response.text
    assert (
        f'<input type="hidden" name="other" value="#{anonymous.pk}">' in response.text
    )
    assert "data-merge-confirm" in response.text
    assert nothing_merged(ana, anonymous)


@pytest.mark.parametrize("written", ["ANA@Example.com", "  ana@example.com ", "#{pk}"])
def test_the_other_profile_may_be_named_by_email_or_id(signed_in, written):
    ana = ProfileFactory(email="ana@example.com")
    anonymous = Profile.objects.create()

    response = signed_in.get(merge_url(anonymous), {"other": written.format(pk=ana.pk)})

    assert f"Profile #{ana.pk} (ana@example.com) is kept" in response.text


@pytest.mark.parametrize(
    ("kind", "value"),
    [(IdentityKind.USER_ID, "usr_1001"), (IdentityKind.ANONYMOUS_ID, "anon-qa")],
)
def test_the_other_profile_may_be_named_by_user_id_or_anonymous_id(
    signed_in, kind, value
):
    ana = ProfileFactory(email="ana@example.com")
    visitor = Profile.objects.create()
    ProfileIdentity.objects.create(profile=visitor, kind=kind, value=value)

    response = signed_in.get(merge_url(ana), {"other": f" {value} "})

    assert f"Profile #{ana.pk} (ana@example.com) is kept" in response.text
    assert f'<input type="hidden" name="other" value="#{visitor.pk}">' in response.text
    assert nothing_merged(ana, visitor)


def test_digits_name_a_profile_id_first_then_a_user_id(signed_in):
    ana = ProfileFactory(email="ana@example.com")
    by_id = Profile.objects.create()
    by_user_id = Profile.objects.create()
    user_id(by_user_id, "9876543210")

    first = signed_in.get(merge_url(ana), {"other": str(by_id.pk)})
    then = signed_in.get(merge_url(ana), {"other": "9876543210"})

    assert f'name="other" value="#{by_id.pk}"' in first.text
    assert f'name="other" value="#{by_user_id.pk}"' in then.text


def test_a_confirmed_id_never_falls_back_to_a_user_id(signed_in):
    # The confirmation posts "#<id>": if that profile is gone meanwhile, a userId
    # written the same must not put another profile in its place.
    ana = ProfileFactory(email="ana@example.com")
    gone = Profile.objects.create()
    other = Profile.objects.create()
    user_id(other, str(gone.pk))
    gone.delete()

    response = signed_in.post(merge_url(ana), {"other": f"#{gone.pk}"})

    assert response.status_code == 200
    assert error_of(response) == (
        f"No profile has the id {gone.pk}. It may have been merged into another "
        "profile or erased."
    )
    assert nothing_merged(ana, other)


def test_the_page_says_when_the_other_profile_is_the_one_kept(signed_in):
    ana = ProfileFactory(email="ana@example.com")
    anonymous = Profile.objects.create()

    response = signed_in.get(merge_url(anonymous), {"other": "ana@example.com"})

    assert (
        f"Profile #{ana.pk} (ana@example.com) is kept, because it has an email "
        f"address. Profile #{anonymous.pk} (no email address) is merged into it"
    ) in response.text


def test_of_two_profiles_without_email_the_older_is_kept(signed_in):
    older = Profile.objects.create()
    newer = Profile.objects.create()

    response = signed_in.get(merge_url(newer), {"other": str(older.pk)})

    assert (
        f"Profile #{older.pk} (no email address) is kept, because it is the older "
        "profile."
    ) in response.text


def test_confirming_merges_the_other_profile_and_records_who_did_it(signed_in):
    ana = ProfileFactory(email="ana@example.com", first_name="Ana", city="")
    anonymous = Profile.objects.create(city="Lisbon")
    user_id(anonymous, "usr_1001")
    ProfileTag.objects.create(profile=anonymous, name="VIP")
    events(anonymous, 2)

    response = signed_in.post(merge_url(ana), {"other": str(anonymous.pk)})

    assert response.status_code == 302
    assert response.url == reverse("profile_detail", kwargs={"pk": ana.pk})
    assert not Profile.objects.filter(pk=anonymous.pk).exists()
    ana.refresh_from_db()
    assert ana.city == "Lisbon"
    assert Event.objects.filter(profile=ana).count() == 2
    assert list(ana.identities.values_list("value", flat=True)) == ["usr_1001"]
    assert list(ana.tags.values_list("name", flat=True)) == ["VIP"]
    merge = ProfileMerge.objects.get()
    assert (merge.kept_id, merge.merged_profile_id, merge.reason) == (
        ana.pk,
        anonymous.pk,
        "merged by hand by marketer",
    )
    page = signed_in.get(response.url).text
    assert (
        f"Profile #{anonymous.pk} (no email address) is merged into #{ana.pk} "
        "(ana@example.com), which is kept."
    ) in page


def test_confirming_on_the_page_of_the_profile_not_kept_leads_to_the_kept_one(
    signed_in,
):
    ana = ProfileFactory(email="ana@example.com")
    anonymous = Profile.objects.create()

    response = signed_in.post(merge_url(anonymous), {"other": str(ana.pk)})

    assert response.url == reverse("profile_detail", kwargs={"pk": ana.pk})
    assert list(Profile.objects.values_list("pk", flat=True)) == [ana.pk]


def test_segments_are_told_after_commit_to_read_the_kept_profile_again(
    signed_in, heard, django_capture_on_commit_callbacks
):
    ana = ProfileFactory(email="ana@example.com")
    anonymous = Profile.objects.create()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        signed_in.post(merge_url(ana), {"other": str(anonymous.pk)})
    assert heard == []
    for callback in callbacks:
        callback()

    assert heard == [([ana.pk], None)]


def test_the_kept_profile_enters_the_segments_the_merged_one_brought_it_into(
    signed_in, tasks_inline, django_capture_on_commit_callbacks
):
    ana = ProfileFactory(email="ana@example.com")
    anonymous = Profile.objects.create()
    ProfileTag.objects.create(profile=anonymous, name="VIP")
    with django_capture_on_commit_callbacks(execute=True):
        vip = segment_save(name="VIP", rule=VIP_RULE)
    assert not SegmentMembership.objects.filter(profile=ana).exists()

    with django_capture_on_commit_callbacks(execute=True):
        signed_in.post(merge_url(ana), {"other": str(anonymous.pk)})

    stays = SegmentMembership.objects.filter(profile=ana, left_at=None)
    assert list(stays.values_list("segment_id", flat=True)) == [vip.pk]


# Refusals --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_profile_cannot_be_merged_into_itself(signed_in, method):
    ana = ProfileFactory(email="ana@example.com")

    response = getattr(signed_in, method)(merge_url(ana), {"other": str(ana.pk)})

    assert response.status_code == 200
    assert error_of(response) == (
        "That is this profile itself: name another profile to merge into it."
    )
    assert "data-merge-confirm" not in response.text
    assert nothing_merged(ana)


@pytest.mark.parametrize(
    ("written", "error"),
    [
        (
            "987654",
            "No profile has the id or userId 987654. It may have been merged into "
            "another profile or erased.",
        ),
        (
            "#987654",
            "No profile has the id 987654. It may have been merged into "
            "another profile or erased.",
        ),
        (
            "nobody@example.com",
            "No profile has the email address, userId or anonymousId "
            "nobody@example.com.",
        ),
        ("anon-qa", "No profile has the userId or anonymousId “anon-qa”."),
    ],
)
@pytest.mark.parametrize("method", ["get", "post"])
def test_a_profile_that_does_not_exist_is_named_in_the_error(
    signed_in, method, written, error
):
    ana = ProfileFactory(email="ana@example.com")

    response = getattr(signed_in, method)(merge_url(ana), {"other": written})

    assert response.status_code == 200
    assert error_of(response) == error
    assert nothing_merged(ana)


@pytest.mark.parametrize("method", ["get", "post"])
def test_two_profiles_with_email_addresses_are_refused(signed_in, method):
    ana = ProfileFactory(email="ana@example.com")
    ben = ProfileFactory(email="ben@example.com")
    events(ben, 2)

    response = getattr(signed_in, method)(merge_url(ana), {"other": str(ben.pk)})

    assert response.status_code == 200
    assert error_of(response) == (
        f"Profiles #{ana.pk} and #{ben.pk} cannot be merged: both profiles have an "
        "email address. A profile keeps one address: if they are one person, remove "
        "the wrong address from one of them in the admin first."
    )
    assert "data-merge-confirm" not in response.text
    assert nothing_merged(ana, ben)
    assert Event.objects.filter(profile=ben).count() == 2


def test_two_profiles_with_different_user_ids_merge_by_hand(signed_in):
    # Refused when only events link them; a marketer's word is explicit, as an
    # alias is, so both user ids end on the kept profile.
    first = Profile.objects.create()
    second = Profile.objects.create()
    user_id(first, "usr_1001")
    user_id(second, "usr_1002")

    response = signed_in.post(merge_url(first), {"other": str(second.pk)})

    assert response.status_code == 302
    assert set(ProfileIdentity.objects.values_list("value", "profile_id")) == {
        ("usr_1001", first.pk),
        ("usr_1002", first.pk),
    }
    assert not Profile.objects.filter(pk=second.pk).exists()


def test_a_profile_merged_away_while_the_marketer_confirms_is_named_not_merged(
    signed_in, monkeypatch
):
    ana = ProfileFactory(email="ana@example.com")
    anonymous = Profile.objects.create()
    merged_away_meanwhile = people.merge_check

    def check_then_lose_it(kept, merged, *, explicit):
        merged_away_meanwhile(kept, merged, explicit=explicit)
        Profile.objects.filter(pk=anonymous.pk).delete()

    monkeypatch.setattr(people, "merge_check", check_then_lose_it)

    response = signed_in.post(merge_url(ana), {"other": str(anonymous.pk)})

    assert response.status_code == 200
    assert error_of(response) == (
        f"Profile #{anonymous.pk} or #{ana.pk} no longer exists: an event may have "
        "merged it into another profile meanwhile. Look the profile up again."
    )
    assert list(Profile.objects.values_list("pk", flat=True)) == [ana.pk]
    assert not ProfileMerge.objects.exists()


def test_the_merge_page_of_a_profile_that_does_not_exist_is_not_found(signed_in):
    response = signed_in.get(reverse("profile_merge", kwargs={"pk": 987654}))

    assert response.status_code == 404


def test_the_page_of_a_profile_merged_away_leads_to_the_kept_one(signed_in):
    kept = ProfileFactory(email="ana@example.com")
    merged = Profile.objects.create()
    merged_pk = merged.pk
    people._merge_by_hand(kept, merged, user=UserFactory(is_staff=True))

    response = signed_in.get(reverse("profile_detail", kwargs={"pk": merged_pk}))

    assert response.status_code == 302
    assert response.url == reverse("profile_detail", kwargs={"pk": kept.pk})
    missing = signed_in.get(reverse("profile_detail", kwargs={"pk": merged_pk + 999}))
    assert missing.status_code == 404


def test_the_confirmation_says_which_values_the_kept_profile_takes(signed_in):
    # given the kept profile's name from an import, and the other's newer name
    # and plan, said by the person
    ana = ProfileFactory(
        email="ana@example.com", first_name="Ann", city="", traits={"plan": "a"}
    )
    said = "2026-03-01T00:00:00.000000+00:00"
    other = Profile.objects.create(
        first_name="Ana",
        city="Lyon",
        traits={"plan": "b", "team": "red"},
        value_times={"first_name": said, "plan": said},
    )

    page = signed_in.get(merge_url(ana), {"other": str(other.pk)}).text

    table = re.search(r"<table data-merge-taken>(.*?)</table>", page, re.S).group(1)
    cells = [
        [" ".join(cell.split()) for cell in re.findall(r"<td>(.*?)</td>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)
    ]
    assert [row for row in cells if row] == [
        ["First name", "Ann", "Ana"],
        ["City", "(empty)", "Lyon"],
        ["plan", "a", "b"],
        ["team", "(none)", "red"],
    ]

    # and the merge does what the page said
    signed_in.post(merge_url(ana), {"other": f"#{other.pk}"})
    ana.refresh_from_db()
    assert (ana.first_name, ana.city, ana.traits) == (
        "Ana",
        "Lyon",
        {"plan": "b", "team": "red"},
    )


def test_the_confirmation_shows_traits_as_they_were_sent(signed_in):
    ana = ProfileFactory(email="ana@example.com", traits={"vip": True, "extra": None})
    said = "2026-03-01T00:00:00.000000+00:00"
    other = Profile.objects.create(
        traits={"vip": False, "extra": 0, "address": {"city": "Linz"}},
        value_times={"vip": said, "extra": said},
    )

    page = signed_in.get(merge_url(ana), {"other": str(other.pk)}).text

    table = re.search(r"<table data-merge-taken>(.*?)</table>", page, re.S).group(1)
    rows = [
        re.findall(r"<td>(.*?)</td>", row)
        for row in re.findall(r"<tr>(.*?)</tr>", table)
    ]
    assert [row for row in rows if row] == [
        ["address", "(none)", "{&quot;city&quot;: &quot;Linz&quot;}"],
        ["extra", "null", "0"],
        ["vip", "true", "false"],
    ]


@pytest.mark.parametrize("method", ["get", "post"])
def test_digits_that_are_one_profiles_id_and_anothers_user_id_are_asked_about(
    signed_in, method
):
    ana = ProfileFactory(email="ana@example.com")
    by_id = Profile.objects.create()
    by_user_id = Profile.objects.create(email="customer@example.com")
    user_id(by_user_id, str(by_id.pk))

    response = getattr(signed_in, method)(merge_url(ana), {"other": str(by_id.pk)})

    assert error_of(response) == (
        f"{by_id.pk} names two profiles: profile #{by_id.pk} (no email address) by "
        f"its id, and profile #{by_user_id.pk} (customer@example.com) by its userId. "
        f"Write #{by_id.pk} or #{by_user_id.pk} to say which."
    )
    assert nothing_merged(ana, by_id, by_user_id)
    chosen = signed_in.get(merge_url(ana), {"other": f"#{by_id.pk}"})
    assert f'name="other" value="#{by_id.pk}"' in chosen.text


def test_digits_that_are_also_this_profiles_user_id_name_the_other_by_its_id(
    signed_in,
):
    ana = ProfileFactory(email="ana@example.com")
    other = Profile.objects.create()
    user_id(ana, str(other.pk))

    response = signed_in.get(merge_url(ana), {"other": str(other.pk)})

    assert f'name="other" value="#{other.pk}"' in response.text


def test_the_page_says_the_kept_profile_takes_a_later_unsubscribe_and_suppression(
    signed_in,
):
    # qa23: the merge carried the unsubscribe over, and the page had not said so.
    ana = ProfileFactory(
        email="ana@example.com",
        subscription_status="subscribed",
        subscription_changed_at=datetime(2024, 2, 29, tzinfo=UTC),
    )
    other = ProfileFactory(
        email=None,
        subscription_status="unsubscribed",
        subscription_changed_at=datetime(2025, 3, 15, tzinfo=UTC),
        suppressed_at=datetime(2025, 3, 16, tzinfo=UTC),
    )

    page = signed_in.get(merge_url(ana), {"other": str(other.pk)}).text

    table = re.search(r"<table data-merge-taken>(.*?)</table>", page, re.S).group(1)
    rows = [
        re.findall(r"<td>(.*?)</td>", row)
        for row in re.findall(r"<tr>(.*?)</tr>", table)
    ]
    assert [row for row in rows if row] == [
        [
            "Email consent",
            "Subscribed, as of Feb. 29, 2024",
            "Unsubscribed, as of March 15, 2025",
        ],
        ["Suppressed", "No", "Yes, since March 16, 2025"],
    ]


def test_an_older_unsubscribe_on_the_merged_profile_is_not_said_to_be_taken(
    signed_in,
):
    ana = ProfileFactory(
        email="ana@example.com",
        subscription_status="subscribed",
        subscription_changed_at=datetime(2025, 3, 15, tzinfo=UTC),
    )
    other = ProfileFactory(
        email=None,
        subscription_status="unsubscribed",
        subscription_changed_at=datetime(2024, 2, 29, tzinfo=UTC),
    )

    page = signed_in.get(merge_url(ana), {"other": str(other.pk)}).text

    assert "Email consent" not in page
