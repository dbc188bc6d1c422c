"""The prediction service: validate, infer on the champion's ONNX session, explain, then store the prediction
and its audit event in one transaction. Views and API views only call these functions."""

import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from django.db import transaction

from apps.audit.actors import Actor
from apps.audit.services import AuditEventDraft, audit_event_record, audit_events_record_many
from apps.core.context import request_id_var
from apps.core.exceptions import ApplicationError, ServiceUnavailable
from apps.patients.selectors import patient_by_identifier, patient_features_assemble
from apps.registry.loader import LoadedModel, challenger_model, champion_model, known_use_cases
from apps.registry.services import shadow_predictions_create
from ml.validation import RecordResult, validate_record

from . import metrics
from .models import Prediction


@dataclass(frozen=True)
class PredictionRequest:
    use_case: str
    features: Mapping[str, Any]
    patient_ref: str = ""
    basis: tuple[str, ...] = ()  # FHIR references of the inputs (e.g. "Observation/123") when they came from FHIR


@dataclass(frozen=True)
class _Scored:
    request: PredictionRequest
    canonical: dict[str, float | None]
    imputed: list[str]
    probability: float
    contributions: np.ndarray


def _champion(use_case: str) -> LoadedModel:
    """The live model of a registered use case. An unknown one is refused (400, naming the accepted use cases)
    before any cache entry or metric label is made for it (apps/registry/loader.py)."""
    model = champion_model(use_case)
    if model is not None:
        return model
    known = known_use_cases()
    if use_case in known:
        raise ServiceUnavailable(f"No champion model is live for use case '{use_case}'.", code="no_champion")
    accepted = ", ".join(sorted(known)) or "none (no model is registered yet)"
    raise ApplicationError(f"Unknown use case '{use_case}'.", code="unknown_use_case",
                           fields={"use_case": [f"'{use_case}' has no registered model; accepted: {accepted}."]})


def _score(model: LoadedModel, validated: Sequence[tuple[PredictionRequest, RecordResult]]) -> list[_Scored]:
    rows = [
        [math.nan if result.values[name] is None else result.values[name] for name in model.feature_order]
        for _request, result in validated
    ]
    x = np.asarray(rows, dtype=np.float32)
    started = time.perf_counter()
    probabilities = model.predict_proba(x)
    contributions = model.explain(x)
    metrics.INFERENCE_SECONDS.labels(model.use_case).observe(time.perf_counter() - started)
    return [
        _Scored(request, result.values, list(result.missing), float(probabilities[i]), contributions[i])
        for i, (request, result) in enumerate(validated)
    ]


def validation_errors(*, use_case: str, features: Mapping[str, Any]) -> dict[str, list[str]]:
    """Field errors for one request against the live model's spec (empty when valid)."""
    model = _champion(use_case)
    result = validate_record(model.spec, features)
    if not result.ok:
        metrics.REJECTIONS.labels(model.use_case, "invalid_features").inc()
    return dict(result.errors)


def _explanation(model: LoadedModel, scored: _Scored) -> list[dict[str, Any]]:
    by_name = {feature.name: feature for feature in model.spec.features}
    items = [
        {
            "feature": name,
            "label": by_name[name].label,
            "value": scored.canonical[name],
            "unit": by_name[name].unit,
            "contribution": round(float(scored.contributions[i]), 6),
        }
        for i, name in enumerate(model.feature_order)
    ]
    return sorted(items, key=lambda item: abs(item["contribution"]), reverse=True)


def _draft(model: LoadedModel, scored: _Scored, prediction_id: uuid.UUID, *, channel: str) -> AuditEventDraft:
    band = model.risk_band(scored.probability)  # the model's own bands (manifest `risk_bands`)
    return AuditEventDraft(
        action="prediction.create",
        object_type="prediction",
        object_id=str(prediction_id),
        patient_ref=scored.request.patient_ref,
        model_version=model.label,
        model_sha256=model.sha256,
        inputs={"features": scored.request.features, "canonical": scored.canonical,
                **({"basis": list(scored.request.basis)} if scored.request.basis else {})},
        output={"probability": scored.probability, "threshold": model.threshold, "risk_band": band,
                "positive": scored.probability >= model.threshold, "imputed": scored.imputed, "channel": channel},
    )


def _store_many(scored: Sequence[tuple[LoadedModel, _Scored]], *, actor: Actor, channel: str,
                source_ip: str | None, own_transaction: bool = False) -> list[Prediction]:
    """The predictions and their audit events, in request order: the chain lock is taken once and each table gets
    one insert, however many predictions the batch holds. Runs inside the caller's transaction, or, with
    `own_transaction`, is one transaction of its own (`audit_events_record_many`)."""
    ids = [uuid.uuid4() for _ in scored]
    drafts = [_draft(model, s, prediction_id, channel=channel)
              for (model, s), prediction_id in zip(scored, ids, strict=True)]
    request_id = request_id_var.get()
    predictions = [
        Prediction(
            id=prediction_id,
            use_case=model.use_case,
            model_version_id=model.version_id,
            model_label=model.label,
            model_sha256=model.sha256,
            patient_ref=s.request.patient_ref,
            inputs=draft.inputs["features"],
            features=s.canonical,
            probability=s.probability,
            threshold=model.threshold,
            risk_band=draft.output["risk_band"],
            positive=draft.output["positive"],
            explanation=_explanation(model, s),
            imputed=s.imputed,
            basis=list(s.request.basis),
            channel=channel,
            requested_by_id=actor.user_id,
            actor=actor.label,
            request_id=request_id,
        )
        for (model, s), prediction_id, draft in zip(scored, ids, drafts, strict=True)
    ]
    # Each prediction is inserted with its audit event (its audit_seq and created_at are the event's): on
    # PostgreSQL the whole locked section is one statement and the COMMIT.
    audit_events_record_many(actor=actor, source_ip=source_ip, drafts=drafts, rows=predictions,
                             own_transaction=own_transaction)
    return predictions


def _may_have_challenger(use_cases: Mapping[str, LoadedModel]) -> bool:
    """Asked before the transaction, so that a use case without a challenger (the usual case) spends no round trips
    (the shadow's savepoint) while holding the audit chain lock. On any doubt, including a failing lookup, the
    shadow runs and deals with it inside its own savepoint, as it always did."""
    try:
        return any(challenger_model(use_case) is not None for use_case in use_cases)
    except Exception:  # not ours to handle here: shadow_predictions_create contains and logs it
        return True


def prediction_create_many(
    *, requests: Sequence[PredictionRequest], actor: Actor, channel: str, source_ip: str | None = None
) -> list[Prediction]:
    """All-or-nothing: every request is validated before anything is scored, and every prediction is stored with
    its audit event in one transaction. Raises ApplicationError with per-element field errors."""
    errors: dict[str, Any] = {}
    models: dict[str, LoadedModel] = {}
    validated: list[tuple[PredictionRequest, RecordResult]] = []
    refused: ApplicationError | None = None
    for index, request in enumerate(requests):
        try:
            model = models.get(request.use_case) or _champion(request.use_case)
        except ApplicationError as exc:
            if isinstance(exc, ServiceUnavailable):
                raise
            errors[str(index)] = exc.fields
            refused = exc
            continue
        models[request.use_case] = model
        result = validate_record(model.spec, request.features)
        if not result.ok:
            metrics.REJECTIONS.labels(model.use_case, "invalid_features").inc()  # registered, never the raw input
            errors[str(index)] = dict(result.errors)
        validated.append((request, result))
    if errors:
        if refused is not None and len(requests) == 1:
            raise refused  # e.g. unknown_use_case, naming the use cases accepted
        if len(requests) == 1:
            raise ApplicationError("Some features are invalid.", code="invalid_features", fields=errors["0"])
        raise ApplicationError("Some predictions in the batch are invalid; nothing was stored.",
                               code="invalid_features", fields=errors)

    scored: list[tuple[LoadedModel, _Scored]] = []
    for use_case, model in models.items():
        group = [pair for pair in validated if pair[0].use_case == use_case]
        scored.extend((model, s) for s in _score(model, group))
    order = {id(r): i for i, r in enumerate(requests)}
    scored.sort(key=lambda pair: order[id(pair[1].request)])

    if _may_have_challenger(models):
        with transaction.atomic():
            predictions = _store_many(scored, actor=actor, channel=channel, source_ip=source_ip)
            # Shadow scoring (registry, issue 4): when a use case has a challenger, it scores the same validated
            # rows; the result is stored and audited ("prediction.shadow") in this transaction and never returned.
            # It never raises and never alters `predictions`: a challenger failure only rolls back its own savepoint.
            shadow_predictions_create(predictions=predictions, actor=actor, source_ip=source_ip)
    else:
        # The predictions and their events are the whole change: one transaction, committed before this returns
        # (on PostgreSQL the one append statement in autocommit; inside a caller's transaction, part of it).
        predictions = _store_many(scored, actor=actor, channel=channel, source_ip=source_ip, own_transaction=True)
    for prediction in predictions:
        metrics.PREDICTIONS.labels(prediction.use_case, prediction.model_label, prediction.risk_band, channel).inc()
    return predictions


def prediction_create(
    *, request: PredictionRequest, actor: Actor, channel: str, source_ip: str | None = None
) -> Prediction:
    return prediction_create_many(requests=[request], actor=actor, channel=channel, source_ip=source_ip)[0]


def patient_prediction_request(*, use_case: str, patient_ref: str, at: datetime | None = None) -> PredictionRequest:
    """"Predict for this patient": the live model's features assembled from the patient's stored observations (latest
    value in the look-back window, canonical units), with the FHIR Observations they came from as the basis."""
    model = _champion(use_case)
    patient = patient_by_identifier(identifier=patient_ref)
    if patient is None:
        raise ApplicationError(f"No patient with identifier '{patient_ref}'.", code="unknown_patient",
                               fields={"patient_id": ["No stored patient has this identifier; send features instead."]})
    assembled = patient_features_assemble(patient_id=patient.pk, spec=model.spec, at=at)
    return PredictionRequest(use_case, assembled.features(), patient.identifier, tuple(assembled.basis))


@transaction.atomic
def prediction_break_glass(*, prediction: Prediction, actor: Actor, reason: str, detail: str, access_seconds: int,
                           source_ip: str | None = None) -> int:
    """Record that a person opens a prediction outside their own and their care team's (break-the-glass): who,
    which prediction, which patient reference, the reason and for how long. Only the reference the prediction's own
    audit event already carries, never a patient value. Returns the audit sequence number."""
    event = audit_event_record(
        actor=actor, action="prediction.break_glass", object_type="prediction", object_id=str(prediction.id),
        patient_ref=prediction.patient_ref, model_version=prediction.model_label,
        inputs={"reason": reason, "detail": detail}, output={"access_seconds": access_seconds},
        source_ip=source_ip,
    )
    return event.seq
