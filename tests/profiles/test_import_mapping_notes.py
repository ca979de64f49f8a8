"""What the mapping page refuses, and what the report says after a mapped run."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from profiles.importing import contacts_parse
from profiles.importing.mapping import column_reserved_sentence
from profiles.models import ContactImport

pytestmark = pytest.mark.django_db


def test_two_columns_on_one_profile_field_are_refused_naming_both(signed_in):
    data = b"email,full_name,name\na@example.com,Ann Lee,Ann\n"
    upload = SimpleUploadedFile("names.csv", data, content_type="text/csv")
    mapping = signed_in.post(reverse("import_list"), {"file": upload}).url
    form = signed_in.get(mapping).context["form"]
    choices = {name: form[name].initial or "" for name in form.fields}
    choices.update({"column_1": "first_name", "column_2": "first_name"})

    response = signed_in.post(mapping, choices)

    assert response.status_code == 200
    page = response.content.decode()
    assert "The columns “full_name” and “name” are both imported as" in page
    assert ContactImport.objects.get().column_map == {}


def test_a_mapped_run_notes_the_columns_left_out_for_their_reserved_names():
    data = b"email,lifetime_value,score\na@example.com,5000,7\n"

    parsed = contacts_parse(
        data,
        column_map={"email": "email", "lifetime_value": "", "score": "traits.score"},
    )

    kinds = [note["kind"] for note in parsed.notes]
    assert kinds == ["reserved_column", "no_consent_column"]
    assert parsed.notes[0]["column"] == "lifetime_value"


def test_a_column_of_a_figure_bespoke_computes_says_so():
    assert column_reserved_sentence("Lifetime value") == (
        "The column “Lifetime value” is not imported: Bespoke works out the "
        "lifetime value itself, from the orders and events it receives."
    )
    assert "works out the last seen time itself" in column_reserved_sentence(
        "Last Seen At"
    )
