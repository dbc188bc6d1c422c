from datetime import datetime
from typing import Any

from django import forms
from django.utils import timezone


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        max_length=2000,
        strip=True,
        help_text="Why (kept in the audit log with your name and the time).",
        error_messages={"required": "A reason is required: say why, it is kept in the audit log."},
    )


class StatusForm(ReasonForm):
    to_status = forms.ChoiceField(choices=[("candidate", "Candidate"), ("archived", "Archived")])


class ChampionAtForm(forms.Form):
    use_case = forms.ChoiceField(choices=())
    at = forms.DateTimeField(
        required=False,
        help_text="Date and time (UTC unless an offset is given), e.g. 2026-01-31 14:00 or 2026-01-31T14:00:00+01:00."
                  " Empty: now.",
    )

    def __init__(self, *args: Any, use_cases: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["use_case"].choices = [(u, u) for u in use_cases]

    def clean_at(self) -> datetime:
        at: datetime | None = self.cleaned_data.get("at")
        if at is None:
            return timezone.now()
        if timezone.is_naive(at):
            return timezone.make_aware(at, timezone.get_current_timezone())
        return at
