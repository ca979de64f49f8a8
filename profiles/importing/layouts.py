"""The export layouts Bespoke recognises, and the consent each one's rows state.

A layout gives every column of its header a default target (the column map the
marketer sees pre-filled), the type of the ESP's own typed columns, and how a row
states consent: Mailchimp by which export file it is, Klaviyo by its "Email Marketing
Consent" column, Brevo by its EMAIL_BLACKLISTED flag, a generic file by a status
column if it has one. Consent records name the layout as their source
("import:klaviyo").
"""

import ipaddress
import re
from collections.abc import Callable, Collection, Container, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone

from profiles.importing.reading import column_key, trait_key
from profiles.models import SubscriptionStatus
from profiles.services import OCCURRED_AT_CLAIMED
from profiles.traits import (
    NO_KEYS,
    TRAIT_NAME_MAX_CHARS,
    YES_KEYS,
    declared_time_parse,
    trait_name_is_reserved,
    yes_no_key,
)

TARGET_EMAIL = "email"
TARGET_TAGS = "tags"
TARGET_STATUS = "status"
TARGET_UNSUBSCRIBED = "unsubscribed"
# A yes/no column that says someone opted in (Shopify's "Accepts Email Marketing").
TARGET_SUBSCRIBED = "subscribed"
# One column holding a whole name, split into the first and last name fields.
TARGET_FULL_NAME = "full_name"
# A column holding when each row last changed: of an address's rows, the newest
# row's values win (a layout may name one of its own, such as Mailchimp's).
TARGET_CHANGED_AT = "changed_at"
TRAIT_PREFIX = "traits."
PROFILE_FIELDS = {
    "email": "Email address",
    "first_name": "First name",
    "last_name": "Last name",
    "phone": "Phone",
    "city": "City",
    "region": "Region or state",
    "country_code": "Country code (two letters)",
    "timezone": "Time zone",
}

# Header names every layout understands, compared by column_key().
# Mailchimp and the others translate their column names with the account's
# language: German, French, Spanish, Italian, Portuguese and Dutch are read too.
EMAIL_COLUMNS = {
    "email",
    "emailaddress",
    "emailadresse",
    "adresseemail",
    "courriel",
    "correoelectrónico",
    "correoelectronico",
    "direccióndecorreoelectrónico",
    "indirizzoemail",
    "endereçodeemail",
    "enderecodeemail",
    "emailadres",
}
PROFILE_COLUMNS = {
    "firstname": "first_name",
    "first": "first_name",
    "forename": "first_name",
    "givenname": "first_name",
    "lastname": "last_name",
    "last": "last_name",
    "surname": "last_name",
    "familyname": "last_name",
    "phone": "phone",
    "phonenumber": "phone",
    "mobile": "phone",
    "city": "city",
    "region": "region",
    "state": "region",
    "timezone": "timezone",
    "country": "country_code",
    "countrycode": "country_code",
    "cc": "country_code",
    # The same in the languages EMAIL_COLUMNS reads.
    "vorname": "first_name",
    "nachname": "last_name",
    "telefon": "phone",
    "telefonnummer": "phone",
    "stadt": "city",
    "land": "country_code",
    "prénom": "first_name",
    "prenom": "first_name",
    "nom": "last_name",
    "nomdefamille": "last_name",
    "téléphone": "phone",
    "ville": "city",
    "pays": "country_code",
    "nombre": "first_name",
    "apellido": "last_name",
    "apellidos": "last_name",
    "teléfono": "phone",
    "ciudad": "city",
    "país": "country_code",
    "cognome": "last_name",
    "telefono": "phone",
    "telefone": "phone",
    "telefoon": "phone",
    "ort": "city",
    "pais": "country_code",
    "città": "city",
    "paese": "country_code",
    "nome": "first_name",
    "sobrenome": "last_name",
    "cidade": "city",
    "voornaam": "first_name",
    "achternaam": "last_name",
    "telefoonnummer": "phone",
    "plaats": "city",
}
# The first such column is split into first and last name by default.
FULL_NAME_COLUMNS = {"name", "fullname"}
STATUS_COLUMNS = {
    "status",
    "subscriptionstatus",
    "emailstatus",
    "emailsubscriptionstatus",
    "subscriberstatus",
    "memberstatus",
}
# Yes/no columns that say someone opted in: "no" says nothing of consent (no one
# is unsubscribed by a list that did not ask them).
SUBSCRIBED_COLUMNS = {
    "subscribed",
    "acceptsemailmarketing",
    "acceptsmarketing",
    "emailoptin",
    "optedin",
    "optin",
    "marketingconsent",
    "emailconsent",
    "marketingoptin",
    "newsletteroptin",
    "optinnewsletter",
    "consent",
    "gdprconsent",
    # The same in the languages whose other column names imports read, and in
    # Polish, Czech and the Nordic ones: a consent's name, not a list's.
    *("einwilligung", "werbeeinwilligung", "marketingeinwilligung"),
    *("newslettereinwilligung", "emaileinwilligung", "newsletterabonniert"),
    *("consentement", "consentementmarketing", "consentementemail"),
    *("consentementnewsletter", "abonné", "abonne", "abonnénewsletter"),
    *("abonnenewsletter", "inscritnewsletter"),
    *("consentimiento", "consentimientomarketing", "suscrito", "suscritonewsletter"),
    *("consenso", "consensomarketing", "consensonewsletter", "iscritto"),
    *("iscrittonewsletter", "consentimento", "consentimentomarketing", "inscrito"),
    *("toestemming", "toestemmingmarketing", "ingeschreven", "aangemeld"),
    *("zgoda", "zgodamarketingowa", "zgodanewsletter", "zapisany", "souhlas"),
    *("samtycke", "samtykke", "suostumus", "markkinointilupa"),
}
CONSENT_TARGETS = {TARGET_STATUS, TARGET_UNSUBSCRIBED, TARGET_SUBSCRIBED}
# Columns that say when each row last changed, as CRMs and spreadsheets name them:
# read as the change time when the first records hold times alone.
CHANGED_AT_COLUMNS = {
    *("lastchanged", "lastchangedat", "changedat", "lastmodified", "lastmodifiedat"),
    *("lastmodifieddate", "modifiedat", "datemodified", "modifiedon", "lastupdated"),
    *("lastupdatedat", "updatedat", "updatedon", "dateupdated", "lastupdate"),
    *("letzteänderung", "geändertam", "dernièremodification", "modifiéle"),
    *("últimamodificación", "ultimamodificacion", "ultimamodifica"),
    *("laatstgewijzigd", "ostatniazmiana"),
}
# A time as exports write one: ISO, or a date in some order with a time or none,
# its year in four digits as every date format the mapping page offers reads it.
TIME_LIKE = re.compile(
    r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?"
    r"|\d{1,2}[./-]\d{1,2}[./-]\d{4}( \d{1,2}:\d{2}(:\d{2})?)?"
)
# Columns that may be a newsletter's yes/no, or may hold its name or a list's: read
# as a "Subscribed?" column only when the first records hold yes and no alone.
NEWSLETTER_COLUMNS = {
    *("newsletter", "newsletters", "emailnewsletter", "newsletteremail"),
    *("mailinglist", "emailmarketing", "marketingemails", "promotionalemails"),
    *("nieuwsbrief", "infolettre", "lettredinformation", "boletín", "boletin"),
    *("biuletyn", "notiziario", "rundbrief", "nyhetsbrev", "nyhedsbrev"),
    *("uutiskirje", "zpravodaj", "hírlevél", "hirlevel"),
}
# Yes/no columns that say someone left; read like Brevo's EMAIL_BLACKLISTED.
UNSUBSCRIBED_COLUMNS = {
    "unsubscribed",
    "abgemeldet",
    "désabonné",
    "desabonne",
    "désinscrit",
    "baja",
    "dadodebaja",
    "disiscritto",
    "descadastrado",
    "afgemeld",
    "uitgeschreven",
    "unsubscribe",
    "optedout",
    "optout",
    "emailoptout",
    "emailoptedout",
    "blacklisted",
    "donotemail",
    "donotmail",
    "donotcontact",
}

LAYOUT_MAILCHIMP_SUBSCRIBED = "mailchimp_subscribed"
LAYOUT_MAILCHIMP_UNSUBSCRIBED = "mailchimp_unsubscribed"
LAYOUT_MAILCHIMP_CLEANED = "mailchimp_cleaned"
LAYOUT_KLAVIYO = "klaviyo"
LAYOUT_BREVO = "brevo"
LAYOUT_GENERIC = "generic"
# How a wording ends for a file that neither dates its consent nor says how it was
# given; a column mapped as each row's change time dates it.
UNDATED_WORDING_END = "which does not say when or how."
DATED_WORDING_END = (
    "whose “{column}” column, mapped as each row's change time, dates it; the file "
    "does not say how it was given."
)


# Slots: an import keeps one for each of up to a million rows.
@dataclass(frozen=True, slots=True)
class ConsentFact:
    status: SubscriptionStatus
    occurred_at: datetime
    ip_address: str | None
    wording: str
    evidence: dict[str, Any]
    # False when the file does not say when: occurred_at is then the import's time.
    dated: bool = True
    # The status cell read "suppressed" (recorded as cleaned, for a reason unknown).
    suppressed: bool = False


@dataclass(frozen=True)
class Layout:
    name: str
    label: str
    source: str
    # Column key -> default target, on top of the names every layout understands.
    columns: dict[str, str] = field(default_factory=dict)
    # Column key -> how the ESP writes its typed values: "int", "float" or "time".
    kinds: dict[str, str] = field(default_factory=dict)
    # The status every row of the file states (a Mailchimp export is one status).
    status: SubscriptionStatus | None = None
    # That status, when a mapped column speaks for each row instead: a yes/no
    # "unsubscribed" column's "no" leaves a row with it.
    status_of_export: SubscriptionStatus | None = None
    # Columns kept verbatim as evidence with each consent record, by header name.
    evidence: tuple[str, ...] = ()
    # The first of these columns holding a time says when the consent happened.
    consent_times: tuple[str, ...] = ()
    # The column whose time orders one mailbox's duplicate rows.
    changed_at: str = ""
    wording: str = ""
    # Whether a country that is not a two-letter code is kept as traits.country.
    country_as_trait: bool = True


# The traits that describe an opt-in (Mailchimp's): a subscription the import does
# not record (the person had left) must not leave them claiming one.
OPT_IN_TRAITS = frozenset(
    {"optin_at", "optin_ip", "confirm_at", "confirm_ip", "mailchimp_last_changed_at"}
)

MAILCHIMP_COLUMNS = {
    "memberrating": ("member_rating", "int"),
    "optintime": ("optin_at", "time"),
    "optinip": ("optin_ip", ""),
    "confirmtime": ("confirm_at", "time"),
    "confirmip": ("confirm_ip", ""),
    "latitude": ("latitude", "float"),
    "longitude": ("longitude", "float"),
    "gmtoff": ("gmtoff", "float"),
    "dstoff": ("dstoff", "float"),
    "lastchanged": ("mailchimp_last_changed_at", "time"),
    "leid": ("mailchimp_leid", ""),
    "euid": ("mailchimp_euid", ""),
    "notes": ("notes", ""),
    "unsubtime": ("unsubscribed_at", "time"),
    "unsubcampaigntitle": ("unsubscribe_campaign_title", ""),
    "unsubcampaignid": ("unsubscribe_campaign_id", ""),
    "unsubreason": ("unsubscribe_reason", ""),
    "unsubreasonother": ("unsubscribe_reason_other", ""),
    "cleantime": ("cleaned_at", "time"),
    "cleancampaigntitle": ("clean_campaign_title", ""),
    "cleancampaignid": ("clean_campaign_id", ""),
}
_MAILCHIMP = {
    "source": "import:mailchimp",
    "columns": {k: TRAIT_PREFIX + t for k, (t, _) in MAILCHIMP_COLUMNS.items()},
    "kinds": {k: kind for k, (_, kind) in MAILCHIMP_COLUMNS.items() if kind},
    "country_as_trait": False,
}
_MAILCHIMP_IDS = ("LEID", "EUID")

KLAVIYO_COLUMNS = {
    "stateregion": "region",
    "zipcode": "traits.zip_code",
    "address": "traits.address",
    "address1": "traits.address",
    "address2": "traits.address_2",
    "source": "traits.klaviyo_source",
    "emailmarketingconsent": TARGET_STATUS,
    "emailmarketingconsenttimestamp": "",
    "created": "traits.klaviyo_created_at",
    "list": TARGET_TAGS,
    "klaviyoid": "traits.klaviyo_id",
}
BREVO_COLUMNS = {
    "prenom": "first_name",
    "nom": "last_name",
    "sms": "phone",
    "emailblacklisted": TARGET_UNSUBSCRIBED,
    "smsblacklisted": "traits.sms_blacklisted",
    "doubleoptin": "traits.brevo_double_opt_in",
    "optin": "traits.brevo_opt_in",
    "addedtime": "traits.brevo_added_time",
    "modifiedtime": "traits.brevo_modified_time",
}

LAYOUTS = {
    layout.name: layout
    for layout in (
        Layout(
            LAYOUT_MAILCHIMP_SUBSCRIBED,
            "Mailchimp audience export (subscribed)",
            status=SubscriptionStatus.SUBSCRIBED,
            evidence=(
                "OPTIN_TIME",
                "OPTIN_IP",
                "CONFIRM_TIME",
                "CONFIRM_IP",
                "LAST_CHANGED",
                *_MAILCHIMP_IDS,
            ),
            consent_times=("CONFIRM_TIME", "OPTIN_TIME", "LAST_CHANGED"),
            changed_at="LAST_CHANGED",
            wording=(
                "Listed as a subscribed member in a Mailchimp audience export. "
                "Mailchimp recorded the opt-in; the wording of its sign-up form is "
                "not in the export."
            ),
            **_MAILCHIMP,
        ),
        Layout(
            LAYOUT_MAILCHIMP_UNSUBSCRIBED,
            "Mailchimp audience export (unsubscribed)",
            status=SubscriptionStatus.UNSUBSCRIBED,
            evidence=(
                "UNSUB_TIME",
                "UNSUB_CAMPAIGN_TITLE",
                "UNSUB_CAMPAIGN_ID",
                "UNSUB_REASON",
                "UNSUB_REASON_OTHER",
                "OPTIN_TIME",
                "CONFIRM_TIME",
                *_MAILCHIMP_IDS,
            ),
            consent_times=("UNSUB_TIME",),
            changed_at="UNSUB_TIME",
            wording="Listed as unsubscribed in a Mailchimp audience export.",
            **_MAILCHIMP,
        ),
        Layout(
            LAYOUT_MAILCHIMP_CLEANED,
            "Mailchimp audience export (cleaned)",
            status=SubscriptionStatus.CLEANED,
            evidence=(
                "CLEAN_TIME",
                "CLEAN_CAMPAIGN_TITLE",
                "CLEAN_CAMPAIGN_ID",
                "OPTIN_TIME",
                "CONFIRM_TIME",
                *_MAILCHIMP_IDS,
            ),
            consent_times=("CLEAN_TIME",),
            changed_at="CLEAN_TIME",
            wording=(
                "Listed as cleaned in a Mailchimp audience export: the address "
                "bounced permanently or repeatedly."
            ),
            **_MAILCHIMP,
        ),
        Layout(
            LAYOUT_KLAVIYO,
            "Klaviyo profile export",
            "import:klaviyo",
            columns=KLAVIYO_COLUMNS,
            evidence=(
                "Email Marketing Consent",
                "Email Marketing Consent Timestamp",
                "Source",
                "List",
            ),
            consent_times=("Email Marketing Consent Timestamp",),
            wording="Listed as {status} in a Klaviyo profile export.",
        ),
        Layout(
            LAYOUT_BREVO,
            "Brevo contact export",
            "import:brevo",
            columns=BREVO_COLUMNS,
            evidence=(
                "EMAIL_BLACKLISTED",
                "OPT_IN",
                "DOUBLE_OPT-IN",
                "ADDED_TIME",
                "MODIFIED_TIME",
            ),
            changed_at="MODIFIED_TIME",
            wording=(
                "Listed as {status} in a Brevo contact export (EMAIL_BLACKLISTED "
                "says whether the contact may receive campaigns)."
            ),
        ),
        Layout(
            LAYOUT_GENERIC,
            "Contact file (generic)",
            "import:file",
            wording="Listed as {status} in an imported contact file, "
            + UNDATED_WORDING_END,
        ),
    )
}


# The system columns every Mailchimp audience export has, whatever its status: a
# file is taken for one only with several of them, since a Mailchimp layout states
# one status for every row (a CRM's "Last Changed" column alone says nothing).
MAILCHIMP_SYSTEM_COLUMNS = {
    "memberrating",
    "optintime",
    "optinip",
    "confirmtime",
    "confirmip",
    "gmtoff",
    "dstoff",
    "leid",
    "euid",
}
MAILCHIMP_SYSTEM_COLUMNS_MIN = 3
# Brevo's yes/no column of contacts who may not be emailed.
BREVO_BLACKLIST = "emailblacklisted"
# Brevo's columns a file may share with others: two of them, or EMAIL_BLACKLISTED.
BREVO_COLUMNS_SHARED = {"doubleoptin", "optin", "addedtime", "modifiedtime"}


def layout_detect(names: list[str]) -> Layout:
    """Recognise the export a header comes from; a generic layout if none."""
    keys = {column_key(name) for name in names}
    if len(keys & MAILCHIMP_SYSTEM_COLUMNS) >= MAILCHIMP_SYSTEM_COLUMNS_MIN:
        if "cleantime" in keys:
            return LAYOUTS[LAYOUT_MAILCHIMP_CLEANED]
        if "unsubtime" in keys:
            return LAYOUTS[LAYOUT_MAILCHIMP_UNSUBSCRIBED]
        if keys & {"optintime", "lastchanged"}:
            return LAYOUTS[LAYOUT_MAILCHIMP_SUBSCRIBED]
    if keys & {"emailmarketingconsent", "klaviyoid"}:
        return LAYOUTS[LAYOUT_KLAVIYO]
    if BREVO_BLACKLIST in keys or len(keys & BREVO_COLUMNS_SHARED) >= 2:
        return LAYOUTS[LAYOUT_BREVO]
    return LAYOUTS[LAYOUT_GENERIC]


def layout_with_status_column(layout: Layout) -> Layout:
    """Return an export's layout for a file whose status a mapped column states.

    A Mailchimp export states one status for the whole file; when the marketer
    maps a column to the status, each row's own word decides, undated (the
    export's times belong to its status), and its consent record says where the
    word was read.
    """
    if layout.status is None:
        return layout
    # "Mailchimp audience export", without the status its name gives every row.
    kind = layout.label.split(" (")[0]
    return replace(
        layout,
        status=None,
        status_of_export=layout.status,
        consent_times=(),
        changed_at="",
        wording=(
            "Listed as {status} in the status column mapped at import, in a file "
            f"laid out as a {kind}, " + UNDATED_WORDING_END
        ),
    )


def layout_column_map(
    layout: Layout,
    names: list[str],
    *,
    declared: Iterable[str] = (),
    values: Sequence[Collection[str]] | None = None,
) -> dict[str, str]:
    """Return the default target of each column: the map the mapping step pre-fills.

    `values` are the distinct values the first records hold in each column: a
    column named like a newsletter ("Newsletter", "Infolettre") whose values are
    all yes or no is read as consent (a "Subscribed?" column), where one holding
    anything else (a list's name) stays a trait.

    No two columns get the same target, and no column a trait of a reserved name
    (a profile field's): such a column is ignored (see layout_columns_reserved).
    A column named as a `declared` trait is ("loyaltyTier", whose name as a new
    trait would be loyaltytier, or "Loyalty Tier", its words run together), so that
    the trait's rules apply to it; a later column named as the same one is ignored
    (see layout_columns_declared_twice).
    """
    return _column_map_build(layout, names, declared, values)[0]


def layout_columns_declared_twice(
    layout: Layout, names: list[str], *, declared: Iterable[str]
) -> list[tuple[str, str, str]]:
    """Return the columns the default map ignores as named like a taken declared trait.

    Each as (column, the earlier column that goes to the trait, the trait).
    """
    return _column_map_build(layout, names, declared)[1]


def _column_map_build(
    layout: Layout,
    names: list[str],
    declared: Iterable[str],
    values: Sequence[Collection[str]] | None = None,
) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    full_name_at = _full_name_position(names)
    declared_keys = {trait_key(name, 0): name for name in sorted(declared)}
    # Also by their words run together, so that a "Loyalty Tier" column is the
    # declared loyaltyTier: where one declared trait alone reads so.
    run_together: dict[str, list[str]] = {}
    for key, declared_name in declared_keys.items():
        run_together.setdefault(key.replace("_", ""), []).append(declared_name)
    column_map: dict[str, str] = {}
    # Each target taken, and the column that took it.
    taken: dict[str, str] = {}
    twice: list[tuple[str, str, str]] = []
    targets = [
        _default_target(layout, name, position, full_name_at=full_name_at)
        for position, name in enumerate(names)
    ]
    # A column named as consent is the consent: no newsletter's yes/no beside it.
    consent_named = bool(set(targets) & CONSENT_TARGETS)
    for position, (name, target) in enumerate(zip(names, targets, strict=True)):
        if target.startswith(TRAIT_PREFIX):
            key = target[len(TRAIT_PREFIX) :]
            alike = run_together.get(key.replace("_", ""), [])
            declared_name = declared_keys.get(key) or (
                alike[0] if len(alike) == 1 else None
            )
            target = TRAIT_PREFIX + (declared_name or key)
            if (
                declared_name is None
                and values is not None
                and not consent_named
                and TARGET_SUBSCRIBED not in taken
                and _is_newsletter_yes_no(layout, name, values[position])
            ):
                target = TARGET_SUBSCRIBED
            elif (
                declared_name is None
                and values is not None
                and TARGET_CHANGED_AT not in taken
                and _is_change_time(layout, name, values[position])
            ):
                target = TARGET_CHANGED_AT
            elif declared_name is not None and target in taken:
                # 'loyaltyTier' and 'LOYALTYTIER': a trait of its own beside the
                # declared one would keep the later column's values unchecked.
                twice.append((name, taken[target], declared_name))
                target = ""
            else:
                target = _trait_target_free(target, position, taken)
        elif target in taken:
            # One column per profile field, status and email; the first one wins.
            target = ""
        taken.setdefault(target, name)
        column_map[name] = target
    return column_map, twice


def _name_key(name: str) -> str:
    # "Unsubscribed (yes/no)" is an Unsubscribed column.
    key = column_key(name)
    return key.removesuffix("yesno") or key


def newsletter_named(name: str) -> bool:
    """Tell whether a column is named like a newsletter ("Newsletter (yes/no)")."""
    return _name_key(name) in NEWSLETTER_COLUMNS


def change_time_named(name: str) -> bool:
    """Tell whether a column is named like each row's change time ("Last Modified")."""
    return _name_key(name) in CHANGED_AT_COLUMNS


def layout_time_keys(layout: Layout) -> set[str]:
    """Return the keys of the columns a layout reads times from by name: its consent
    times and its change time (Mailchimp's OPTIN_TIME, Brevo's MODIFIED_TIME)."""
    names = (*layout.consent_times, layout.changed_at)
    return {column_key(name) for name in names if name}


def _is_newsletter_yes_no(layout: Layout, name: str, values: Collection[str]) -> bool:
    """Tell whether a column is a newsletter's yes/no: consent, by its name and values."""
    if layout.status is not None or not newsletter_named(name):
        return False
    keys = {yes_no_key(value) for value in values if value.strip()}
    return bool(keys) and keys <= YES_KEYS | NO_KEYS


def _is_change_time(layout: Layout, name: str, values: Collection[str]) -> bool:
    """Tell whether a column says when each row changed: by its name and values."""
    if layout.changed_at or not change_time_named(name):
        return False
    written = [value.strip() for value in values if value.strip()]
    return bool(written) and all(TIME_LIKE.fullmatch(value) for value in written)


def layout_columns_reserved(layout: Layout, names: list[str]) -> list[str]:
    """Return the columns the default map ignores because their trait name is reserved."""
    full_name_at = _full_name_position(names)
    return [
        name
        for position, name in enumerate(names)
        if _trait_name_reserved(
            _default_target(layout, name, position, full_name_at=full_name_at)
        )
    ]


def _full_name_position(names: list[str]) -> int | None:
    """Return the column whose full name is split by default, if any.

    The first column named like a full name ("Name", "Full name"). A first- or
    last-name column of the same file still wins wherever it has a value, and the
    split fills its blanks (see mapping.py).
    """
    keys = (column_key(name) for name in names)
    return next(
        (position for position, key in enumerate(keys) if key in FULL_NAME_COLUMNS),
        None,
    )


def _trait_target_free(target: str, position: int, taken: Container[str]) -> str:
    """Return a trait target no earlier column has, or "" for a reserved name."""
    if _trait_name_reserved(target):
        return ""
    # 'Favorite Color' and 'favorite_color' both read as favorite_color: the later
    # column is named by its position, as header_names names a repeated header,
    # within the length of a trait's name.
    name = target[len(TRAIT_PREFIX) :]
    free, suffix = target, ""
    while free in taken:
        suffix += f"_column_{position + 1}"
        kept = name[: max(0, TRAIT_NAME_MAX_CHARS - len(suffix))]
        free = f"{TRAIT_PREFIX}{kept}{suffix}"
    return free


def _trait_name_reserved(target: str) -> bool:
    return target.startswith(TRAIT_PREFIX) and trait_name_is_reserved(
        target[len(TRAIT_PREFIX) :]
    )


def _default_target(
    layout: Layout, name: str, position: int, *, full_name_at: int | None = None
) -> str:
    key = _name_key(name)
    if key in EMAIL_COLUMNS:
        return TARGET_EMAIL
    if key in layout.columns:
        return layout.columns[key]
    if key in PROFILE_COLUMNS:
        return PROFILE_COLUMNS[key]
    if position == full_name_at:
        return TARGET_FULL_NAME
    if key == TARGET_TAGS:
        return TARGET_TAGS
    if key in STATUS_COLUMNS and layout.status is None:
        return TARGET_STATUS
    if key in UNSUBSCRIBED_COLUMNS and layout.status is None:
        return TARGET_UNSUBSCRIBED
    if key in SUBSCRIBED_COLUMNS and layout.status is None:
        return TARGET_SUBSCRIBED
    return TRAIT_PREFIX + trait_key(name, position)


# Consent ---------------------------------------------------------------------------


def contacts_time_parse(text: str, date_format: str = "") -> datetime:
    """Read a time as written in an export; a naive one is in the import time zone.

    An export writes ISO times ("2025-03-31 14:05:00"); one saved again by Excel
    writes them in the machine's format, which is read in the file's declared date
    format, with or without the time of day ("31/03/2025 14:05").
    """
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        if not date_format:
            raise
        parsed = declared_time_parse(text.strip(), date_format)
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=ZoneInfo(settings.BESPOKE_IMPORT_TIME_ZONE))
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:
        # 0001-01-01T00:00:00+01:00, a CRM's "no date", is before year 1 in UTC.
        raise ValueError(f"{text.strip()!r} is out of the range of times") from exc


# What a status cell may say, as a marketer would write it; compared by column_key,
# so case, spaces and underscores do not matter.
STATUS_WORDS = (
    "subscribed",
    "unsubscribed",
    "cleaned",
    "bounced",
    "hard bounce",
    "not subscribed",
    "never subscribed",
    "suppressed",
)
# Klaviyo lists as SUPPRESSED a profile it will not email: a bounce, a spam
# complaint or a suppression by hand. None is the person's own unsubscribe, and a
# list must not lift it, so it reads as cleaned (and the report notes it).
SUPPRESSED_WORDS = {"suppressed"}
CLEANED_WORDS = {"bounced", "hardbounce", *SUPPRESSED_WORDS}
# A yes/no "unsubscribed" column: yes means the person left.
LEFT_WORDS = YES_KEYS
STAYED_WORDS = NO_KEYS
# What a refusal of a yes/no cell names: every word would take a paragraph a row.
YES_NO_SHOWN = (
    *("yes", "no", "true", "false", "1", "0", "y", "n"),
    "or yes and no in another European language (ja, nein, oui, non, sí, tak, nie…)",
)


class StatusUnknown(ValueError):
    """A consent cell holds a word that is none of the ones its column accepts."""

    def __init__(self, text: str, accepted: tuple[str, ...]) -> None:
        super().__init__(text)
        self.text = text.strip()
        self.accepted = accepted
        self.column = ""


@lru_cache(maxsize=256)
def status_read(text: str) -> SubscriptionStatus:
    """Read a status cell: our statuses by value or label, Klaviyo's words too."""
    wanted = column_key(text)
    for status in SubscriptionStatus:
        if wanted in {column_key(status.value), column_key(status.label)}:
            return status
    if wanted in CLEANED_WORDS:
        return SubscriptionStatus.CLEANED
    raise StatusUnknown(text, STATUS_WORDS)


def opted_in_read(text: str) -> SubscriptionStatus | None:
    """Read a yes/no 'subscribed' cell: yes is a subscription, no says nothing.

    A status word ("unsubscribed", "cleaned") is read as a status column reads it:
    a "Subscribed" column often holds them.
    """
    wanted = yes_no_key(text)
    if wanted in LEFT_WORDS:
        return SubscriptionStatus.SUBSCRIBED
    if wanted in STAYED_WORDS:
        return None
    try:
        return status_read(text)
    except StatusUnknown:
        raise StatusUnknown(text, YES_NO_SHOWN + STATUS_WORDS) from None


def blacklisted_read(text: str) -> SubscriptionStatus:
    """Read a yes/no 'unsubscribed' cell such as Brevo's EMAIL_BLACKLISTED."""
    wanted = yes_no_key(text)
    if wanted in LEFT_WORDS:
        return SubscriptionStatus.UNSUBSCRIBED
    if wanted in STAYED_WORDS:
        return SubscriptionStatus.SUBSCRIBED
    raise StatusUnknown(text, YES_NO_SHOWN)


def _first_time(
    cell: Callable[[str], str], names: tuple[str, ...], date_format: str
) -> datetime | None:
    for name in names:
        text = cell(name)
        if not text:
            continue
        try:
            return contacts_time_parse(text, date_format)
        except ValueError:
            continue
    return None


def _ip_or_none(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def status_is_suppressed(text: str) -> bool:
    """Tell whether a status cell says suppressed, which status_read reads as cleaned."""
    return column_key(text) in SUPPRESSED_WORDS


@lru_cache(maxsize=64)
def _wording(template: str, listed_as: str) -> str:
    return template.format(status=listed_as)


# Where a consent record keeps the change time that dated it: its column, and the
# time as written.
CHANGED_COLUMN_EVIDENCE = "row_changed_column"
CHANGED_AT_EVIDENCE = "row_changed_at"
# Where it keeps the consent column a row's status was read from, and its cell.
CONSENT_COLUMN_EVIDENCE = "consent_column"
CONSENT_CELL_EVIDENCE = "consent_cell"


@lru_cache(maxsize=16)
def _evidence_keys(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(column_key(name) for name in names)


@lru_cache(maxsize=64)
def _wording_dated_by(template: str, column: str) -> str:
    # Braces in a header name must not read as the template's placeholders.
    column = column.replace("{", "{{").replace("}", "}}")
    if template.endswith(UNDATED_WORDING_END):
        kept = template.removesuffix(UNDATED_WORDING_END)
        return f"{kept}{DATED_WORDING_END.format(column=column)}"
    return f"{template} Dated by the row's “{column}” column."


@dataclass(frozen=True, slots=True)
class RowChanged:
    """When a record says its row last changed: the column mapped as its change time."""

    column: str
    written: str
    at: datetime


def consent_fact(
    layout: Layout,
    *,
    record: int,
    status: SubscriptionStatus,
    cell: Callable[[str], str | None],
    now: datetime,
    suppressed: bool = False,
    date_format: str = "",
    changed: RowChanged | None = None,
    read_from: tuple[str, str] | None = None,
) -> ConsentFact:
    """Return the consent fact one record states; `cell` reads a column by name.

    `suppressed` says the status cell read "suppressed": the wording then quotes
    the file's word, not the cleaned status it is recorded as. `changed` is when
    the row last changed, which dates the consent where the layout's own consent
    times say nothing: the status held by then at the latest, as Mailchimp's
    LAST_CHANGED dates its subscriptions. `read_from` is the consent column the
    status was read from and its cell as written, kept as evidence.
    """
    evidence: dict[str, Any] = {"layout": layout.name, "record": record}
    if layout.status is None:
        evidence["status"] = status.value
    # Each cell once: a column the layout keeps as evidence already is not copied.
    kept = _evidence_keys(layout.evidence)
    if read_from is not None and column_key(read_from[0]) not in kept:
        evidence[CONSENT_COLUMN_EVIDENCE], evidence[CONSENT_CELL_EVIDENCE] = read_from
    for name in layout.evidence:
        value = cell(name)
        if value is not None:
            evidence[name] = value

    present = lambda name: cell(name) or ""  # noqa: E731 - a one-use reader
    occurred_at = _first_time(present, layout.consent_times, date_format)
    wording_template = layout.wording
    if occurred_at is None and changed is not None:
        occurred_at = changed.at
        if column_key(changed.column) not in kept:
            evidence[CHANGED_COLUMN_EVIDENCE] = changed.column
            evidence[CHANGED_AT_EVIDENCE] = changed.written
        wording_template = _wording_dated_by(layout.wording, changed.column)
    dated = occurred_at is not None
    if not dated:
        # The file does not say when; the time of the import is the honest bound.
        occurred_at = now
        evidence["occurred_at_is_import_time"] = True
    elif occurred_at > now:
        # Nothing in the file happened after it was imported: a wrong clock or a
        # typo. Kept as written, and recorded as of the import, or it would head the
        # history above withdrawals it never undid (as consent_record does).
        evidence[OCCURRED_AT_CLAIMED] = occurred_at.isoformat()
        occurred_at = now

    ip_address = None
    if layout.status == SubscriptionStatus.SUBSCRIBED:
        raw_ip = present("CONFIRM_IP") or present("OPTIN_IP")
        ip_address = _ip_or_none(raw_ip) if raw_ip else None
    listed_as = "suppressed" if suppressed else status.label.lower()
    wording = _wording(wording_template, listed_as)
    return ConsentFact(
        status, occurred_at, ip_address, wording, evidence, dated, suppressed
    )
