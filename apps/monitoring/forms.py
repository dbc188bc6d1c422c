import secrets
from typing import Any

from django import forms


class RetrainingRequestForm(forms.Form):
    use_case = forms.ChoiceField(choices=())
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        max_length=2000,
        strip=True,
        help_text="Why (kept in the audit log with your name and the time).",
        error_messages={"required": "A reason is required: say why, it is kept in the audit log."},
    )
    # One key per form shown: submitting the same form twice (double click, reload) requests one retraining.
    request_key = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args: Any, use_cases: list[str], **kwargs: Any) -> None:
        kwargs.setdefault("initial", {}).setdefault("request_key", secrets.token_hex(16))
        super().__init__(*args, **kwargs)
        self.fields["use_case"].choices = [(u, u) for u in use_cases]
