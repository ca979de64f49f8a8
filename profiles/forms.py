"""Forms of the marketer pages about profiles and imports."""

from django import forms
from django.core.files.uploadedfile import UploadedFile

from profiles.importing.layouts import (
    BREVO_BLACKLIST,
    PROFILE_FIELDS,
    TARGET_CHANGED_AT,
    TARGET_EMAIL,
    TARGET_FULL_NAME,
    TARGET_STATUS,
    TARGET_SUBSCRIBED,
    TARGET_TAGS,
    TARGET_UNSUBSCRIBED,
    TRAIT_PREFIX,
)
from profiles.importing.mapping import column_map_check
from profiles.importing.reading import ENCODINGS, ImportFormatError, column_key
from profiles.models import Profile, SubscriptionStatus
from profiles.selectors import profile_by_user_id, profile_find

CONTACT_FILE_MAX_BYTES = 50 * 1024 * 1024


class ProfileSearchForm(forms.Form):
    q = forms.CharField(required=False, label="Search", max_length=200)
    status = forms.ChoiceField(
        required=False,
        choices=[("", "Any status"), *SubscriptionStatus.choices],
    )


class ProfileMergeForm(forms.Form):
    """The other profile a marketer merges into this one, however it is named."""

    other = forms.CharField(
        label="The other profile",
        max_length=254,
        help_text=(
            "Its profile id (42 or #42), email address, userId or anonymousId. "
            "You see both profiles, and which one is kept, before anything moves."
        ),
    )

    def __init__(self, *args, profile: Profile, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.profile = profile

    def clean_other(self) -> Profile:
        written = self.cleaned_data["other"].strip()
        other = profile_find(written)
        if other is None:
            raise forms.ValidationError(_not_found_message(written))
        if other.pk == self.profile.pk:
            raise forms.ValidationError(
                "That is this profile itself: name another profile to merge into it."
            )
        self._both_named_check(written, other)
        return other

    def _both_named_check(self, written: str, other: Profile) -> None:
        # Digits are a profile id first: a shop whose userIds are numbers may mean
        # the customer. Merging the wrong person cannot be undone, so ask.
        if not (written.isascii() and written.isdigit()):
            return
        holder = profile_by_user_id(written)
        if holder is None or holder.pk in (other.pk, self.profile.pk):
            return
        raise forms.ValidationError(
            f"{written} names two profiles: profile #{other.pk} "
            f"({_profile_shown(other)}) by its id, and profile #{holder.pk} "
            f"({_profile_shown(holder)}) by its userId. Write #{other.pk} or "
            f"#{holder.pk} to say which."
        )


def _profile_shown(profile: Profile) -> str:
    return profile.address_shown or "no email address"


def _not_found_message(written: str) -> str:
    """Say what was looked for, as profile_find reads what was written."""
    number = written.removeprefix("#")
    gone = "It may have been merged into another profile or erased."
    if written.startswith("#"):
        return f"No profile has the id {number}. {gone}"
    if number.isascii() and number.isdigit():
        return f"No profile has the id or userId {number}. {gone}"
    if "@" in written:
        return f"No profile has the email address, userId or anonymousId {written}."
    return f"No profile has the userId or anonymousId “{written}”."


class ContactImportForm(forms.Form):
    file = forms.FileField(
        label="Contact file",
        help_text=(
            "A Mailchimp, Klaviyo or Brevo export, or any CSV or XLSX file with an "
            "email column. You choose what each column means next."
        ),
    )

    def clean_file(self) -> UploadedFile:
        upload = self.cleaned_data["file"]
        if upload.size > CONTACT_FILE_MAX_BYTES:
            limit = CONTACT_FILE_MAX_BYTES // (1024 * 1024)
            raise forms.ValidationError(f"The file is larger than {limit} MB.")
        return upload


# The date formats a marketer may declare; dates are never guessed.
DATE_FORMATS = [
    ("", "ISO 8601 only (2025-03-31)"),
    ("%d/%m/%Y", "Day first: 31/03/2025"),
    ("%m/%d/%Y", "Month first: 03/31/2025"),
    ("%d.%m.%Y", "Day first with dots: 31.03.2025"),
    ("%d-%m-%Y", "Day first with dashes: 31-03-2025"),
    ("%Y-%m-%d", "Year first: 2025-03-31"),
]


# What Brevo's EMAIL_BLACKLISTED says: its "No" is that the contact may be emailed.
BLACKLIST_LABEL = (
    "Unsubscribed? (Brevo's yes / no: yes unsubscribes, no says the contact may be "
    "emailed, a subscription)"
)


def column_choices(
    default_target: str, traits: list[tuple[str, str]], *, column: str = ""
) -> list[tuple[str, str]]:
    """Return the targets a column may be mapped to, its own new trait among them."""
    unsubscribed = (
        BLACKLIST_LABEL
        if column_key(column) == BREVO_BLACKLIST
        else "Unsubscribed? (yes / no; no changes nothing)"
    )
    choices = [(name, label) for name, label in PROFILE_FIELDS.items()]
    choices.append((TARGET_FULL_NAME, "Full name (split into first and last)"))
    declared = {f"{TRAIT_PREFIX}{name}" for name, _ in traits}
    choices += [
        (f"{TRAIT_PREFIX}{name}", f"Trait {name} ({kind})") for name, kind in traits
    ]
    if default_target.startswith(TRAIT_PREFIX) and default_target not in declared:
        new = default_target[len(TRAIT_PREFIX) :]
        choices.append((default_target, f"New trait {new}"))
    choices += [
        (TARGET_TAGS, "Tags (comma-separated)"),
        (TARGET_STATUS, "Subscription status"),
        (TARGET_UNSUBSCRIBED, unsubscribed),
        (TARGET_SUBSCRIBED, "Subscribed? (yes / no; no changes nothing)"),
        (
            TARGET_CHANGED_AT,
            "Last changed (of one address's rows, the newest one's values win; "
            "dates each row's consent)",
        ),
        ("", "Ignore this column"),
    ]
    return choices


class ContactImportMappingForm(forms.Form):
    """One select per column of the uploaded file, and the declared date format."""

    date_format = forms.ChoiceField(
        choices=DATE_FORMATS,
        required=False,
        label="Dates in this file are written",
        help_text=(
            "A date trait also takes a day and month with no year, such as a "
            "birthday, in the same order: 07/14 when the month comes first, as in "
            "Mailchimp's Birthday column."
        ),
    )

    decimal_comma = forms.BooleanField(
        required=False,
        label="Numbers in this file are written with a decimal comma (1.234,5)",
        help_text=(
            "As European spreadsheets write them: 1.000 is a thousand and 2,5 two "
            "and a half. Otherwise 1.000 is one. A CSV file's number cells only: a "
            "workbook's numbers are numbers already."
        ),
    )

    # The samples above are read in it: "Read it again" shows them anew.
    encoding = forms.ChoiceField(
        choices=[("", "the encoding found in the file"), *ENCODINGS.items()],
        required=False,
        label="The file's text is read as",
    )

    def __init__(
        self,
        *args,
        names: list[str],
        column_map: dict[str, str],
        traits: list[tuple[str, str]],
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.names = names
        initial = kwargs.get("initial", {})
        found = initial.get("found_encoding")
        if found:
            # Windows-1252 is read when a file is not UTF-8: it is no finding.
            how = (
                "read as the file is not UTF-8: choose its encoding if letters look "
                "wrong"
                if initial.get("encoding_guessed")
                else "found in the file"
            )
            self.fields["encoding"].choices = [
                ("", f"{found} ({how})"),
                *ENCODINGS.items(),
            ]
        for position, name in enumerate(names):
            default = column_map.get(name, "")
            self.fields[f"column_{position}"] = forms.ChoiceField(
                label=name or f"Column {position + 1}",
                choices=column_choices(default, traits, column=name),
                initial=default,
                required=False,
            )

    def clean(self) -> dict:
        cleaned = super().clean()
        targets = [cleaned.get(f"column_{i}", "") for i in range(len(self.names))]
        if targets.count(TARGET_EMAIL) != 1:
            raise forms.ValidationError(
                "Choose exactly one column as the email address."
            )
        try:
            # Names the two columns that would share a field, tags or a trait.
            column_map_check(dict(zip(self.names, targets, strict=True)))
        except ImportFormatError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return cleaned

    def column_map(self) -> dict[str, str]:
        column_map: dict[str, str] = {}
        for position, name in enumerate(self.names):
            column_map.setdefault(name, self.cleaned_data.get(f"column_{position}", ""))
        return column_map
