"""Registry pages outside the admin: champion history for auditors (and model admins). Read-only."""

from typing import Any

from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from .forms import ChampionAtForm
from .selectors import model_version_champion_at, model_version_champion_history, use_cases


@never_cache
@login_required
@permission_required("registry.view_modelversion", raise_exception=True)
def champion_history(request: HttpRequest) -> HttpResponse:
    return render(request, "registry/champion_history.html", champion_history_context(request))


def champion_history_context(request: HttpRequest) -> dict[str, Any]:
    """Shared by the admin page and the auditors' page: which version was champion at T, and every period."""
    known = use_cases()
    data = request.GET if "use_case" in request.GET else None
    form = ChampionAtForm(data, use_cases=known, initial={"use_case": known[0] if known else ""})
    context: dict[str, Any] = {"form": form, "use_cases": known}
    use_case = form.cleaned_data["use_case"] if data is not None and form.is_valid() else (known[0] if known else None)
    if use_case:
        context["use_case"] = use_case
        context["periods"] = list(reversed(model_version_champion_history(use_case=use_case)))
        if data is not None and form.is_valid():
            context["at"] = form.cleaned_data["at"]
            context["champion_at"] = model_version_champion_at(use_case=use_case, at=form.cleaned_data["at"])
    return context
