"""QA pass qa11: the Sources page's import rows name no reason.

A marketer imports a file with a bad address and a value breaking a declared
trait, then opens Sources to see why rows were refused. The write-key and shop
sections show each code's latest messages; the "Contact imports" section shows
the code and the count with an empty "Latest messages" cell, for refused rows and
for refused fields alike. The page's template reads each group's `messages` (a
list), which the import groups of profiles/health.py
(`_import_rejections_by_reason`) never set: they carry a single `message`.
"""

import re

import pytest
from django.urls import reverse

from profiles.importing import contact_import_file
from profiles.models import TraitDefinition, TraitType

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


def _row_cells(page: str, attribute: str, code: str) -> list[str]:
    match = re.search(rf'<tr {attribute}="{code}">(.*?)</tr>', page, re.S)
    assert match, f"no {attribute}={code} row on the page"
    return re.findall(r"<td>(.*?)</td>", match.group(1), re.S)


def test_a_refused_import_row_shows_its_reason_on_the_sources_page(client, marketer):
    # Given an import with one address that is no address
    done = contact_import_file(
        filename="list.csv",
        data=b"Email,First name\nnot-an-email,Ann\nbo@example.com,Bo\n",
    )
    assert done.rejected == 1

    # When the marketer opens Sources
    client.force_login(marketer)
    page = client.get(reverse("sources_health")).content.decode()

    # Then the import's invalid_email row says why, as the write-key rows do
    cells = _row_cells(page, "data-code", "invalid_email")
    assert cells[1] == "1"
    assert "@-sign" in cells[2]


def test_a_refused_import_field_shows_its_reason_on_the_sources_page(client, marketer):
    # Given a declared number trait and a file whose cell is not a number
    TraitDefinition.objects.create(name="loyalty_points", type=TraitType.NUMBER)
    contact_import_file(
        filename="points.csv",
        data=b"Email,Loyalty Points\nann@example.com,lots\n",
    )

    # When the marketer opens Sources
    client.force_login(marketer)
    page = client.get(reverse("sources_health")).content.decode()

    # Then the warning row names the value and why it was left out
    (code,) = re.findall(r'<tr data-notice="([^"]+)">', page)
    cells = _row_cells(page, "data-notice", code)
    assert "lots" in cells[2]
