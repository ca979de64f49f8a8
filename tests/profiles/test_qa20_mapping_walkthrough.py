"""QA pass qa20: a European marketer's walkthrough of the import mapping page, the
report and the consent history it leaves (French, German, Czech, Turkish,
Lithuanian, English CRM and Brevo exports).

Each test says what happens now in its docstring; each fails until it is fixed.
The one that needs a browser is in tests/browser/test_qa20_mapping_walkthrough.py.
"""

import re

import pytest
from django.urls import reverse

from profiles.importing import (
    contact_import_file,
    contact_import_run_stored,
    contacts_preview,
)
from profiles.models import ContactImport, Profile, SubscriptionStatus
from tests.profiles.test_import_consent_columns import upload

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


def start_with_defaults(client, url: str, **chosen: str):
    """Press "Start the import" on the mapping page as pre-filled, bar `chosen`."""
    form = client.get(url).context["form"]
    posted = {name: form[name].initial or "" for name in form.fields}
    return client.post(url, {**posted, **chosen})


# A French CRM export, saved by Excel in Windows-1252: Marie is listed twice, and
# the newer row (31 March) says she no longer wants the newsletter.
FRENCH_CRM = (
    "Email;Prénom;Nom;Ville;Newsletter;Dernière modification\r\n"
    "marie.dupont@exemple.fr;Marie;Dupont;Besançon;oui;12/01/2025 09:30\r\n"
    "jerome.lefevre@exemple.fr;Jérôme;Lefèvre;Orléans;non;03/02/2025 11:15\r\n"
    "Marie.Dupont@Exemple.fr;Marie;Dupont;Besançon;non;31/03/2025 14:05\r\n"
).encode("cp1252")

BREVO = (
    b"EMAIL;FIRSTNAME;LASTNAME;EMAIL_BLACKLISTED;MODIFIED_TIME\n"
    b"claire.martin@exemple.fr;Claire;Martin;No;14-03-2025 10:22:00\n"
    b"paul.bernard@exemple.fr;Paul;Bernard;Yes;02-02-2025 08:00:00\n"
)


# Consent of an address listed twice -------------------------------------------------


def test_the_newest_row_of_an_address_decides_its_newsletter_consent():
    """The mapping page reads Newsletter (oui/non) as consent and "Dernière
    modification" as each row's change time; the report's merge note says "the
    newest record's is kept". But Marie's newer row ("non", 31 March) reads as
    nothing (opted_in_read returns None for no), so mapping._rows_merge keeps the
    older row's "oui" alone: she is imported subscribed as of 12 January, against
    what her CRM says of her today, and campaigns mail her."""
    preview = contacts_preview(FRENCH_CRM)
    assert preview.column_map["Newsletter"] == "subscribed"
    assert preview.column_map["Dernière modification"] == "changed_at"

    contact_import = contact_import_file(
        filename="clients_crm_fr.csv", data=FRENCH_CRM, date_format="%d/%m/%Y"
    )

    (merged,) = [n for n in contact_import.notes if n["kind"] == "merged"]
    assert "the newest record's is kept" in merged["message"]
    marie = Profile.objects.get(email__iexact="marie.dupont@exemple.fr")
    assert marie.subscription_status != SubscriptionStatus.SUBSCRIBED


# What the mapping page says ---------------------------------------------------------


def test_the_mapping_page_says_what_brevo_blacklisted_no_does(signed_in):
    """On a Brevo export the page pre-sets EMAIL_BLACKLISTED to "Unsubscribed?
    (yes / no; no changes nothing)" (forms.column_choices), and nothing beside it
    says otherwise; yet the import reads its "No" as a subscription
    (mapping._consents_read, as docs/limitations.md says): Claire, "No", is
    subscribed. A marketer who trusts the label imports consent unawares."""
    url = upload(signed_in, "brevo_contacts.csv", BREVO)

    form = signed_in.get(url).context["form"]
    position = form.names.index("EMAIL_BLACKLISTED")
    field = form[f"column_{position}"]
    chosen = dict(field.field.choices)[field.initial]
    response = start_with_defaults(signed_in, url, date_format="%d-%m-%Y")
    # The worker's part, run here.
    contact_import_run_stored(contact_import_id=ContactImport.objects.get().pk)

    assert response.status_code == 302
    claire = Profile.objects.get(email="claire.martin@exemple.fr")
    assert claire.subscription_status == SubscriptionStatus.SUBSCRIBED
    assert "no changes nothing" not in chosen


# The consent history a privacy admin reads -----------------------------------------


def consents_table(client, email: str) -> str:
    profile = Profile.objects.get(email=email)
    response = client.get(reverse("profile_detail", kwargs={"pk": profile.pk}))
    html = response.content.decode()
    return re.search(r'<table class="consents">.*?</table>', html, re.S).group(0)


def test_the_consent_history_names_its_evidence_in_words(signed_in):
    """Claire's consent record lists its evidence under the stored keys as they
    are: "consent_cell No", "row_changed_column MODIFIED_TIME", "row_changed_at
    14-03-2025 10:22:00", "layout brevo" (profile_detail.html loops over
    consent.evidence.items). A privacy admin proving consent reads code names."""
    contact_import_file(
        filename="brevo_contacts.csv", data=BREVO, date_format="%d-%m-%Y"
    )

    table = consents_table(signed_in, "claire.martin@exemple.fr")

    assert "14-03-2025 10:22:00" in table
    for key in ("consent_cell", "consent_column", "row_changed_at"):
        assert key not in table


def test_the_consent_history_shows_each_piece_of_evidence_once(signed_in):
    """Claire's evidence holds "EMAIL_BLACKLISTED No" and "consent_cell No",
    "MODIFIED_TIME 14-03-2025 10:22:00" and "row_changed_at 14-03-2025
    10:22:00": the layout's own copy of each cell beside the generic one."""
    contact_import_file(
        filename="brevo_contacts.csv", data=BREVO, date_format="%d-%m-%Y"
    )

    table = consents_table(signed_in, "claire.martin@exemple.fr")

    assert table.count("14-03-2025 10:22:00") == 1


# The import's page before anything was read -----------------------------------------


def test_an_import_not_yet_started_does_not_say_no_row_was_rejected(signed_in):
    """The page of an upload still waiting for its mapping shows six cards of 0
    and "No row was rejected." under "Rejected rows and fields" (as does a
    running import before its file is checked), though no row has been read."""
    url = upload(signed_in, "clients_crm_fr.csv", FRENCH_CRM)
    pk = int(url.rstrip("/").split("/")[-2])

    response = signed_in.get(reverse("import_detail", kwargs={"pk": pk}))

    assert "This file is uploaded but not started" in response.content.decode()
    assert "No row was rejected." not in response.content.decode()
