"""A CSV file's text encoding: found when the file shows it, chosen when it cannot."""

import re
from io import StringIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from profiles.importing import contact_import_create, contact_import_file
from profiles.importing.reading import (
    EncodingHint,
    EncodingUnknown,
    ImportFormatError,
    contacts_decoded,
    encoding_hint,
)
from profiles.models import ContactImport, ImportStatus, Profile

POLISH = "email,first_name,city\nlukasz@example.com,Łukasz,Łódź\n"
MIXED = (
    b"email,first_name\n"
    + "ana@example.com,Chloé\n".encode()
    + b"ben@example.com,Ren\xe9e\n"
    + "cid@example.com,André\n".encode()
)


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


@pytest.fixture
def polish_upload(client, django_user_model):
    """A Windows-1250 file uploaded by a signed-in marketer, and its mapping page."""
    marketer = django_user_model.objects.create_user("m", password="x", is_staff=True)
    client.force_login(marketer)
    contact_import = contact_import_create(
        filename="pl.csv", data=POLISH.encode("cp1250")
    )
    return contact_import, reverse("import_mapping", kwargs={"pk": contact_import.pk})


def test_a_utf8_file_with_a_stray_byte_stays_utf8_and_names_the_line():
    decoded = contacts_decoded(MIXED)

    assert decoded.text.splitlines()[1:] == [
        "ana@example.com,Chloé",
        "ben@example.com,Renée",
        "cid@example.com,André",
    ]
    assert decoded.stray_lines == (3,)


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["chosen above the form", "read again"])
def test_the_mapping_page_opened_again_reads_the_file_as_last_chosen(
    client, polish_upload, how
):
    contact_import, url = polish_upload
    if how == "read again":
        form = client.get(url).context["form"]
        data = {name: form[name].initial or "" for name in form.fields}
        client.post(url, {**data, "encoding": "cp1250", "reread": "1"})
    else:
        client.get(url, {"encoding": "cp1250"})

    def shown(response) -> tuple[str, int]:
        # The encoding the form offers, and the samples read wrong (the help text
        # names "£ukasz" once as the example, and the suggestion once as the word).
        page = response.content.decode()
        examples = 1 + page.count("data-encoding-hint")
        return response.context["form"]["encoding"].initial, page.count(
            "£ukasz"
        ) - examples

    assert shown(client.get(url)) == ("cp1250", 0)
    assert "Łukasz" in client.get(url).content.decode()
    # not lost to a link naming an encoding Bespoke does not read
    assert shown(client.get(url, {"encoding": "bogus"})) == ("cp1250", 0)
    assert shown(client.get(url)) == ("cp1250", 0)
    # and found anew once the marketer asks for that
    assert shown(client.get(url, {"encoding": ""})) == ("", 1)
    assert shown(client.get(url)) == ("", 1)


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_byte_order_mark_is_found(codec):
    assert contacts_decoded(POLISH.encode(codec)).text == POLISH


def test_a_file_that_is_not_in_the_chosen_encoding_names_the_line():
    with pytest.raises(ImportFormatError) as refused:
        contacts_decoded("email\nana@example.com\nbé@example.com\n".encode(), "utf-8x")
    assert "does not read the encoding" in str(refused.value)

    with pytest.raises(ImportFormatError) as refused:
        contacts_decoded(b"email\nana@example.com\nb\x81@example.com\n", "cp1250")
    assert str(refused.value).startswith(
        "Line 3 holds the byte 0x81, which is no letter"
    )


@pytest.mark.django_db
def test_a_mixed_file_is_imported_with_a_note_naming_the_line():
    done = contact_import_file(filename="mixed.csv", data=MIXED)

    assert Profile.objects.get(email="ben@example.com").first_name == "Renée"
    assert Profile.objects.get(email="ana@example.com").first_name == "Chloé"
    (note,) = [n for n in done.notes if n["kind"] == "encoding_mixed"]
    assert note["lines"] == [3]
    assert "line 3 holds bytes that are not" in note["message"]


@pytest.mark.django_db
def test_a_central_european_file_imports_right_in_its_chosen_encoding():
    data = POLISH.encode("cp1250")

    found = contact_import_file(filename="pl.csv", data=data)
    assert Profile.objects.get().first_name == "£ukasz"
    assert [n["kind"] for n in found.notes] == ["encoding_found", "no_consent_column"]

    chosen = contact_import_file(filename="pl.csv", data=data, encoding="cp1250")
    assert chosen.status == ImportStatus.DONE
    lukasz = Profile.objects.get()
    assert (lukasz.first_name, lukasz.city) == ("Łukasz", "Łódź")
    assert [n["kind"] for n in chosen.notes] == ["no_consent_column"]


@pytest.mark.django_db
def test_the_command_takes_an_encoding(tmp_path):
    path = tmp_path / "pl.csv"
    path.write_bytes(POLISH.encode("cp1250"))

    call_command("import_contacts", str(path), "--encoding", "cp1250")

    assert Profile.objects.get().first_name == "Łukasz"


@pytest.mark.django_db
def test_the_mapping_page_reads_the_file_again_in_the_chosen_encoding(
    client, polish_upload
):
    contact_import, url = polish_upload

    found = client.get(url).content.decode()
    # Read for want of any sign, not found: the page says so.
    assert (
        "Windows-1252 (Western Europe and the Americas) (read as the file is not "
        "UTF-8: choose its encoding if letters look wrong)"
    ) in found
    assert "£ukasz" in found

    chosen = client.get(url, {"encoding": "cp1250"}).content.decode()
    assert "Łukasz" in chosen

    wrong = client.get(url, {"encoding": "utf-8"}).content.decode()
    assert "Line 2 holds the byte 0xA3, which is no letter in UTF-8" in wrong
    contact_import.refresh_from_db()
    assert contact_import.status == ImportStatus.PENDING

    form = client.get(url, {"encoding": "cp1250"}).context["form"]
    data = {name: form[name].initial or "" for name in form.fields}
    response = client.post(url, data)

    assert response.status_code == 302
    assert ContactImport.objects.get(pk=contact_import.pk).encoding == "cp1250"


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize(
    "text",
    [
        "email,first_name\nivan@example.com,Иван Петров\nolga@example.com,Ольга\n",
        "email,first_name\nada@example.com,Āda\n",
        "email,name\nli@example.com,一二三四五\n",
    ],
)
def test_utf16_without_a_mark_is_found_whatever_the_names_alphabet(codec, text):
    decoded = contacts_decoded(text.encode(codec))

    assert decoded.text == text
    assert decoded.encoding == codec


@pytest.mark.parametrize(
    "data",
    ["email,name\ncafe@example.com,Café’s\n".encode("cp1252"), POLISH.encode("cp1250")],
)
def test_a_single_byte_file_is_not_taken_for_utf8_with_stray_bytes(data):
    assert contacts_decoded(data).encoding == "cp1252"


def test_stray_bytes_are_placed_on_their_line_whatever_the_line_endings():
    data = (
        b"email,name\r"
        + "a@example.com,Chloé\r".encode()
        + b"b@example.com,Ren\xe9e\r"
        + b"c@example.com,Zo\xeb\r"
    )

    assert contacts_decoded(data).stray_lines == (3, 4)


@pytest.mark.django_db
def test_an_encoding_chosen_and_started_at_once_is_the_one_imported_in(
    client, polish_upload
):
    contact_import, url = polish_upload
    form = client.get(url).context["form"]
    data = {name: form[name].initial or "" for name in form.fields}

    wrong = client.post(url, {**data, "encoding": "utf-8"})
    assert wrong.status_code == 200
    assert "which is no letter in UTF-8" in wrong.content.decode()
    assert ContactImport.objects.get(pk=contact_import.pk).encoding == ""

    response = client.post(url, {**data, "encoding": "cp1250"})

    assert response.status_code == 302
    assert ContactImport.objects.get(pk=contact_import.pk).encoding == "cp1250"


def test_utf16_read_in_the_wrong_byte_order_is_refused():
    with pytest.raises(ImportFormatError) as refused:
        contacts_decoded(POLISH.encode("utf-16-le"), "utf-16-be")

    assert str(refused.value).startswith(
        "Read as UTF-16, big-endian, the file has no line break"
    )


@pytest.mark.django_db
def test_read_it_again_posts_and_starts_nothing(client, polish_upload):
    contact_import, url = polish_upload
    form = client.get(url).context["form"]
    data = {name: form[name].initial or "" for name in form.fields}

    response = client.post(url, {**data, "encoding": "cp1250", "reread": "1"})

    assert response.status_code == 200
    assert "Łukasz" in response.content.decode()
    assert ContactImport.objects.get(pk=contact_import.pk).queued_at is None


# Ź is 0x8F in Windows-1250, a byte Windows-1252 leaves undefined: the file reads
# as neither UTF-8 nor Windows-1252.
UNFOUND = "email,first_name,last_name\nzofia@example.com,Zofia,Źrebiec\n"


@pytest.mark.django_db
def test_a_file_in_no_encoding_found_waits_for_one_to_be_chosen(
    client, django_user_model
):
    marketer = django_user_model.objects.create_user("m", password="x", is_staff=True)
    client.force_login(marketer)
    upload = SimpleUploadedFile("pl.csv", UNFOUND.encode("cp1250"))

    uploaded = client.post(reverse("import_list"), {"file": upload})
    contact_import = ContactImport.objects.get()
    url = reverse("import_mapping", kwargs={"pk": contact_import.pk})
    page = client.get(url)
    html = page.content.decode()

    assert uploaded.status_code == 302
    assert uploaded["Location"] == url
    assert contact_import.status == ImportStatus.PENDING
    assert "none found in the file: choose one" in html
    assert "The file is neither UTF-8 nor Windows-1252 text" in html
    form = page.context["form"]
    data = {name: form[name].initial or "" for name in form.fields}

    # Started without an encoding, it is not queued: the page says why again.
    unchosen = client.post(url, data)
    assert unchosen.status_code == 200
    assert ContactImport.objects.get(pk=contact_import.pk).queued_at is None

    chosen = client.post(url, {**data, "encoding": "cp1250", "reread": "1"})
    assert "Źrebiec" in chosen.content.decode()
    started = client.post(url, {**data, "encoding": "cp1250"})

    assert started.status_code == 302
    contact_import.refresh_from_db()
    assert (contact_import.encoding, contact_import.status) == (
        "cp1250",
        ImportStatus.PENDING,
    )
    assert contact_import.queued_at is not None


@pytest.mark.django_db
def test_a_file_in_no_encoding_found_fails_a_run_without_a_choice():
    contact_import = contact_import_file(
        filename="pl.csv", data=UNFOUND.encode("cp1250")
    )

    assert contact_import.status == ImportStatus.FAILED
    assert "neither UTF-8 nor Windows-1252" in contact_import.error
    chosen = contact_import_file(
        filename="pl.csv", data=UNFOUND.encode("cp1250"), encoding="cp1250"
    )
    assert chosen.status == ImportStatus.DONE
    assert Profile.objects.get().last_name == "Źrebiec"


def test_reading_again_keeps_the_columns_mapped_to_what_they_now_are(
    client, django_user_model
):
    # A header with a letter read otherwise before an encoding is chosen: the new
    # trait the first reading offered is no option once read as Windows-1250.
    marketer = django_user_model.objects.create_user("m", password="x", is_staff=True)
    client.force_login(marketer)
    data = "Email,Imię,Nazwisko\nola@example.com,Ola,Źrebiec\n".encode("cp1250")
    contact_import = contact_import_create(filename="pl.csv", data=data)
    url = reverse("import_mapping", kwargs={"pk": contact_import.pk})
    form = client.get(url).context["form"]
    shown = {name: form[name].initial or "" for name in form.fields}
    assert shown["column_1"].startswith("traits.imi")
    assert shown["column_1"] != "traits.imię"

    again = client.post(url, {**shown, "encoding": "cp1250", "reread": "1"})

    reread = again.context["form"]
    assert reread["column_0"].value() == "email"
    assert reread["column_1"].value() == "traits.imię"
    start = {name: value for name, value in reread.data.items() if name != "reread"}
    started = client.post(url, start)
    assert started.status_code == 302
    contact_import.refresh_from_db()
    assert contact_import.column_map["Imię"] == "traits.imię"


@pytest.mark.parametrize(
    ("filename", "data"),
    [
        ("photo.csv", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01" + bytes(range(256))),
        ("report.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(200) + b"\x9c\x8f"),
    ],
)
def test_a_file_no_encoding_reads_as_text_cannot_be_imported(
    client, django_user_model, filename, data
):
    marketer = django_user_model.objects.create_user("m", password="x", is_staff=True)
    client.force_login(marketer)

    uploaded = client.post(
        reverse("import_list"), {"file": SimpleUploadedFile(filename, data)}
    )

    contact_import = ContactImport.objects.get()
    assert uploaded["Location"] == reverse(
        "import_detail", kwargs={"pk": contact_import.pk}
    )
    assert contact_import.status == ImportStatus.FAILED
    assert contact_import.error.startswith("The file is neither CSV text")
    mapping = client.get(
        reverse("import_mapping", kwargs={"pk": contact_import.pk}),
        {"encoding": "cp1250"},
    )
    assert mapping.status_code == 302


@pytest.mark.django_db
def test_an_encoding_the_file_shows_is_said_to_be_found(client, django_user_model):
    marketer = django_user_model.objects.create_user("m", password="x", is_staff=True)
    client.force_login(marketer)
    data = "\ufeffemail,first_name\nlukasz@example.com,Łukasz\n".encode()
    contact_import = contact_import_create(filename="bom.csv", data=data)
    url = reverse("import_mapping", kwargs={"pk": contact_import.pk})

    page = client.get(url).content.decode()

    assert "(found in the file)" in page
    assert "is not UTF-8" not in page


@pytest.mark.django_db
def test_the_command_takes_a_date_format(tmp_path):
    from profiles.models import TraitDefinition, TraitType

    TraitDefinition.objects.create(name="joined", type=TraitType.DATE)
    path = tmp_path / "uk.csv"
    path.write_bytes(b"Email,Joined\nann@example.com,31/03/2025\n")

    call_command("import_contacts", str(path), "--date-format", "day-first")

    assert Profile.objects.get().traits["joined"] == "2025-03-31"


def test_the_commands_date_formats_are_the_mapping_pages():
    from profiles.forms import DATE_FORMATS
    from profiles.management.commands.import_contacts import DATE_FORMAT_NAMES

    assert set(DATE_FORMAT_NAMES.values()) == {value for value, _ in DATE_FORMATS}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    [
        '"E-Mail-Adresse",Vorname,Nachname,MEMBER_RATING,OPTIN_TIME,LAST_CHANGED,LEID',
        '"Adresse e-mail",Prénom,Nom,MEMBER_RATING,OPTIN_TIME,LAST_CHANGED,LEID',
    ],
    ids=["german", "french"],
)
def test_a_mailchimp_export_in_another_language_is_read(tmp_path, header):
    path = tmp_path / "subscribed_members_export.csv"
    row = 'ada@example.com,Ada,Lovelace,2,"2024-01-02 10:00:00","2024-01-02 10:00:00",1'
    path.write_text(f"{header}\n{row}\n", encoding="utf-8")

    call_command("import_contacts", str(path))

    ada = Profile.objects.get()
    assert (ada.email, ada.first_name, ada.last_name) == (
        "ada@example.com",
        "Ada",
        "Lovelace",
    )
    assert ada.subscription_status == "subscribed"


@pytest.mark.django_db
def test_the_command_maps_columns_as_the_mapping_page_does(tmp_path):
    path = tmp_path / "crm.csv"
    path.write_bytes(b"Mail,Stage,Notes\nann@example.com,Lead,call back\n")

    call_command(
        "import_contacts", str(path), "--map", "Mail=email", "--map", "Stage=traits.stage",
        "--map", "Notes=",
    )  # fmt: skip

    ann = Profile.objects.get()
    assert (ann.email, ann.traits) == ("ann@example.com", {"stage": "Lead"})


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("Nowhere=email", "no column 'Nowhere'; its columns are 'Mail', 'Stage'"),
        ("Stage=shoe_size", "is mapped to 'shoe_size', which Bespoke cannot import"),
        ("Stage", "write it as COLUMN=TARGET"),
        ("Mail=tags", "'Mail' is mapped twice"),
    ],
)
def test_the_command_names_a_map_it_cannot_use(tmp_path, given, said):
    path = tmp_path / "crm.csv"
    path.write_bytes(b"Mail,Stage\nann@example.com,Lead\n")

    with pytest.raises(CommandError, match=re.escape(said)):
        call_command(
            "import_contacts", str(path), "--map", "Mail=email", "--map", given
        )
    assert not Profile.objects.exists()
    assert not ContactImport.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("chosen", "reason"),
    [
        (
            [],
            "The file is neither UTF-8 nor Windows-1252 text; choose its encoding, "
            "or save it as CSV UTF-8.",
        ),
        (
            ["--encoding", "utf-8"],
            "Line 2 holds the byte 0x81, which is no letter in UTF-8; choose the "
            "encoding the file was saved in.",
        ),
    ],
    ids=["not-found", "chosen-wrong"],
)
def test_the_commands_map_on_a_file_it_cannot_decode_fails_saying_why(
    tmp_path, chosen, reason
):
    # 0x81 is a letter in no encoding Bespoke finds by itself: it must be chosen.
    path = tmp_path / "crm.csv"
    path.write_bytes(b"Mail,Stage\nann@example.com,Le\x81d\n")
    errors = StringIO()

    with pytest.raises(CommandError, match="Not imported: crm.csv"):
        call_command(
            "import_contacts", str(path), "--map", "Mail=email", *chosen, stderr=errors
        )

    assert errors.getvalue() == f"crm.csv: failed: {reason}\n"
    contact_import = ContactImport.objects.get()
    assert (contact_import.status, contact_import.error) == (
        ImportStatus.FAILED,
        reason,
    )
    assert not Profile.objects.exists()


@pytest.mark.django_db
def test_the_commands_map_names_a_column_in_any_case(tmp_path):
    path = tmp_path / "crm.csv"
    path.write_bytes(b"Mail,Stage\nann@example.com,Lead\n")

    call_command("import_contacts", str(path), "--map", "mail=email", "--map", "STAGE=")

    assert list(Profile.objects.values_list("email", "traits")) == [
        ("ann@example.com", {})
    ]


@pytest.mark.parametrize(
    ("text", "codec", "hint"),
    [
        (POLISH, "cp1250", ("£ukasz", "Łukasz")),
        ("email,name\nx@example.com,ŁUKASZ GÓRA\n", "cp1250", ("£UKASZ", "ŁUKASZ")),
        ("email,имя\nivan@example.com,Иван Петров\n", "cp1251", ("Èâàí", "Иван")),
        (
            "email,name\nn@example.com,Νίκος Παπαδόπουλος\n",
            "cp1253",
            ("Íßêïò", "Νίκος"),
        ),
        (
            "email,name,city\nj@example.com,Jürgen Müller,Köln\n"
            "g@example.com,Greta Weiß,München\n",
            "mac_roman",
            ("JŸrgen", "Jürgen"),
        ),
    ],
)
def test_a_file_read_as_windows_1252_is_told_the_code_page_its_words_read_in(
    text, codec, hint
):
    data = text.encode(codec)
    assert contacts_decoded(data).encoding == "cp1252"

    assert encoding_hint(data) == EncodingHint(codec, *hint)


@pytest.mark.parametrize(
    ("text", "codec", "hint"),
    [
        (
            "email,jméno,město\na@example.cz,Petra Dvořáková,Praha\n"
            "b@example.cz,Jan Černý,České Budějovice\n"
            "c@example.cz,Tomáš Růžička,Plzeň\n",
            "cp1250",
            ("Èerný", "Černý"),
        ),
        (
            "email,ad,şehir\na@example.com.tr,Ayşe Yılmaz,İstanbul\n"
            "b@example.com.tr,Mehmet Güneş,Şişli\n"
            "c@example.com.tr,Çağlar Kılıç,Kırıkkale\n",
            "cp1254",
            ("Güneþ", "Güneş"),
        ),
        (
            "email,név,cég\na@example.hu,Kovács Lőrinc,Tűzoltó Kft\n"
            "b@example.hu,Erdős Pál,Kőműves Bt\n",
            "cp1250",
            ("Tûzoltó", "Tűzoltó"),
        ),
        (
            "email,vardas,miestas\na@example.lt,Rūta Šimkutė,Šiauliai\n"
            "b@example.lt,Ąžuolas Kęstutis,Vilnius\n",
            "cp1257",
            ("Ðimkutë", "Šimkutė"),
        ),
    ],
)
def test_central_european_turkish_and_baltic_files_are_told_their_code_page(
    text, codec, hint
):
    # Read as Windows-1252 their letters are real ones, but in words no language
    # writes: a French è beside Czech ý, Icelandic þ beside Turkish ü.
    data = text.encode(codec)
    assert contacts_decoded(data).encoding == "cp1252"

    assert encoding_hint(data) == EncodingHint(codec, *hint)


@pytest.mark.parametrize(
    "names",
    [
        "Hélène Lefèvre,Besançon;Zoë Noël,Crèvecœur;Niccolò Citterà,Forlì",
        "Søren Kierkegård,Århus;Bjørn Ærø,Sønderborg;Jørgen Sørensen,Tromsø",
        "Þórður Guðmundsson,Reykjavík;Björk Guðmundsdóttir,Alþingi",
        "José Núñez,Cádiz;Núria Pàmies,Lleó;João Conceição,Évora",
        "Luís Camões,Sûreté Générale;Françoise Côté,Août",
        # A German street named after a Frenchman, beside a Czech car.
        "Jürgen Weiß,Molièrestraße 3;Škoda Händler,Köln",
    ],
)
def test_western_words_with_letters_of_several_languages_suggest_nothing(names):
    rows = [row.split(",") for row in names.split(";")]
    text = "email,name,city\n" + "".join(
        f"p{n}@example.com,{name},{city}\n" for n, (name, city) in enumerate(rows)
    )

    assert encoding_hint(text.encode("cp1252")) is None


def test_a_polish_file_of_short_accented_words_is_told_its_code_page():
    # "Żółć" is all accents, and Polish: it tells nothing against Windows-1250.
    text = "Imię,Nazwisko,Miasto,email\nŁukasz,Wiśniewski,Łódź,l@example.pl\n"
    text += "Zofia,Żółć,Gdańsk,z@example.pl\n"

    assert encoding_hint(text.encode("cp1250")) == EncodingHint(
        "cp1250", "£ukasz", "Łukasz"
    )


@pytest.mark.parametrize(
    ("text", "codec"),
    [
        # Western European text, with the symbols and capitals it has anyway.
        (
            "email,name,spend,note\na@example.com,Ann McDonald,£20,Café «Le Zinc»\n"
            "b@example.com,Seán O'Brien,€5,Ærø ½ paid\nc@example.com,JOSÉ PEÑA,30°,\n",
            "cp1252",
        ),
        ("email,name\nchloe@example.com,Chloé Dubois\n", "cp1252"),
        # One Czech name: Windows-1250 and Windows-1257 read it as well as each
        # other (Dvořáková, Dvoųįkovį), so neither is suggested.
        ("email,name\np@example.com,Petra Dvořáková\n", "cp1250"),
        ("email,name\nana@example.com,Ana\n", "cp1252"),
        # As well in Windows-1250 as in Mac OS Roman (Jźrgen, Jürgen): no finding.
        ("email,name\nj@example.com,Jürgen\n", "mac_roman"),
    ],
)
def test_no_code_page_is_suggested_where_the_words_read_right_or_tell_nothing(
    text, codec
):
    assert encoding_hint(text.encode(codec)) is None


@pytest.mark.django_db
def test_the_mapping_page_suggests_the_code_page_and_reads_the_file_in_it(
    client, polish_upload
):
    contact_import, url = polish_upload

    page = client.get(url).content.decode()

    hint = re.search(r"<p class=\"flash\" data-encoding-hint>(.*?)</p>", page).group(1)
    assert (
        "<strong>£ukasz</strong> reads <strong>Łukasz</strong> in Windows-1250" in hint
    )
    link = re.search(r'href="([^"]+)"', hint).group(1)
    assert link == "?encoding=cp1250"
    chosen = client.get(url + link).content.decode()
    assert "data-encoding-hint" not in chosen
    assert "Łukasz" in chosen
    # A file in UTF-8 gets no suggestion.
    utf8 = contact_import_create(filename="pl.csv", data=POLISH.encode())
    page = client.get(reverse("import_mapping", kwargs={"pk": utf8.pk}))
    assert "data-encoding-hint" not in page.content.decode()


@pytest.mark.django_db
def test_an_import_read_as_windows_1252_names_the_code_page_its_words_read_in():
    done = contact_import_file(filename="pl.csv", data=POLISH.encode("cp1250"))

    (note,) = [n for n in done.notes if n["kind"] == "encoding_found"]
    assert note["suggested_encoding"] == "cp1250"
    assert (
        "£ukasz there is Łukasz. Import it again in that encoding (cp1250)."
        in (note["message"])
    )


CZECH = "email,name\nsimon@example.cz,Šťastný Novák\npetra@example.cz,Petra Dvořáková\n"


@pytest.mark.parametrize(
    ("text", "codec", "word"),
    [
        (CZECH, "cp1250", "Šťastný"),
        (
            "email,name\nf@example.fr,François Lefèvre\nc@example.fr,Chloé Ménard\n",
            "mac_roman",
            "François",
        ),
    ],
)
def test_a_file_windows_1252_cannot_read_is_told_the_code_page_its_words_read_in(
    text, codec, word
):
    # ť (0x9D) and Mac's ç (0x8D) are bytes Windows-1252 has no letter for.
    with pytest.raises(EncodingUnknown) as unknown:
        contacts_decoded(text.encode(codec))

    assert unknown.value.hint == EncodingHint(codec, "", word)
    assert f"as in {word}: choose that encoding ({codec})" in str(unknown.value)


def test_a_file_with_no_word_to_judge_by_is_told_no_code_page():
    # One byte alone in its cell, which Windows-1252 has no letter for: no word.
    with pytest.raises(EncodingUnknown) as unknown:
        contacts_decoded(b"email,name\nx@example.com,\x9d\n")

    assert unknown.value.hint is None
    assert str(unknown.value) == (
        "The file is neither UTF-8 nor Windows-1252 text; choose its encoding, or "
        "save it as CSV UTF-8."
    )


@pytest.mark.django_db
def test_the_mapping_page_of_a_file_in_no_encoding_found_links_the_one_it_reads_in(
    client, django_user_model
):
    marketer = django_user_model.objects.create_user("m", password="x", is_staff=True)
    client.force_login(marketer)
    contact_import = contact_import_create(
        filename="cz.csv", data=CZECH.encode("cp1250")
    )
    url = reverse("import_mapping", kwargs={"pk": contact_import.pk})

    page = client.get(url).content.decode()

    hint = re.search(r"<p class=\"flash\" data-encoding-hint>(.*?)</p>", page).group(1)
    assert "read right in Windows-1250" in hint
    assert "<strong>Šťastný</strong>" in hint
    assert re.search(r'href="([^"]+)"', hint).group(1) == "?encoding=cp1250"
    chosen = client.get(url, {"encoding": "cp1250"}).content.decode()
    assert "data-encoding-hint" not in chosen
    assert "Šťastný Novák" in chosen
