"""Country codes grouped by continent, so rules can say 'lives in Europe'."""

# ISO 3166-1 alpha-2 codes; transcontinental countries (TR, RU, CY, GE, AZ, KZ) are
# counted in Europe, as most marketing tools and the EU's own statistics do for TR/CY.
CONTINENTS: dict[str, frozenset[str]] = {
    "Europe": frozenset(
        "AD AL AT AX AZ BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GE GG GI GR HR HU "
        "IE IM IS IT JE KZ LI LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK "
        "SM TR UA VA XK".split()
    ),
    "North America": frozenset(
        "AG AI AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY LC MF "
        "MQ MS MX NI PA PM PR SV SX TC TT US VC VG VI".split()
    ),
    "South America": frozenset("AR BO BR CL CO EC FK GF GY PE PY SR UY VE".split()),
    "Asia": frozenset(
        "AE AF AM BD BH BN BT CN HK ID IL IN IQ IR JO JP KG KH KP KR KW LA LB LK MM MN "
        "MO MV MY NP OM PH PK PS QA SA SG SY TH TJ TL TM TW UZ VN YE".split()
    ),
    "Africa": frozenset(
        "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR "
        "LS LY MA MG ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN "
        "TZ UG YT ZA ZM ZW".split()
    ),
    "Oceania": frozenset(
        "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TO TV UM VU WF WS".split()
    ),
}


# How the segment builder names a continent whose members a marketer may not guess.
CONTINENT_LABELS = {
    "Europe": "Europe (with Turkey, Russia, Cyprus, Georgia, Azerbaijan, Kazakhstan)",
}


def continent_of(country_code: str) -> str:
    """Return the continent of a 2-letter country code, or '' when unknown."""
    code = (country_code or "").upper()
    for continent, codes in CONTINENTS.items():
        if code in codes:
            return continent
    return ""
