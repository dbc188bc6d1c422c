"""Clinician pages: dashboard, prediction form, result. Thin: validate, call one service, render."""

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache

from apps.audit.actors import actor_from_request, source_ip_from_request
from apps.core.exceptions import ApplicationError
from apps.registry.loader import champion_model
from apps.registry.selectors import model_versions_champions

from .forms import PredictionForm
from .models import Prediction
from .selectors import prediction_get, predictions_recent_by_user
from .services import PredictionRequest, prediction_create, validation_errors


@never_cache
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "predictions/dashboard.html", {
        "champions": model_versions_champions(),
        "recent": predictions_recent_by_user(user_id=request.user.pk),
    })


@never_cache
@login_required
@permission_required("predictions.add_prediction", raise_exception=True)
def predict(request: HttpRequest, use_case: str) -> HttpResponse:
    model = champion_model(use_case)
    if model is None:
        raise Http404(f"No live model for use case '{use_case}'.")
    form = PredictionForm(request.POST or None, spec=model.spec)
    if request.method == "POST" and form.is_valid():
        features = form.features_payload()
        errors = validation_errors(use_case=use_case, features=features)
        if errors:
            form.add_service_errors(errors)
        else:
            try:
                prediction = prediction_create(
                    request=PredictionRequest(use_case, features, form.cleaned_data["patient_id"].strip()),
                    actor=actor_from_request(request),
                    channel=Prediction.Channel.WEB,
                    source_ip=source_ip_from_request(request),
                )
            except ApplicationError as exc:
                form.add_service_errors(exc.fields)
                messages.error(request, exc.message)
            else:
                return redirect("prediction-detail", prediction_id=prediction.id)
    status = 400 if request.method == "POST" else 200
    return render(request, "predictions/predict.html", {"form": form, "model": model}, status=status)


@never_cache
@login_required
@permission_required("predictions.view_prediction", raise_exception=True)
def prediction_detail(request: HttpRequest, prediction_id: UUID) -> HttpResponse:
    try:
        prediction = prediction_get(prediction_id=prediction_id)
    except Prediction.DoesNotExist as exc:
        raise Http404("No such prediction.") from exc
    spec = prediction.model_version.manifest["spec"]
    labels = {feature["name"]: feature.get("label", feature["name"]) for feature in spec.get("features", [])}
    max_abs = max((abs(item["contribution"]) for item in prediction.explanation), default=0.0) or 1.0
    factors = [
        {**item, "width": round(100 * abs(item["contribution"]) / max_abs, 1),
         "direction": "raises" if item["contribution"] > 0 else "lowers"}
        for item in prediction.explanation
    ]
    return render(request, "predictions/result.html", {
        "prediction": prediction,
        "factors": factors,
        "intended_use": spec.get("intended_use", ""),
        "imputed_labels": [labels.get(name, name) for name in prediction.imputed],
        "outcome_label": spec.get("outcome", {}).get("label", prediction.use_case),
    })
