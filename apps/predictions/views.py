"""Clinician pages: dashboard, manual prediction form, result (with the observed outcome form) and the model card.
Thin: validate, call one service or selector, render. Patient pages live in apps/patients/views.py."""

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.audit.actors import actor_from_request, source_ip_from_request
from apps.core.charts import ContributionBar, contribution_chart, risk_scale_chart
from apps.core.exceptions import ApplicationError, ServiceUnavailable
from apps.core.templatetags.clinpredict import num_filter, quantity_filter
from apps.patients.forms import OutcomeForm
from apps.patients.models import RECORD_OUTCOME_PERMISSION
from apps.patients.selectors import outcome_by_source, patient_by_identifier, patients_with_new_observations
from apps.patients.services import outcome_record
from apps.registry.artifacts import ModelIntegrityError, read_verified
from apps.registry.loader import LoadedModel, champion_model
from apps.registry.models import ModelVersion
from apps.registry.selectors import model_version_get, model_versions_champions

from .forms import BreakGlassForm, PredictionForm
from .models import Prediction
from .selectors import Access, PredictionReader, prediction_for_person, prediction_list, predictions_recent_by_user
from .services import PredictionRequest, prediction_break_glass, prediction_create, validation_errors

OUTCOME_SOURCE = "clinpredict:web"
TOP_FACTORS = 10


@never_cache
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    new_data = []
    if request.user.has_perm("patients.view_patient"):
        new_data = patients_with_new_observations(
            predictions=prediction_list(reader=PredictionReader.for_user(request.user)), limit=10)
    return render(request, "predictions/dashboard.html", {
        "champions": model_versions_champions(),
        "recent": predictions_recent_by_user(user_id=request.user.pk),
        "new_data": new_data,
    })


def live_model(use_case: str) -> LoadedModel:
    """The champion of a use case for a page: 404 when there is none; ServiceUnavailable (shown by
    `unavailable_page`) when its files fail their integrity check."""
    model = champion_model(use_case)
    if model is None:
        raise Http404(f"No live model for use case '{use_case}'.")
    return model


def unavailable_page(request: HttpRequest, exc: ApplicationError) -> HttpResponse:
    return render(request, "predictions/unavailable.html", {"message": exc.message}, status=exc.status_code)


def submit_prediction(request: HttpRequest, form: Any, use_case: str,
                      make_request: Callable[[dict[str, Any]], PredictionRequest]) -> HttpResponse | None:
    """The clinician forms' submit step: validate the form's features against the live model, create the prediction
    (stored and audited) and redirect to its result; None, with the errors put on the form, when it was refused."""
    features = form.features_payload()
    errors = validation_errors(use_case=use_case, features=features)
    if errors:
        form.add_service_errors(errors)
        return None
    try:
        prediction = prediction_create(request=make_request(features), actor=actor_from_request(request),
                                       channel=Prediction.Channel.WEB, source_ip=source_ip_from_request(request))
    except ApplicationError as exc:
        form.add_service_errors(exc.fields)
        messages.error(request, exc.message)
        return None
    return redirect("prediction-detail", prediction_id=prediction.id)


@never_cache
@login_required
@permission_required("predictions.add_prediction", raise_exception=True)
def predict(request: HttpRequest, use_case: str) -> HttpResponse:
    try:
        model = live_model(use_case)
    except ServiceUnavailable as exc:
        return unavailable_page(request, exc)
    form = PredictionForm(request.POST or None, spec=model.spec)
    if request.method == "POST" and form.is_valid():
        patient_ref = form.cleaned_data["patient_id"].strip()
        done = submit_prediction(request, form, use_case,
                                 lambda features: PredictionRequest(use_case, features, patient_ref))
        if done is not None:
            return done
    status = 400 if request.method == "POST" else 200
    return render(request, "predictions/predict.html", {"form": form, "model": model}, status=status)


# --- Result -------------------------------------------------------------------------------------------------------


def _entered_text(raw: Any, unit: str | None) -> str:
    """What the person typed, when it was in another unit than the canonical one ("8.2 mmol/L")."""
    if isinstance(raw, dict) and raw.get("unit") and raw.get("unit") != unit and raw.get("value") is not None:
        return quantity_filter(raw["value"], raw["unit"])
    return ""


def result_context(prediction: Prediction) -> dict[str, Any]:
    """Everything the result page shows about one stored prediction (read from the prediction and the manifest of
    the model version that answered)."""
    manifest = prediction.model_version.manifest
    spec = manifest.get("spec", {})
    labels = {feature["name"]: feature.get("label", feature["name"]) for feature in spec.get("features", [])}
    profile = (manifest.get("reference_profile") or {}).get("features", {})
    imputed = set(prediction.imputed)
    out_of_range = []
    factors = []
    for item in prediction.explanation:
        name, value, unit = item["feature"], item["value"], item.get("unit")
        label = item.get("label") or labels.get(name, name)
        note = ""
        ref = profile.get(name) or {}
        if value is None:
            value_text = "missing"
            note = "imputed by the model" if name in imputed else ""
        else:
            value_text = quantity_filter(value, unit)
            entered = _entered_text(prediction.inputs.get(name), unit)
            if entered:
                value_text = f"{value_text} (entered {entered})"
            low, high = ref.get("min"), ref.get("max")
            if low is not None and high is not None and not low <= value <= high:
                note = "outside the training data"
                out_of_range.append({
                    "label": label, "value": quantity_filter(value, unit),
                    "range": f"{num_filter(low)}–{quantity_filter(high, unit)}",
                    "direction": "below" if value < low else "above",
                })
        factors.append({**item, "label": label, "value_text": value_text, "note": note})
    top = factors[:TOP_FACTORS]
    bars = [ContributionBar(f["label"], f["value_text"], float(f["contribution"]), f["note"]) for f in top]
    title = f"Top {len(top)} factors behind this estimate"
    moderate_from = float(prediction.model_version.manifest.get("risk_bands", {}).get(
        "moderate_from", prediction.threshold / 2))  # the bands the prediction was made with
    scale = {"probability": prediction.probability, "threshold": prediction.threshold,
             "moderate_from": moderate_from, "band": prediction.risk_band}
    return {
        "prediction": prediction,
        "factors": top,
        # Two layouts of each chart; the stylesheet shows the one that fits the screen (SVG text cannot reflow).
        "factor_chart": contribution_chart(bars, title=title),
        "factor_chart_compact": contribution_chart(bars, title=title, compact=True),
        "risk_scale": risk_scale_chart(**scale),
        "risk_scale_compact": risk_scale_chart(**scale, compact=True),
        "out_of_range": out_of_range,
        "imputed_labels": [labels.get(name, name) for name in prediction.imputed],
        "intended_use": spec.get("intended_use", ""),
        "outcome_label": spec.get("outcome", {}).get("label", prediction.use_case),
        "title": spec.get("title", prediction.use_case),
        "moderate_from": moderate_from,
        "version": prediction.model_version,
    }


def _outcome_source_id(prediction: Prediction) -> str:
    return f"{prediction.use_case}:{prediction.id}"


def _render_result(request: HttpRequest, prediction: Prediction, outcome_form: OutcomeForm | None = None,
                   status: int = 200, break_glass_until: datetime | None = None) -> HttpResponse:
    context = result_context(prediction)
    patient = patient_by_identifier(identifier=prediction.patient_ref) if prediction.patient_ref else None
    context.update({
        "break_glass_until": break_glass_until,
        "patient": patient,
        "outcome": outcome_by_source(source=OUTCOME_SOURCE, source_id=_outcome_source_id(prediction)),
        "outcome_form": outcome_form or OutcomeForm(),
        "can_record_outcome": patient is not None and request.user.has_perm(RECORD_OUTCOME_PERMISSION),
    })
    return render(request, "predictions/result.html", context, status=status)


# --- Break-the-glass --------------------------------------------------------------------------------------------
# A clinician opens a prediction that is neither theirs nor of a patient in their care team only after stating a
# reason, which is recorded in the audit log (`prediction.break_glass`). The access then lasts
# CLINPREDICT_BREAK_GLASS_SECONDS for that one prediction, in that session only (signing out ends it).

BREAK_GLASS_SESSION_KEY = "clinpredict_break_glass"


def _break_glass_until(request: HttpRequest, prediction_id: UUID) -> datetime | None:
    expires = request.session.get(BREAK_GLASS_SESSION_KEY, {}).get(str(prediction_id))
    return datetime.fromtimestamp(expires, UTC) if expires and expires > time.time() else None


def _break_glass_grant(request: HttpRequest, prediction_id: UUID, seconds: int) -> None:
    now = time.time()
    grants = {key: expires for key, expires in request.session.get(BREAK_GLASS_SESSION_KEY, {}).items()
              if expires > now}
    grants[str(prediction_id)] = now + seconds
    request.session[BREAK_GLASS_SESSION_KEY] = grants


def _prediction_opened(request: HttpRequest, prediction_id: UUID) -> tuple[Prediction, bool, datetime | None]:
    """(prediction, may see it now, until when a break-the-glass access lasts). 404 when there is no such one."""
    try:
        prediction, access = prediction_for_person(prediction_id=prediction_id, user=request.user)
    except Prediction.DoesNotExist as exc:
        raise Http404("No such prediction.") from exc
    if access is Access.GRANTED:
        return prediction, True, None
    until = _break_glass_until(request, prediction.id)
    return prediction, until is not None, until


def _break_glass_page(request: HttpRequest, prediction: Prediction, form: BreakGlassForm | None = None,
                      status: int = 403) -> HttpResponse:
    """Asks for the reason; shows nothing of the prediction itself."""
    return render(request, "predictions/break_glass.html", {
        "prediction_id": prediction.id, "form": form or BreakGlassForm(),
        "minutes": round(settings.CLINPREDICT_BREAK_GLASS_SECONDS / 60),
    }, status=status)


@never_cache
@login_required
@permission_required("predictions.view_prediction", raise_exception=True)
def prediction_detail(request: HttpRequest, prediction_id: UUID) -> HttpResponse:
    prediction, allowed, until = _prediction_opened(request, prediction_id)
    if not allowed:
        return _break_glass_page(request, prediction)
    return _render_result(request, prediction, break_glass_until=until)


@never_cache
@login_required
@permission_required("predictions.view_prediction", raise_exception=True)
@require_POST
def prediction_break_glass_view(request: HttpRequest, prediction_id: UUID) -> HttpResponse:
    prediction, allowed, _until = _prediction_opened(request, prediction_id)
    if allowed:  # theirs to see already, or an access still running: nothing to record
        return redirect("prediction-detail", prediction_id=prediction.id)
    form = BreakGlassForm(request.POST)
    if not form.is_valid():
        return _break_glass_page(request, prediction, form, status=400)
    seconds = settings.CLINPREDICT_BREAK_GLASS_SECONDS
    prediction_break_glass(prediction=prediction, actor=actor_from_request(request),
                           reason=form.cleaned_data["reason"], detail=form.cleaned_data["detail"],
                           access_seconds=seconds, source_ip=source_ip_from_request(request))
    _break_glass_grant(request, prediction.id, seconds)  # only once the audit event is committed
    return redirect("prediction-detail", prediction_id=prediction.id)


@never_cache
@login_required
@permission_required(RECORD_OUTCOME_PERMISSION, raise_exception=True)
@require_POST
def prediction_outcome(request: HttpRequest, prediction_id: UUID) -> HttpResponse:
    """Record whether the predicted condition turned out present (source clinpredict:web, one record per prediction:
    submitting again corrects it). Only on a prediction the person may open (break-the-glass included)."""
    prediction, allowed, until = _prediction_opened(request, prediction_id)
    if not allowed:
        return _break_glass_page(request, prediction)
    patient = patient_by_identifier(identifier=prediction.patient_ref) if prediction.patient_ref else None
    if patient is None:
        raise Http404("This prediction is not linked to a patient in ClinPredict; an outcome cannot be recorded.")
    form = OutcomeForm(request.POST)
    if not form.is_valid():
        return _render_result(request, prediction, form, status=400, break_glass_until=until)
    try:
        _outcome, created = outcome_record(
            patient_id=patient.pk, use_case=prediction.use_case, present=form.cleaned_data["present"],
            actor=actor_from_request(request), onset_at=form.onset_at(), source=OUTCOME_SOURCE,
            source_id=_outcome_source_id(prediction), prediction_id=str(prediction.id),
        )
    except ApplicationError as exc:
        for field, errors in exc.fields.items():
            for error in errors:
                form.add_error("onset_date" if field == "onset_at" else None, f"{exc.message} {error}")
        return _render_result(request, prediction, form, status=exc.status_code, break_glass_until=until)
    messages.success(request, "Outcome recorded." if created else "Outcome updated.")
    return redirect("prediction-detail", prediction_id=prediction.id)


# --- Model card -----------------------------------------------------------------------------------------------------

PLOT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\.png$")
_CARD_TAGS = {"p", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "code", "pre", "strong", "em",
              "b", "i", "br", "img", "caption", "blockquote", "span", "div", "sup", "sub", "hr", "dl", "dt", "dd",
              "h1", "h2", "h3", "h4", "h5", "h6"}
_CARD_DROP_CONTENT = {"script", "style", "head", "title", "iframe", "object", "embed", "noscript", "template", "svg",
                      "math", "form", "textarea", "select", "button"}
_CARD_ATTRS = {"th": {"colspan", "rowspan", "scope"}, "td": {"colspan", "rowspan"}, "img": {"alt", "width"}}
_VOID = {"br", "img", "hr"}


class _CardSanitiser(HTMLParser):
    """Rebuilds the generated model card with an allow-list of tags and attributes: no styles or scripts (the page
    runs under a strict CSP), headings moved two levels down (under the page's title and section), tables made
    scrollable on small screens, and images only when they are registered plots, served by the verified plot view."""

    def __init__(self, plot_url: Callable[[str], str | None]) -> None:
        super().__init__(convert_charrefs=True)
        self.plot_url = plot_url
        self.out: list[str] = []
        self.open: list[str] = []
        self.dropping = 0

    def _tag(self, tag: str) -> str:
        if tag[0] == "h" and tag[1:].isdigit():
            return f"h{min(int(tag[1:]) + 2, 6)}"
        return tag

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _CARD_DROP_CONTENT:
            self.dropping += 1
            return
        if self.dropping or tag not in _CARD_TAGS:
            return
        values = {name: value or "" for name, value in attrs}
        kept = [(name, values[name]) for name in sorted(_CARD_ATTRS.get(tag, set())) if name in values]
        if tag == "img":
            url = self.plot_url(values.get("src", ""))
            if url is None:
                return
            kept.append(("src", url))
        if values.get("class") == "human":
            kept.append(("class", "human"))
        rendered = "".join(format_html(' {}="{}"', name, value) for name, value in kept)
        if tag == "table":
            self.out.append('<div class="table-wrap">')
        self.out.append(f"<{self._tag(tag)}{rendered}>")
        if tag not in _VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID and self.open and self.open[-1] == tag:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _CARD_DROP_CONTENT:
            self.dropping = max(self.dropping - 1, 0)
            return
        if self.dropping or tag not in self.open:
            return
        while self.open:
            closing = self.open.pop()
            self.out.append(f"</{self._tag(closing)}>")
            if closing == "table":
                self.out.append("</div>")
            if closing == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self.dropping:
            self.out.append(escape(data))

    def result(self) -> SafeString:
        self.close()
        while self.open:
            self.handle_endtag(self.open[-1])
        return mark_safe("".join(self.out))  # noqa: S308 - rebuilt from an allow-list, text escaped


def card_html(version: ModelVersion, html: str) -> SafeString:
    def plot_url(src: str) -> str | None:
        name = src.removeprefix("./")
        if not name.startswith("plots/") or name not in version.artifacts or not PLOT_NAME.match(name[6:]):
            return None
        return reverse("model-plot", args=[version.use_case, version.version, name[6:]])

    parser = _CardSanitiser(plot_url)
    parser.feed(html)
    return parser.result()


def _version_or_404(use_case: str, version: int) -> ModelVersion:
    try:
        return model_version_get(use_case=use_case, version=version)
    except ApplicationError as exc:
        raise Http404(exc.message) from exc


@never_cache
@login_required
@permission_required("predictions.view_prediction", raise_exception=True)
def model_card(request: HttpRequest, use_case: str, version: int) -> HttpResponse:
    """The model card of one version for clinicians: key facts, ROC and calibration plots, and the card generated by
    training, read from model storage only after its sha256 matched the registered one."""
    model_version = _version_or_404(use_case, version)
    card, card_problem = None, ""
    if "model_card.html" in model_version.artifacts:
        try:
            card = card_html(model_version, read_verified(model_version, "model_card.html").decode("utf-8"))
        except ModelIntegrityError as exc:
            card_problem = exc.message
    else:
        card_problem = "This version was registered without a model card."
    manifest = model_version.manifest
    test = model_version.test_metrics
    plots = [(name, title) for name, title in (("roc.png", "ROC curve (held-out test set)"),
                                               ("calibration.png", "Calibration (held-out test set)"))
             if f"plots/{name}" in model_version.artifacts]
    return render(request, "predictions/model_card.html", {
        "version": model_version,
        "spec": manifest.get("spec", {}),
        "test": test,
        "at_threshold": test.get("at_threshold") or {},
        "bands": manifest.get("risk_bands") or {},
        "plots": plots,
        "card": card,
        "card_problem": card_problem,
        "is_champion": model_version.status == ModelVersion.Status.CHAMPION,
    })


@never_cache
@login_required
@permission_required("predictions.view_prediction", raise_exception=True)
def model_plot(request: HttpRequest, use_case: str, version: int, name: str) -> HttpResponse:
    """One registered plot of a version, sent only when its bytes match the sha256 recorded at registration."""
    model_version = _version_or_404(use_case, version)
    artifact = f"plots/{name}"
    if not PLOT_NAME.match(name) or artifact not in model_version.artifacts:
        raise Http404(f"{model_version.label} has no plot '{name}'.")
    try:
        data = read_verified(model_version, artifact)
    except ModelIntegrityError as exc:
        return HttpResponse(exc.message, status=exc.status_code, content_type="text/plain; charset=utf-8")
    response = HttpResponse(data, content_type="image/png")
    response["Content-Disposition"] = "inline"
    return response
