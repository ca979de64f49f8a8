"""Forms of the marketer pages about profiles and imports."""

from django import forms
from django.core.files.uploadedfile import UploadedFile

from profiles.models import SubscriptionStatus

CONTACT_FILE_MAX_BYTES = 50 * 1024 * 1024


class ProfileSearchForm(forms.Form):
    q = forms.CharField(required=False, label="Search", max_length=200)
    status = forms.ChoiceField(
        required=False,
        choices=[("", "Any status"), *SubscriptionStatus.choices],
    )


class ContactImportForm(forms.Form):
    file = forms.FileField(
        label="Contact file",
        help_text=(
            "A Mailchimp audience export CSV (subscribed, unsubscribed or cleaned) "
            "or any CSV with an email column."
        ),
    )

    def clean_file(self) -> UploadedFile:
        upload = self.cleaned_data["file"]
        if upload.size > CONTACT_FILE_MAX_BYTES:
            limit = CONTACT_FILE_MAX_BYTES // (1024 * 1024)
            raise forms.ValidationError(f"The file is larger than {limit} MB.")
        return upload
