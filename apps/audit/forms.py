"""The one filter form for audit events, used by the auditor pages, the API and `export_audit`."""

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django import forms
from django.utils.dateparse import parse_date, parse_datetime

from .models import AuditEvent
from .selectors import AuditEventFilters

DATE_HELP = "ISO-8601 date (YYYY-MM-DD) or date-time; times without a zone are UTC."


class DateOrDateTimeField(forms.CharField):
    """A date or an ISO-8601 date-time. A date means the start of that day (after) or the end of it (before)."""

    def __init__(self, *, end_of_day: bool, **kwargs: Any) -> None:
        self.end_of_day = end_of_day
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> datetime | None:  # type: ignore[override]
        text = super().to_python(value).strip()
        if not text:
            return None
        try:
            moment = parse_datetime(text)
            day = None if moment else parse_date(text)
        except ValueError:
            moment = day = None
        if moment is not None:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        if day is not None:
            return _day_bound(day, end_of_day=self.end_of_day)
        raise forms.ValidationError(
            f"'{text[:40]}' is not a date or date-time. Accepted: {DATE_HELP}", code="invalid")


def _day_bound(day: date, *, end_of_day: bool) -> datetime:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start + timedelta(days=1) if end_of_day else start


class AuditEventFilterForm(forms.Form):
    created_after = DateOrDateTimeField(
        end_of_day=False, required=False, label="From",
        help_text=f"Events at or after this moment. {DATE_HELP}")
    created_before = DateOrDateTimeField(
        end_of_day=True, required=False, label="To",
        help_text=f"Events before this moment; a date includes that whole day. {DATE_HELP}")
    actor = forms.CharField(required=False, max_length=150, help_text="Actor id: a username or an OAuth2 client id")
    actor_type = forms.ChoiceField(required=False, choices=[("", "any"), *AuditEvent.ActorType.choices])
    patient = forms.CharField(required=False, max_length=128, help_text="Patient reference (exact)")
    model_version = forms.CharField(required=False, max_length=64, help_text="e.g. diabetes@3")
    action = forms.CharField(required=False, max_length=64,
                             help_text="Exact action (prediction.create), or a prefix ending in * (auth.*)")
    object_type = forms.CharField(required=False, max_length=64)
    object_id = forms.CharField(required=False, max_length=64)
    seq_from = forms.IntegerField(required=False, min_value=1, label="From #")
    seq_to = forms.IntegerField(required=False, min_value=1, label="To #")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        after, before = data.get("created_after"), data.get("created_before")
        if after and before and before <= after:
            self.add_error("created_before", "Must be later than created_after.")
        seq_from, seq_to = data.get("seq_from"), data.get("seq_to")
        if seq_from and seq_to and seq_to < seq_from:
            self.add_error("seq_to", "Must not be smaller than seq_from.")
        return data

    def filters(self) -> AuditEventFilters:
        data = self.cleaned_data
        return AuditEventFilters(
            created_after=data.get("created_after"),
            created_before=data.get("created_before"),
            actor=(data.get("actor") or "").strip(),
            actor_type=data.get("actor_type") or "",
            patient=(data.get("patient") or "").strip(),
            model_version=(data.get("model_version") or "").strip(),
            action=(data.get("action") or "").strip(),
            object_type=(data.get("object_type") or "").strip(),
            object_id=(data.get("object_id") or "").strip(),
            seq_from=data.get("seq_from"),
            seq_to=data.get("seq_to"),
        )
