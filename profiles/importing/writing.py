"""Writing merged rows in batches: profiles, tags, consent records and suppressions.

One batch costs a handful of queries whatever its size: erased people and existing
profiles are looked up for the whole batch, new profiles are inserted with
bulk_create, changed ones saved with bulk_update, and tags, consent records and
suppressions inserted in bulk. The per-row rules are those of a single write: a
blank never erases a value, the newest consent fact moves the status, a consent fact
already on record from the same source is not appended twice, and a list never
subscribes again someone who unsubscribed or was cleaned. A cell never replaces a
trait held in parts (an address a site sent as an object). The caller holds the
transaction.
"""

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models.functions import Lower
from django.utils import timezone

from profiles.emails import InvalidEmail, email_normalize, traits_flagged
from profiles.importing.layouts import OPT_IN_TRAITS, ConsentFact
from profiles.importing.mapping import (
    TAG_NOTE_KINDS,
    ContactRow,
    ParsedContacts,
    Rejection,
    cell_quoted,
    contacts_tag_notes,
    row_written,
)
from profiles.models import (
    SUPPRESSED_COUNTED,
    ConsentRecord,
    Profile,
    ProfileTag,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from profiles.names import TAG_MAX_CHARS, tags_distinct
from profiles.services import (
    OCCURRED_AT_CLAIMED,
    WITHDRAWN_STATUSES,
    StatusHolder,
    consent_status_move,
    suppression_hash,
)
from profiles.value_times import value_time_text, values_imported

ERASED_MESSAGE = "This person was erased on request; their data is not imported again."
# A fact its source dated after it arrived is recorded as of its arrival, and the
# time written is kept in its evidence (layouts.consent_fact, consent_record).
CLAIMED_LOOKUP = f"evidence__{OCCURRED_AT_CLAIMED}"


def suppression_reason(fact: ConsentFact) -> str:
    """Why a cleaned fact puts its address on the suppression list."""
    if fact.suppressed:
        return SuppressionReason.IMPORTED
    return SuppressionReason.HARD_BOUNCE


@dataclass
class BatchOutcome:
    created: int = 0
    updated: int = 0
    # The subscription status each row's profile holds once the batch is written;
    # SUPPRESSED_COUNTED for a subscribed one on the suppression list.
    statuses: Counter = field(default_factory=Counter)
    # The keys of the batch's addresses on the suppression list (suppressions_read).
    listed: set[str] = field(default_factory=set)
    erased: list[Rejection] = field(default_factory=list)
    duplicates_erased: int = 0
    notes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PendingWrites:
    """What one batch will insert once its new profiles have ids."""

    consents: list[tuple[Any, ConsentFact]] = field(default_factory=list)
    # (address key, SuppressionReason) of each address to put on the list.
    suppressed: list[tuple[str, str]] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)


def contact_rows_write(
    rows: list[ContactRow], *, source: str, filename: str, import_id: int | None = None
) -> BatchOutcome:
    """Write one batch of merged rows; return its counts, erased rows and notes."""
    outcome = BatchOutcome()
    rows, listed = suppressions_read(rows, outcome)
    if not rows:
        return outcome

    existing = _profiles_find([row.email.key for row in rows])
    at = value_time_text(timezone.now())
    recorded = _facts_recorded([p.pk for p in existing.values()], source=source)
    pending = PendingWrites()
    new_profiles, changed_profiles = [], []
    for row in rows:
        profile = existing.get(row.email.key)
        if profile is None:
            profile = _profile_new(row)
            new_profiles.append(profile)
        else:
            in_parts = [name for name in row.traits if _in_parts(profile, name)]
            traits_in_parts_keep(row, in_parts, outcome)
        # Consent first: a refused subscription takes its opt-in traits off the row.
        changed = consents_apply(profile, row, recorded, pending, outcome)
        changed |= _profile_fill(profile, row, is_new=profile.pk is None, at=at)
        if changed and profile.pk is not None:
            changed_profiles.append(profile)
            pending.changed |= changed

    _profiles_save(new_profiles, changed_profiles, pending.changed)
    origin = {"file": filename, "import": import_id}
    _related_insert(rows, existing, new_profiles, pending, source, origin, listed)
    outcome.created = len(new_profiles)
    outcome.updated = len(rows) - len(new_profiles)
    return outcome


def suppressions_read(
    rows: list[ContactRow], outcome: BatchOutcome
) -> tuple[list[ContactRow], set[str]]:
    """Read the batch's addresses on the suppression list.

    Return the rows without those of people erased on request (an old file must
    not revive them), and the keys of the other listed addresses: their profiles
    are marked suppressed, as segment rules and the builder's preview read the mark.
    """
    # Hashing every address costs more than this query; a new list holds nothing.
    if not Suppression.objects.exists():
        return rows, set()
    hashes = {suppression_hash(row.email.key): row for row in rows}
    found = list(
        Suppression.objects.filter(email_hash__in=hashes).values_list(
            "email_hash", "reason"
        )
    )
    erased = {h for h, reason in found if reason == SuppressionReason.ERASURE}
    listed = {hashes[h].email.key for h, reason in found if h not in erased}
    outcome.listed = listed
    if not erased:
        return rows, listed

    for email_hash in erased:
        row = hashes[email_hash]
        outcome.duplicates_erased += len(row.records) - 1
        # The address itself is left out of the report, which would otherwise keep it.
        outcome.erased.extend(
            Rejection(record, line, "", "erased", ERASED_MESSAGE)
            for record, line in zip(row.records, row.lines, strict=True)
        )
    gone = {hashes[email_hash].email.key for email_hash in erased}
    return [row for row in rows if row.email.key not in gone], listed


def report_erased_leave_out(parsed: ParsedContacts) -> None:
    """Leave the people erased on request out of a file's report, before it is kept.

    Their rows are left out when written (suppressions_read), but the report of
    the file as read would still quote their address, a refused value or a merge
    of their records: a refused record of theirs says only that it was erased, and
    their notes and refused fields are dropped. A note on a tag that others held
    too counts and names only the others' records.
    """
    if not Suppression.objects.filter(reason=SuppressionReason.ERASURE).exists():
        return
    # Each address as written in the report, by the key it normalises to, once.
    written = {r.email for r in parsed.rejections + parsed.field_rejections}
    written |= {note.get("email") or "" for note in parsed.notes}
    key_of = {text: _key(text) for text in written}
    keys = {row.email.key for row in parsed.rows} | set(key_of.values())
    keys.discard("")
    hashes = {suppression_hash(key): key for key in keys}
    erased = {
        hashes[email_hash]
        for email_hash in Suppression.objects.filter(
            email_hash__in=hashes, reason=SuppressionReason.ERASURE
        ).values_list("email_hash", flat=True)
    }
    if not erased:
        return

    records = {n for row in parsed.rows if row.email.key in erased for n in row.records}
    parsed.rejections = [
        Rejection(r.record, r.line, "", "erased", ERASED_MESSAGE)
        if key_of[r.email] in erased
        else r
        for r in parsed.rejections
    ]
    records |= {r.record for r in parsed.rejections if r.reason == "erased"}
    parsed.field_rejections = [
        r for r in parsed.field_rejections if key_of[r.email] not in erased
    ]
    parsed.notes = [
        note
        for note in parsed.notes
        if note.get("record") not in records
        and key_of[note.get("email") or ""] not in erased
        and not _only_of(note, records)
    ]
    parsed.notes = _tag_notes_recount(parsed, erased)


def _tag_notes_recount(parsed: ParsedContacts, erased: set[str]) -> list[dict]:
    """Return the notes with each tag note counted again without the erased records.

    Those records are not imported at all (the report says so of each): a tag
    note that counted them would speak of tags left off profiles never written.
    """
    recounted = contacts_tag_notes(parsed, leave_out=erased)
    notes = []
    for note in parsed.notes:
        if note.get("kind") not in TAG_NOTE_KINDS:
            notes.append(note)
        elif recounted:
            # Where the file's tag notes were.
            notes += recounted
            recounted = []
    return notes + recounted


def _only_of(note: dict, records: set[int]) -> bool:
    """Tell whether a note about several records names them all, and all are these.

    A tag cut in two records of one erased person speaks of that person alone;
    one that more people's records share names no one.
    """
    named = note.get("records") or []
    every_one = note.get("count", len(named)) == len(named)
    return bool(named) and every_one and set(named) <= records


def _key(written: str) -> str:
    try:
        return email_normalize(written).key
    except InvalidEmail:
        return ""


def _profiles_find(keys: list[str]) -> dict[str, Profile]:
    # Lower() matches the unique index, so a row stored with capitals by hand (or by
    # an older import) is found instead of colliding with it. The rows are locked
    # (in pk order, as event processing locks them) until the batch commits: a
    # consent or trait written meanwhile by a webhook or an unsubscribe link is
    # read before the batch decides, never overwritten by it.
    found = (
        Profile.objects.select_for_update()
        .annotate(email_key=Lower("email"))
        .filter(email_key__in=keys)
        .order_by("pk")
    )
    return {profile.email_key: profile for profile in found}


def _facts_recorded(
    profile_ids: list[int], *, source: str
) -> set[tuple[int, str, datetime]]:
    if not profile_ids:
        return set()
    found = ConsentRecord.objects.filter(
        profile_id__in=profile_ids, source=source
    ).values_list("profile_id", "status", "occurred_at", CLAIMED_LOOKUP)
    return {
        (profile_id, status, dated_at(occurred_at, claimed))
        for profile_id, status, occurred_at, claimed in found
    }


def dated_at(occurred_at: datetime, claimed: str | None) -> datetime:
    """Return when a consent fact's source dated it: its claimed time, if it has one.

    A fact recorded as of its import, for a time written in the future, is known
    again by that time when the same file is imported later: by its own time it
    would be new at every import.
    """
    return datetime.fromisoformat(claimed) if claimed else occurred_at


def _in_parts(profile: Profile, name: str) -> bool:
    return isinstance(profile.traits.get(name), dict)


def traits_in_parts_keep(
    row: ContactRow, names: list[str], outcome: BatchOutcome
) -> None:
    """Take off the row the traits its profile holds in parts, noting each one.

    A site's identify sends an address as an object (street, postal code,
    city...); a file's cell is one text, which would replace every part of it.
    """
    for name in names:
        value = row.traits.pop(name)
        outcome.notes.append(_in_parts_note(row, name, value))


def _in_parts_note(row: ContactRow, name: str, value: Any) -> dict[str, Any]:
    record, line = row.records[0], row.lines[0]
    shown = cell_quoted(value) if isinstance(value, str) else repr(value)
    return {
        "kind": "structured_trait_kept",
        "record": record,
        "line": line,
        "email": row_written(row, record),
        "trait": name,
        "message": (
            f"Record {record} (line {line}): {name} {shown} was not imported: "
            f"the profile holds {name} in parts, as a site sends an address "
            "(street, postal code, city...), which one text would replace; the "
            "parts are kept."
        ),
    }


def _profile_new(row: ContactRow) -> Profile:
    return Profile(email=row.email.key, email_display=row.email.display, traits={})


def _profile_fill(
    profile: Profile, row: ContactRow, *, is_new: bool, at: str
) -> set[str]:
    """Copy the row's values onto the profile; a blank never erases what is there.

    Except the region of a row that moves the person to another city or country
    without naming one: the old region is not the new place's.
    """
    changed = set()
    fields = dict(row.fields)
    moved = any(
        name in fields and fields[name].lower() != getattr(profile, name).lower()
        for name in ("city", "country_code")
    )
    if moved and "region" not in fields:
        fields["region"] = ""
    # What the row changes is dated by the import (profiles/value_times.py).
    restated = [
        name for name, value in fields.items() if getattr(profile, name) != value
    ]
    restated += [
        key
        for key, value in row.traits.items()
        if profile.traits.get(key, _NONE) != value
    ]
    if restated:
        values_imported(profile, restated, at)
        changed.add("value_times")
    for name, value in fields.items():
        if getattr(profile, name) != value:
            setattr(profile, name, value)
            changed.add(name)

    if profile.email_display != row.email.display:
        profile.email_display = row.email.display
        changed.add("email_display")

    traits = traits_flagged({**profile.traits, **row.traits}, row.email)
    if traits != profile.traits:
        profile.traits = traits
        changed.add("traits")
    return set() if is_new else changed


_NONE = object()


def consents_apply(
    profile: StatusHolder,
    row: ContactRow,
    recorded: set[tuple[int, str, datetime]],
    pending: PendingWrites,
    outcome: BatchOutcome,
) -> set[str]:
    """Decide each consent fact's record and its effect on the status, in time order.

    A list never subscribes again someone who left: such a fact is not recorded
    (it is no consent) and the report notes it. A fact the file does not date (its
    time is the import's) is recorded only when it changes the status, and an
    undated subscription leaves the status undated, so that any dated fact, such as
    an unsubscribe that arrives later but happened earlier, outranks it.
    """
    changed = set()
    for fact in sorted(row.consents, key=lambda fact: fact.occurred_at):
        kept = profile.subscription_status
        if (fact.status in LIFTS_NOTHING and kept in WITHDRAWN_STATUSES) or (
            # "Never subscribed" says the list had no consent, not that the
            # person withdrew one given elsewhere.
            fact.status == SubscriptionStatus.NOT_SUBSCRIBED
            and kept == SubscriptionStatus.SUBSCRIBED
        ):
            outcome.notes.append(_kept_note(profile, row, fact, kept))
            if fact.status == SubscriptionStatus.SUBSCRIBED:
                row.traits = {
                    name: value
                    for name, value in row.traits.items()
                    if name not in OPT_IN_TRAITS
                }
            continue
        if fact.status == SubscriptionStatus.CLEANED:
            pending.suppressed.append((row.email.key, suppression_reason(fact)))

        # The same fact from the same source is already on record when a file is
        # imported again; appending it twice would only blur the history.
        said_at = dated_at(fact.occurred_at, fact.evidence.get(OCCURRED_AT_CLAIMED))
        marker = (profile.pk, fact.status.value, said_at)
        if profile.pk is not None and marker in recorded:
            continue
        moved = _status_move(profile, fact)
        if not fact.dated and not moved:
            continue
        recorded.add(marker)
        pending.consents.append((profile, fact))
        changed |= moved
    status = profile.subscription_status
    if status == SubscriptionStatus.SUBSCRIBED and row.email.key in outcome.listed:
        status = SUPPRESSED_COUNTED  # never emailed, whatever the status
    outcome.statuses[status] += 1
    return changed


def _status_move(profile: StatusHolder, fact: ConsentFact) -> set[str]:
    moved = consent_status_move(
        profile,
        status=fact.status,
        occurred_at=fact.occurred_at,
        dated=fact.dated,
        from_import=True,
    )
    return {"subscription_status", "subscription_changed_at"} if moved else set()


# What a list says that never undoes an unsubscribe or a cleaned address.
LIFTS_NOTHING = {SubscriptionStatus.SUBSCRIBED, SubscriptionStatus.NOT_SUBSCRIBED}


def _kept_note(
    profile: StatusHolder, row: ContactRow, fact: ConsentFact, kept: str
) -> dict[str, Any]:
    record = fact.evidence["record"]
    who = (
        "an address that bounced"
        if kept == SubscriptionStatus.CLEANED
        else "someone who left"
    )
    why = (
        f"an import never subscribes again {who}"
        if fact.status == SubscriptionStatus.SUBSCRIBED
        else f"{who} is not one that never subscribed"
    )
    if kept == SubscriptionStatus.SUBSCRIBED:
        why = 'a list\'s "never subscribed" does not undo a subscription on record'
    return {
        "kind": "kept_status",
        # The record's address as written; the message names the profile's.
        "email": row_written(row, record),
        "record": record,
        "status": kept,
        "message": f"Record {record}: {profile.email} stays {kept}; {why}.",
    }


def _profiles_save(
    new_profiles: list[Profile], changed_profiles: list[Profile], fields: set[str]
) -> None:
    if new_profiles:
        Profile.objects.bulk_create(new_profiles)
    if changed_profiles:
        now = timezone.now()
        for profile in changed_profiles:
            profile.updated_at = now
        Profile.objects.bulk_update(
            changed_profiles, sorted(fields | {"updated_at"}), batch_size=500
        )


def _related_insert(
    rows: list[ContactRow],
    existing: dict[str, Profile],
    new_profiles: list[Profile],
    pending: PendingWrites,
    source: str,
    origin: dict[str, Any],
    listed: set[str],
) -> None:
    by_key = existing | {profile.email: profile for profile in new_profiles}
    tags = [
        ProfileTag(profile=by_key[row.email.key], name=name)
        for row in rows
        for name in tags_distinct(name[:TAG_MAX_CHARS] for name in row.tags)
    ]
    ProfileTag.objects.bulk_create(tags, ignore_conflicts=True)

    ConsentRecord.objects.bulk_create(
        [_consent_record(p, fact, source, origin) for p, fact in pending.consents]
    )
    Suppression.objects.bulk_create(
        [
            Suppression(
                email_hash=suppression_hash(key),
                reason=reason,
                source=source,
            )
            for key, reason in pending.suppressed
        ],
        ignore_conflicts=True,
    )
    # As suppression_add does: the flag rules and counts read while the list holds it.
    suppressed = {key for key, _ in pending.suppressed} | listed
    suppressed_ids = [by_key[key].pk for key in suppressed]
    Profile.objects.filter(pk__in=suppressed_ids, suppressed_at=None).update(
        suppressed_at=timezone.now()
    )


def _consent_record(
    profile: Profile, fact: ConsentFact, source: str, origin: dict[str, Any]
) -> ConsentRecord:
    return ConsentRecord(
        profile=profile,
        status=fact.status,
        source=source,
        occurred_at=fact.occurred_at,
        ip_address=fact.ip_address or None,
        wording=fact.wording,
        # The file and the import it came in: the consent's proof names both.
        evidence={**origin, **fact.evidence},
        address=profile.email or "",
    )
