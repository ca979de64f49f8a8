"""The profile admin stores an address as every input path stores it."""

import json
import threading
from collections.abc import Callable

import pytest
import time_machine
from django.contrib import admin
from django.db import connection, transaction
from django.forms import modelform_factory

from campaigns.sending import message_skip_reason
from profiles.admin import ProfileAdminForm
from profiles.models import Profile, ProfileTag, Suppression, SuppressionReason
from profiles.services import suppression_add, suppression_hash
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

Form = modelform_factory(
    Profile, form=ProfileAdminForm, fields=["email", "first_name", "traits"]
)


def edit(profile: Profile, email: str):
    # As the page posts it: each field, and the value it was shown with.
    shown = {
        "email": profile.email or "",
        "first_name": profile.first_name,
        "traits": json.dumps(profile.traits),
    }
    data = {**shown, "email": email} | {f"initial-{k}": v for k, v in shown.items()}
    return Form(data=data, instance=profile)


def test_an_address_typed_in_the_admin_is_stored_normalised():
    profile = Profile.objects.create(first_name="Kai")

    form = edit(profile, " QA8@XN--BCHER-KVA.example.com ")
    assert form.is_valid(), form.errors
    form.save()

    profile.refresh_from_db()
    assert profile.email == "qa8@bücher.example.com"
    assert profile.email_display == "QA8@XN--BCHER-KVA.example.com"


def test_an_address_no_input_path_takes_is_refused_with_the_reason():
    form = edit(Profile.objects.create(), "x@localhost")

    assert not form.is_valid()
    assert form.errors["email"][0].startswith("x@localhost is not an email address: ")


def test_an_address_another_profile_has_is_refused_naming_it():
    other = Profile.objects.create(email="ben@example.net")

    form = edit(Profile.objects.create(), "Ben@Example.NET")

    assert not form.is_valid()
    assert form.errors["email"] == [
        f"ben@example.net is the address of profile #{other.pk}. Remove it there "
        "first, or merge the two profiles on that profile's page."
    ]
    # Saving the profile that has it, unchanged, is fine.
    assert edit(other, "ben@example.net").is_valid()


def test_a_suppressed_or_non_ascii_address_carries_its_flags():
    Suppression.objects.create(
        email_hash=suppression_hash("gone@example.com"),
        reason=SuppressionReason.HARD_BOUNCE,
        source="test",
    )
    profile = Profile.objects.create()

    form = edit(profile, "gone@example.com")
    assert form.is_valid(), form.errors
    form.save()
    profile.refresh_from_db()
    assert profile.suppressed_at is not None

    form = edit(profile, "jörg@example.com")
    assert form.is_valid(), form.errors
    form.save()
    profile.refresh_from_db()
    assert profile.traits == {"email_needs_smtputf8": True}


def test_a_cleared_address_is_no_address():
    profile = Profile.objects.create(email="ana@example.com", email_display="Ana@x")

    form = edit(profile, "  ")
    assert form.is_valid(), form.errors
    form.save()

    profile.refresh_from_db()
    assert (profile.email, profile.email_display) == (None, "")


def test_the_admin_page_edits_through_the_form(admin_client, rf, admin_user):
    profile = Profile.objects.create(email="ana@example.com", email_display="Ana@…")
    request = rf.get("/")
    request.user = admin_user

    form_class = admin.site._registry[Profile].get_form(request, profile)
    response = admin_client.get(f"/admin/profiles/profile/{profile.pk}/change/")

    assert issubclass(form_class, ProfileAdminForm)
    assert "email_display" not in form_class.base_fields
    assert response.status_code == 200
    assert 'name="email"' in response.content.decode()


def test_saving_writes_only_what_the_form_changed():
    profile = Profile.objects.create(first_name="Kai")
    read = Profile.objects.get(pk=profile.pk)
    # Events are processed while the form is open.
    Profile.objects.filter(pk=profile.pk).update(
        engagement_value=8.0, engagement_score=8, order_count=2, first_name="Kai"
    )

    form = Form(data={"email": "", "first_name": "Kay", "traits": "{}"}, instance=read)
    assert form.is_valid(), form.errors
    form.save()

    profile.refresh_from_db()
    assert profile.first_name == "Kay"
    assert (profile.engagement_value, profile.engagement_score) == (8.0, 8)
    assert profile.order_count == 2


def test_the_admin_saves_a_changed_profile_by_its_changed_fields(rf, admin_user):
    from profiles.admin import ProfileAdmin

    profile = Profile.objects.create(first_name="Kai")
    Profile.objects.filter(pk=profile.pk).update(order_count=3)
    stale = Profile.objects.get(pk=profile.pk)
    stale.order_count = 0
    form = Form(data={"email": "", "first_name": "Kay", "traits": "{}"}, instance=stale)
    assert form.is_valid(), form.errors

    request = rf.post("/")
    request.user = UserFactory(is_staff=True)
    ProfileAdmin(Profile, admin.site).save_model(
        request, form.save(commit=False), form, change=True
    )

    profile.refresh_from_db()
    assert (profile.first_name, profile.order_count) == ("Kay", 3)


# The admin's own pages ----------------------------------------------------------

INLINES = ("identities", "tags", "consent_records")


def page_post(**fields) -> dict:
    data = {"_save": "Save", **fields}
    for prefix in INLINES:
        data |= {
            f"{prefix}-TOTAL_FORMS": "0",
            f"{prefix}-INITIAL_FORMS": "0",
            f"{prefix}-MIN_NUM_FORMS": "0",
            f"{prefix}-MAX_NUM_FORMS": "1000",
        }
    return data


def shown_as(profile: Profile, **changes) -> dict:
    """What the change page posts: each field, and the value it was shown with."""
    shown = {
        "email": profile.email or "",
        "first_name": profile.first_name,
        "last_name": profile.last_name,
        "city": profile.city,
        "traits": json.dumps(profile.traits),
    }
    data = page_post(**shown, **{f"initial-{k}": v for k, v in shown.items()})
    return {**data, **changes}


def test_the_add_page_creates_a_profile_with_every_field_it_shows(admin_client):
    data = page_post(
        email="New@Example.com",
        first_name="Ada",
        last_name="Lovelace",
        city="Paris",
        traits='{"plan": "pro"}',
    )

    response = admin_client.post("/admin/profiles/profile/add/", data)

    assert response.status_code == 302, response.content.decode()[:2000]
    profile = Profile.objects.get()
    assert profile.email == "new@example.com"
    assert (profile.first_name, profile.last_name, profile.city) == (
        "Ada",
        "Lovelace",
        "Paris",
    )
    assert profile.traits == {"plan": "pro"}


def test_the_change_page_edits_a_name(admin_client):
    profile = Profile.objects.create(email="kai@example.com", first_name="Kai")

    response = admin_client.post(
        f"/admin/profiles/profile/{profile.pk}/change/",
        shown_as(profile, first_name="Kay"),
    )

    assert response.status_code == 302
    profile.refresh_from_db()
    assert profile.first_name == "Kay"


def test_a_page_saved_after_events_changed_the_profile_keeps_what_they_wrote(
    admin_client,
):
    profile = Profile.objects.create(first_name="Kai", traits={"plan": "free"})
    page = shown_as(profile, city="Porto")
    # An identify is processed while the page is open.
    Profile.objects.filter(pk=profile.pk).update(
        email="ana@example.com", first_name="Kim", traits={"plan": "pro"}
    )

    response = admin_client.post(f"/admin/profiles/profile/{profile.pk}/change/", page)

    assert response.status_code == 302
    profile.refresh_from_db()
    assert profile.city == "Porto"
    assert (profile.email, profile.first_name) == ("ana@example.com", "Kim")
    assert profile.traits == {"plan": "pro"}


def test_the_form_offers_every_field_the_admin_does_not_show_read_only():
    from profiles.admin import ProfileAdmin

    readonly = set(ProfileAdmin.readonly_fields)
    editable = {
        field.name
        for field in Profile._meta.concrete_fields
        if field.editable and not field.primary_key and field.name not in readonly
    }

    assert set(ProfileAdminForm._meta.fields) == editable


def test_a_trait_added_in_the_admin_obeys_its_declared_rule(admin_client):
    from profiles.models import TraitDefinition, TraitType

    TraitDefinition.objects.create(name="shoe_size", type=TraitType.NUMBER)
    profile = Profile.objects.create(first_name="Kai", traits={"plan": "free"})

    refused = admin_client.post(
        f"/admin/profiles/profile/{profile.pk}/change/",
        shown_as(profile, traits='{"plan": "free", "shoe_size": "huge"}'),
    )
    taken = admin_client.post(
        f"/admin/profiles/profile/{profile.pk}/change/",
        shown_as(profile, traits='{"plan": "free", "shoe_size": "42"}'),
    )

    assert refused.status_code == 200
    assert "shoe_size" in refused.content.decode()
    assert taken.status_code == 302
    profile.refresh_from_db()
    assert profile.traits == {"plan": "free", "shoe_size": 42}


def test_a_trait_named_like_a_profile_field_is_refused_in_the_admin(admin_client):
    profile = Profile.objects.create(first_name="Kai")

    response = admin_client.post(
        f"/admin/profiles/profile/{profile.pk}/change/",
        shown_as(profile, traits='{"lifetime_value": 5000}'),
    )

    assert response.status_code == 200
    assert "&#x27;lifetime_value&#x27; is the name of a profile field" in (
        response.content.decode()
    )
    profile.refresh_from_db()
    assert profile.traits == {}


def test_an_edit_in_the_admin_has_the_segments_read_the_profile_again(
    admin_client, django_capture_on_commit_callbacks
):
    from profiles.signals import profiles_changed

    heard = []

    def listen(sender, *, profile_ids, changed, **kwargs):
        heard.append((profile_ids, changed))

    profiles_changed.connect(listen, dispatch_uid="admin-edit-test")
    try:
        profile = Profile.objects.create(first_name="Kai")
        with django_capture_on_commit_callbacks(execute=True):
            admin_client.post(
                f"/admin/profiles/profile/{profile.pk}/change/",
                shown_as(profile, first_name="Zed"),
            )
    finally:
        profiles_changed.disconnect(dispatch_uid="admin-edit-test")

    assert heard == [([profile.pk], None)]


def merged_pair() -> tuple[Profile, Profile, Callable[[], Profile]]:
    from profiles.processing_identities import profile_merge

    kept = Profile.objects.create(email="kai@example.com", first_name="Kai")
    merged = Profile.objects.create(first_name="Anonymous")
    return kept, merged, lambda: profile_merge(first=kept, second=merged, reason="test")


def test_the_page_of_a_profile_merged_away_leads_to_the_kept_one(admin_client):
    kept, merged, merge = merged_pair()
    merge()

    response = admin_client.get(
        f"/admin/profiles/profile/{merged.pk}/change/", follow=True
    )

    assert response.redirect_chain == [
        (f"/admin/profiles/profile/{kept.pk}/change/", 302)
    ]
    assert f"Profile #{merged.pk} was merged into this one, #{kept.pk}." in (
        response.content.decode()
    )


@pytest.mark.django_db(transaction=True)
def test_an_edit_of_a_profile_merged_away_while_its_page_was_open_is_not_lost_silently(
    admin_client, monkeypatch
):
    from profiles.admin import ProfileAdmin

    kept, merged, merge = merged_pair()
    page = shown_as(merged, city="Porto")
    # The page's profile is read, then merged away by another worker (its own
    # connection and transaction) before it is saved.
    read = ProfileAdmin.get_object

    def merge_elsewhere():
        try:
            with transaction.atomic():
                merge()
        finally:
            connection.close()

    def read_then_merge(self, *args, **kwargs):
        found = read(self, *args, **kwargs)
        if found is not None and found.pk == merged.pk:
            worker = threading.Thread(target=merge_elsewhere)
            worker.start()
            worker.join()
        return found

    monkeypatch.setattr(ProfileAdmin, "get_object", read_then_merge)

    response = admin_client.post(
        f"/admin/profiles/profile/{merged.pk}/change/", page, follow=True
    )

    assert response.redirect_chain[0] == (
        f"/admin/profiles/profile/{kept.pk}/change/",
        302,
    )
    assert (
        f"Profile #{merged.pk} was merged into this one, #{kept.pk}. Nothing was "
        "saved: make the change here."
    ) in response.content.decode()
    kept.refresh_from_db()
    assert kept.city == ""
    assert not Profile.objects.filter(pk=merged.pk).exists()


def test_a_tag_added_in_another_case_is_refused_with_the_reason(admin_client):
    profile = Profile.objects.create(email="kai@example.com")
    vip = ProfileTag.objects.create(profile=profile, name="VIP")
    page = shown_as(profile) | {
        "tags-TOTAL_FORMS": "3",
        "tags-INITIAL_FORMS": "1",
        "tags-0-id": str(vip.pk),
        "tags-0-profile": str(profile.pk),
        "tags-0-name": "VIP",
        "tags-1-profile": str(profile.pk),
        "tags-1-name": "vip",
        "tags-2-profile": str(profile.pk),
        "tags-2-name": "Club",
    }

    response = admin_client.post(f"/admin/profiles/profile/{profile.pk}/change/", page)

    assert response.status_code == 200
    assert "“vip” is the tag “VIP” again" in response.content.decode()
    assert list(profile.tags.values_list("name", flat=True)) == ["VIP"]


def suppression_shown(profile: Profile, **changes) -> dict:
    # The suppression time as the page shows it: a date and a time field.
    at = profile.suppressed_at
    shown = {
        "suppressed_at_0": at.strftime("%Y-%m-%d") if at else "",
        "suppressed_at_1": at.strftime("%H:%M:%S") if at else "",
    }
    initial = {f"initial-{k}": v for k, v in shown.items()}
    return {**shown_as(profile), **shown, **initial, **changes}


def test_a_profile_suppressed_by_hand_puts_its_address_on_the_list(admin_client):
    # given a subscribed profile a privacy admin suppresses by hand
    profile = Profile.objects.create(
        email="kai@example.com", first_name="Kai", subscription_status="subscribed"
    )
    page = suppression_shown(
        profile, suppressed_at_0="2026-03-01", suppressed_at_1="10:00:00"
    )

    response = admin_client.post(f"/admin/profiles/profile/{profile.pk}/change/", page)

    # then the address is on the list, which sending reads, as suppressed by hand
    assert response.status_code == 302, response.content.decode()[:2000]
    profile.refresh_from_db()
    assert profile.suppressed_at is not None
    listed = Suppression.objects.get(email_hash=suppression_hash("kai@example.com"))
    assert listed.reason == SuppressionReason.MANUAL
    assert message_skip_reason(profile) == "suppressed"


def test_the_mark_of_an_address_on_the_list_cannot_be_cleared_by_hand(admin_client):
    # given a profile whose address bounced
    profile = Profile.objects.create(email="gone@example.com")
    suppression_add(
        email_key="gone@example.com", reason=SuppressionReason.HARD_BOUNCE, source="t"
    )
    profile.refresh_from_db()

    # when its suppression time is cleared in the admin
    page = suppression_shown(profile, suppressed_at_0="", suppressed_at_1="")
    response = admin_client.post(f"/admin/profiles/profile/{profile.pk}/change/", page)

    # then the page says why it stays, and it stays
    assert response.status_code == 200
    assert (
        "gone@example.com is on the suppression list (a bounce, a complaint, an "
        "erasure or by hand): Bespoke never sends to it, so the profile stays "
        "suppressed."
    ) in response.content.decode()
    profile.refresh_from_db()
    assert profile.suppressed_at is not None


def test_the_mark_of_an_address_not_on_the_list_can_be_cleared_by_hand(admin_client):
    # given a profile marked suppressed under an address it no longer has
    profile = Profile.objects.create(
        email="new@example.com", subscription_status="subscribed"
    )
    Profile.objects.filter(pk=profile.pk).update(suppressed_at="2026-01-01T00:00Z")
    profile.refresh_from_db()

    page = suppression_shown(profile, suppressed_at_0="", suppressed_at_1="")
    response = admin_client.post(f"/admin/profiles/profile/{profile.pk}/change/", page)

    assert response.status_code == 302
    profile.refresh_from_db()
    assert profile.suppressed_at is None
    assert message_skip_reason(profile) == ""


@pytest.mark.parametrize("email", ["", "right@example.com"])
def test_suppressing_by_hand_while_changing_the_address_lists_the_one_shown(
    admin_client, email
):
    # given a profile suppressed by hand in the same save that clears or changes
    # its address
    profile = Profile.objects.create(email="typo@example.com")
    page = suppression_shown(
        profile, email=email, suppressed_at_0="2026-03-01", suppressed_at_1="10:00:00"
    )

    response = admin_client.post(f"/admin/profiles/profile/{profile.pk}/change/", page)

    # then the address the page showed is listed, and the new one if any
    assert response.status_code == 302, response.content.decode()[:2000]
    listed = set(Suppression.objects.values_list("email_hash", flat=True))
    wanted = {"typo@example.com", *([email] if email else [])}
    assert listed == {suppression_hash(address) for address in wanted}


def test_the_profile_page_says_whether_the_address_or_the_profile_is_suppressed(
    admin_client,
):
    marked = Profile.objects.create(email="new@example.com")
    Profile.objects.filter(pk=marked.pk).update(suppressed_at="2026-01-01T00:00Z")
    listed = Profile.objects.create(email="gone@example.com")
    suppression_add(
        email_key="gone@example.com", reason=SuppressionReason.COMPLAINT, source="t"
    )

    marked_page = admin_client.get(f"/profiles/{marked.pk}/").content.decode()
    listed_page = admin_client.get(f"/profiles/{listed.pk}/").content.decode()

    assert "This profile is marked suppressed" in marked_page
    assert "suppression list" not in marked_page
    assert "This address is on the suppression list" in listed_page


def test_a_value_edited_by_hand_is_dated_then_and_the_others_keep_theirs(
    admin_client,
):
    # given a name, a city and two traits an identify said in March
    said = "2026-03-01T00:00:00.000000+00:00"
    profile = Profile.objects.create(
        first_name="Kai",
        city="Porto",
        traits={"plan": "free", "team": "red"},
        value_times=dict.fromkeys(["first_name", "city", "plan", "team"], said),
    )
    page = shown_as(profile, first_name="Kay", traits='{"plan": "pro", "team": "red"}')
    # and, while the page is open, an identify says the team is blue
    Profile.objects.filter(pk=profile.pk).update(
        traits={"plan": "free", "team": "blue"},
        value_times={**profile.value_times, "team": "2026-03-02T00:00:00.000000+00:00"},
    )

    # when a marketer saves the page, having corrected the name and the plan
    with time_machine.travel("2026-04-01T00:00:00Z", tick=False):
        response = admin_client.post(
            f"/admin/profiles/profile/{profile.pk}/change/", page
        )

    # then those two are dated then; the team the identify said stays, with its time
    assert response.status_code == 302, response.content.decode()[:2000]
    profile.refresh_from_db()
    assert (profile.first_name, profile.traits) == (
        "Kay",
        {"plan": "pro", "team": "blue"},
    )
    edited = "2026-04-01T00:00:00.000000+00:00"
    assert profile.value_times == {
        "first_name": edited,
        "plan": edited,
        "city": said,
        "team": "2026-03-02T00:00:00.000000+00:00",
    }


def test_a_page_posting_traits_it_was_not_shown_is_answered_not_a_500(admin_client):
    profile = Profile.objects.create(first_name="Kai", traits={"plan": "free"})
    page = shown_as(profile, traits='{"plan": "pro"}')
    page["initial-traits"] = "{not json"

    response = admin_client.post(f"/admin/profiles/profile/{profile.pk}/change/", page)

    assert response.status_code in (200, 302)


def test_the_suppressed_row_says_why_from_where_and_since_when(admin_client):
    marked = Profile.objects.create(email="new@example.com")
    Profile.objects.filter(pk=marked.pk).update(suppressed_at="2026-01-01T00:00Z")
    listed = Profile.objects.create(email="gone@example.com")
    suppression_add(
        email_key="gone@example.com",
        reason=SuppressionReason.COMPLAINT,
        source="esp:mailgun",
    )

    marked_page = admin_client.get(f"/profiles/{marked.pk}/").content.decode()
    listed_page = admin_client.get(f"/profiles/{listed.pk}/").content.decode()

    listed_cell = listed_page.split("data-suppression>")[1].split("</td>")[0]
    assert "Spam complaint, from esp:mailgun, since " in listed_cell
    marked_cell = marked_page.split("data-suppression>")[1].split("</td>")[0]
    assert "marked on the profile since Jan. 1, 2026" in marked_cell


def test_suppressing_by_hand_names_who_did_it_on_the_list(admin_client):
    profile = Profile.objects.create(email="typo@example.com")
    page = suppression_shown(
        profile, suppressed_at_0="2026-03-01", suppressed_at_1="10:00:00"
    )

    admin_client.post(f"/admin/profiles/profile/{profile.pk}/change/", page)

    entry = Suppression.objects.get()
    assert entry.source == f"admin: profile #{profile.pk} by admin"
