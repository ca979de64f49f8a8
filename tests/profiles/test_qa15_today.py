"""qa15: faults a QA pass found in the day's import, profile page and admin changes.

Each docstring tells what the first version did wrong; each is fixed since.
"""

import unicodedata
from datetime import UTC, datetime, timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from profiles.importing import (
    contact_import_create,
    contact_import_map,
    contact_import_run_stored,
    contacts_preview,
)
from profiles.importing.layouts import blacklisted_read
from profiles.models import (
    PAYLOAD_REFUSED,
    Event,
    ImportStatus,
    Profile,
    SubscriptionStatus,
    TraitDefinition,
    TraitType,
    WebhookDelivery,
)
from profiles.processing_traits import profile_traits_compute
from profiles.traits import TraitRule, trait_coerce
from tests.factories import ProfileFactory

WHEN = datetime(2025, 3, 14, 15, 0, tzinfo=UTC)
BOOLEAN = TraitRule(name="newsletter", type=TraitType.BOOLEAN)


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


def _order(profile, n: int, source: str, **properties) -> Event:
    return Event.objects.create(
        message_id=f"qa15-{profile.pk}-{n}",
        type="track",
        event="Order Completed",
        profile=profile,
        source=source,
        properties=properties,
        timestamp=WHEN + timedelta(minutes=n),
        received_at=WHEN + timedelta(minutes=n),
        processed_at=WHEN + timedelta(minutes=n),
    )


def _other_currencies(client, profile) -> str:
    page = client.get(reverse("profile_detail", kwargs={"pk": profile.pk}))
    return page.context["other_currencies"]


# Imports: the change time --------------------------------------------------------


@pytest.mark.django_db
def test_a_change_time_out_of_range_is_noted_and_the_file_imported():
    """A CRM writes an empty date as 0001-01-01T00:00:00+01:00 (.NET's MinValue).

    Mapped as "Last changed", that one cell stops the whole import with "The import
    stopped on an error: date value out of range. 0 of 0 rows were written; run it
    again" (which fails again). The cell should be one changed_at_unread note.
    """
    data = (
        b"Email,City,Updated\n"
        b"ana@example.com,Lisbon,0001-01-01T00:00:00+01:00\n"
        b"ana@example.com,Porto,2024-05-01 10:00:00\n"
        b"ben@example.com,Oslo,2024-05-01 10:00:00\n"
    )
    contact_import = contact_import_create(filename="crm.csv", data=data)
    contact_import_map(
        contact_import_id=contact_import.pk,
        column_map={"Email": "email", "City": "city", "Updated": "changed_at"},
        date_format="",
    )

    contact_import_run_stored(contact_import_id=contact_import.pk)

    contact_import.refresh_from_db()
    assert contact_import.status == ImportStatus.DONE
    assert Profile.objects.count() == 2
    assert "changed_at_unread" in [n["kind"] for n in contact_import.notes]


# Imports: yes and no -------------------------------------------------------------


@pytest.mark.parametrize("written", ["HAYIR", "ΟΧΙ"])
def test_a_listed_no_written_in_capitals_is_read_as_no(written):
    """Turkish HAYIR and Greek ΟΧΙ (capitals drop the accent) are hayır and όχι.

    Both lower-case words are in NO_WORDS, yet in capitals an "Unsubscribed" cell
    is refused as an unknown status and a boolean trait's value as "not true or
    false", while EVET and ΝΑΙ in the same column are read.
    """
    assert blacklisted_read(written) == SubscriptionStatus.SUBSCRIBED
    assert trait_coerce(BOOLEAN, written) is False


@pytest.mark.parametrize(
    ("written", "meant"),
    [("áno", True), ("jah", True), ("taip", True), ("не", False)],
)
def test_both_words_of_a_language_whose_other_word_is_read_are_read(written, meant):
    """One word of each pair is listed (Slovak nie, Estonian ei, Lithuanian ne,
    Bulgarian да), the other is not: a column of these languages is read half-way,
    its áno/jah/taip/не rows refused ("is not true or false", unknown status)."""
    assert trait_coerce(BOOLEAN, written) is meant


@pytest.mark.parametrize(
    ("written", "meant"),
    [("SANN", True), ("USANN", False), ("DOĞRU", True), ("YANLIŞ", False)],
)
def test_excels_true_and_false_in_norwegian_and_turkish_are_read(written, meant):
    """The docs promise Excel's TRUE and FALSE in the listed languages (nei and
    hayır are listed); a CSV saved by a Norwegian or Turkish Excel writes SANN/USANN
    and DOĞRU/YANLIŞ, each refused as "not true or false"."""
    assert trait_coerce(BOOLEAN, written) is meant


def test_a_boolean_trait_reads_a_decomposed_word_as_a_consent_column_does():
    """kyllä written with a combining diaeresis (as some macOS tools write text):
    an "Unsubscribed" column reads it as yes, a boolean trait refuses it as "not
    true or false", though both are meant to read the same words."""
    decomposed = unicodedata.normalize("NFD", "kyllä")
    assert blacklisted_read(decomposed) == SubscriptionStatus.UNSUBSCRIBED

    assert trait_coerce(BOOLEAN, decomposed) is True


# Imports: a declared trait named in words ----------------------------------------


@pytest.mark.django_db
def test_a_column_naming_a_declared_trait_in_words_goes_to_it_in_any_file():
    """createdAt is declared. "Created At" goes to it when the file has another
    trait column, but in a file of profile fields only it is ignored ("its name
    would be a profile field's"), the declared traits never being read."""
    TraitDefinition.objects.create(name="createdAt", type=TraitType.DATETIME)
    with_tier = b"email,First Name,Created At,Tier\na@example.com,Ann,2024-01-01,gold\n"
    alone = b"email,First Name,Created At\na@example.com,Ann,2024-01-01\n"
    assert contacts_preview(with_tier).column_map["Created At"] == "traits.createdAt"

    assert contacts_preview(alone).column_map["Created At"] == "traits.createdAt"


@pytest.mark.django_db
def test_the_mapping_page_does_not_call_a_column_mapped_to_a_declared_trait_ignored(
    signed_in,
):
    """The page says "The column “Created At” is ignored: as a trait its name would
    be a profile field's" while its select has the declared createdAt chosen (and
    the import does import it)."""
    TraitDefinition.objects.create(name="createdAt", type=TraitType.DATETIME)
    upload = SimpleUploadedFile(
        "crm.csv",
        b"email,Created At,Tier\na@example.com,2024-01-01 10:00,gold\n",
        content_type="text/csv",
    )
    url = signed_in.post(reverse("import_list"), {"file": upload}).url
    page = signed_in.get(url)
    form = page.context["form"]
    created = next(n for n in form.fields if form[n].label == "Created At")
    assert form[created].initial == "traits.createdAt"

    assert "“Created At” is ignored" not in page.content.decode()


# Profile page: orders in another currency ----------------------------------------


@pytest.mark.django_db
def test_an_order_reported_in_our_currency_by_the_shop_is_not_named_left_out(
    signed_in,
):
    """The site reports order 7 in EUR (what the buyer saw), the shop in USD: the
    lifetime value counts it (11.00), yet the page says "1 order in EUR: counted in
    the orders, but not in lifetime value or the average"."""
    ben = ProfileFactory(email="ben@example.com")
    _order(ben, 1, "segment:site", order_id=7, total=10, currency="EUR")
    _order(ben, 2, "shopify", order_id="7", total=11, currency="USD")
    profile_traits_compute(profile=ben)
    ben.refresh_from_db()
    assert ben.lifetime_value == 11

    assert _other_currencies(signed_in, ben) == ""


@pytest.mark.django_db
def test_orders_with_no_order_id_are_named_one_by_one(signed_in):
    """Three EUR orders the site reported with no order_id count as three orders,
    but the page says "1 order in EUR"."""
    ana = ProfileFactory(email="ana@example.com")
    for n in (1, 2, 3):
        _order(ana, n, "segment:site", total=10 * n, currency="EUR")
    profile_traits_compute(profile=ana)
    ana.refresh_from_db()
    assert ana.order_count == 3

    assert _other_currencies(signed_in, ana).startswith("3 orders in EUR")


# Admin: shop deliveries ----------------------------------------------------------


def _delivery(delivery_id: str, *, error: str, processed: bool) -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        source="shopify",
        delivery_id=delivery_id,
        topic="orders/create",
        received_at=timezone.now(),
        processed_at=timezone.now() if processed else None,
        error=error,
    )


@pytest.mark.django_db
def test_a_refused_delivery_is_not_listed_as_applied_with_a_note(admin_client):
    """A payload that could not be read is finished refused: the Sources page counts
    it as failed, not as a note, yet its "see which" notes link lists it, and the
    Outcome column reads "Applied, with a note: The payload was refused: ..."."""
    _delivery(
        "refused-1", error=f"{PAYLOAD_REFUSED}'x' is not an amount", processed=True
    )
    url = reverse("admin:profiles_webhookdelivery_changelist")

    noted = admin_client.get(url, {"has_error": "note"})

    assert [d.delivery_id for d in noted.context["cl"].queryset] == []
    assert "Applied, with a note: The payload was refused" not in (
        admin_client.get(url).content.decode()
    )


@pytest.mark.django_db
def test_the_not_applied_filter_lists_deliveries_whose_outcome_is_waiting(
    admin_client,
):
    """With the workers stopped, deliveries pile up with Outcome "Waiting"; the
    filter "Not applied: an error, or waiting" shows none of them (and "Without"
    a note or error lists them beside the applied ones)."""
    _delivery("waiting-1", error="", processed=False)
    url = reverse("admin:profiles_webhookdelivery_changelist")
    assert '<td class="field-outcome">Waiting</td>' in (
        admin_client.get(url).content.decode()
    )

    unfinished = admin_client.get(url, {"has_error": "unfinished"})

    assert [d.delivery_id for d in unfinished.context["cl"].queryset] == ["waiting-1"]
