"""QA pass qa20: the import mapping page as Chromium draws it (see
tests/profiles/test_qa20_mapping_walkthrough.py for the rest of the pass).

Each test says what happens now in its docstring; each fails until it is fixed.
"""

import pytest
from django.urls import reverse

from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


# Excel's French CSV: the Newsletter and change-time columns a CRM exports.
FRENCH_CRM = (
    "Email;Prénom;Nom;Ville;Newsletter;Dernière modification\r\n"
    "marie.dupont@exemple.fr;Marie;Dupont;Besançon;oui;12/01/2025 09:30\r\n"
    "jerome.lefevre@exemple.fr;Jérôme;Lefèvre;Orléans;non;03/02/2025 11:15\r\n"
).encode("cp1252")


# The page as a browser draws it ------------------------------------------------------

# For each cell of the mapping table's first column, its name and how many lines
# its text takes.
NAME_LINES = """() => [...document.querySelectorAll("form table tr td:first-child")].map(
  (td) => {
    const range = document.createRange();
    range.selectNodeContents(td);
    const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
    return [td.textContent.trim(), tops.size];
  })"""


def test_the_mapping_page_keeps_each_word_of_a_column_name_whole(page, live_server):
    """td { overflow-wrap: anywhere } (static/bespoke.css) lets the wide selects
    squeeze the Column cells to a few letters: "Newsletter" is drawn as
    "Newslette" and "r", "Dernière modification" on three lines, at any window
    width (the page is at most 1100 px wide)."""
    UserFactory(username="marie")
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("marie")
    page.get_by_label("Password").fill("correct-horse-battery")
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{live_server.url}{reverse('import_list')}")
    page.set_input_files("input[type=file]", files=[_csv("clients.csv", FRENCH_CRM)])
    page.get_by_role("button", name="Upload and import").click()
    page.wait_for_selector("form table select")

    lines = dict(page.evaluate(NAME_LINES))

    assert lines["Email"] == 1
    assert lines["Newsletter"] == 1
    assert lines["Dernière modification"] <= 2


def _csv(name: str, data: bytes) -> dict:
    return {"name": name, "mimeType": "text/csv", "buffer": data}
