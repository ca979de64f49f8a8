"""qa17: faults a newcomer's walkthrough of the data-in pages found in a browser.

Each test failed before its fix. A fourth, that a newer subscription in a file
should lift the file's own older withdrawal, was not taken: a list never subscribes
again someone who left (tests/profiles/test_import_consent_columns.py).
"""

import pytest
from django.urls import reverse

from profiles.importing import contact_import_file
from profiles.importing.layouts import (
    LAYOUT_GENERIC,
    LAYOUTS,
    TARGET_CHANGED_AT,
    layout_column_map,
)
from profiles.models import ConsentRecord, SubscriptionStatus
from tests.profiles.test_import_reading_files import run_mapped

SUBSCRIBED = "mailchimp/subscribed_members_export.csv"

# One address twice: it left in June 2024 and subscribed again in January 2025.
CAME_BACK = (
    b"Email,Status,Last changed\n"
    b"zed@example.com,subscribed,2025-01-10 09:00\n"
    b"Zed@Example.com,unsubscribed,2024-06-01 09:00\n"
)


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


def test_a_last_changed_column_is_pre_set_as_each_rows_change_time():
    """The mapping page offers "Last changed (dates the row's consent; of one
    address's rows, the newest wins)", but a generic file's own "Last changed"
    column is pre-set to "New trait last_changed": a marketer who keeps the
    defaults gets the row lower in the file, not the newest, and undated consent.
    """
    names = ["Email", "Status", "Last changed"]
    # As the first records hold them: times alone.
    values = [("zed@example.com",), ("subscribed",), ("2025-01-10 09:00",)]

    column_map = layout_column_map(LAYOUTS[LAYOUT_GENERIC], names, values=values)

    assert column_map["Last changed"] == TARGET_CHANGED_AT


@pytest.mark.django_db
def test_consent_from_an_opt_in_column_names_the_column_and_the_word():
    """A French file's "Newsletter: oui", mapped as "Subscribed?", is recorded as
    "Listed as subscribed in an imported contact file" with evidence of file,
    record and status only: the privacy admin cannot tell which column (Newsletter,
    SMS, Partners...) or which word gave the consent, while a change-time column
    is kept as written.
    """
    data = b"Adresse e-mail,Newsletter\nclaire@example.fr,oui\n"

    run_mapped(data, {"Adresse e-mail": "email", "Newsletter": "subscribed"})

    (record,) = ConsentRecord.objects.all()
    assert record.status == SubscriptionStatus.SUBSCRIBED
    assert record.evidence["consent_column"] == "Newsletter"
    assert record.evidence["consent_cell"] == "oui"


@pytest.mark.django_db
def test_the_imports_list_names_the_layout_as_the_mapping_page_does(
    signed_in, load_fixture
):
    """The mapping page says "Mailchimp audience export (subscribed)"; the list
    and the import's page say "mailchimp_subscribed" and "layout generic"."""
    contact_import_file(
        filename="subscribed_members_export.csv", data=load_fixture(SUBSCRIBED)
    )

    page = signed_in.get(reverse("import_list")).content.decode()

    assert "Mailchimp audience export (subscribed)" in page
    assert "<td>mailchimp_subscribed</td>" not in page
