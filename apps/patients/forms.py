from datetime import UTC, date, datetime, time
from typing import Any

from django import forms
from django.utils import timezone

from .specs import SPECS_DIR

MAX_UPLOAD_BYTES = 50 * 1024 * 1024


def spec_choices() -> list[tuple[str, str]]:
    return [(p.stem, p.stem) for p in sorted(SPECS_DIR.glob("*.yaml"))]


class CsvImportForm(forms.Form):
    spec = forms.ChoiceField(label="Use case", choices=spec_choices,
                             help_text="The file must have the columns of this use case's spec (ml/specs/).")
    csv_file = forms.FileField(label="CSV file", help_text="UTF-8 CSV with a header row. Imported all-or-nothing.")
    source = forms.SlugField(initial="csv", max_length=50,
                             help_text="Name of the system the extract comes from (stored as csv:<name>).")
    effective_at = forms.DateTimeField(required=False, label="Measured at",
                                       help_text="When the values were measured (default: now). "
                                                 "Format YYYY-MM-DD HH:MM, in UTC.")

    def clean_csv_file(self) -> Any:
        upload = self.cleaned_data["csv_file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"The file is {upload.size} bytes; at most {MAX_UPLOAD_BYTES} are accepted.")
        if not upload.name.lower().endswith(".csv"):
            raise forms.ValidationError("Upload a .csv file (comma-separated, header row first).")
        return upload


# --- Clinician pages ----------------------------------------------------------------------------------------------


class PatientSearchForm(forms.Form):
    q = forms.CharField(
        label="Patient identifier", required=False, max_length=64, strip=True,
        help_text="The pseudonymous identifier as stored (or its beginning); leave empty to list every patient.",
        error_messages={"max_length": "Patient identifier: at most %(limit_value)d characters (you entered "
                                      "%(show_value)d)."},
    )


class OutcomeForm(forms.Form):
    """The observed outcome of a predicted condition, recorded later by a clinician (for realised performance)."""

    present = forms.TypedChoiceField(
        label="Was the condition present?",
        choices=[("yes", "Yes: the condition was confirmed"), ("no", "No: the condition was ruled out")],
        coerce=lambda value: value == "yes",
        widget=forms.RadioSelect,
        error_messages={
            "required": "Was the condition present: choose yes or no.",
            "invalid_choice": "Was the condition present: choose yes or no.",
        },
    )
    onset_date = forms.DateField(
        label="Date of onset or diagnosis (optional)",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Not in the future. Leave empty if unknown.",
        error_messages={"invalid": "Date of onset or diagnosis: enter a date as YYYY-MM-DD, e.g. 2026-03-01."},
    )

    def clean_onset_date(self) -> date | None:
        value: date | None = self.cleaned_data.get("onset_date")
        today = timezone.localdate()
        if value is not None and value > today:
            raise forms.ValidationError(
                f"Date of onset or diagnosis: {value:%Y-%m-%d} is in the future; enter {today:%Y-%m-%d} or earlier.")
        return value

    def onset_at(self) -> datetime | None:
        """The onset date as an aware datetime (midnight UTC), as `outcome_record` expects."""
        value: date | None = self.cleaned_data.get("onset_date")
        return None if value is None else datetime.combine(value, time.min, tzinfo=UTC)
