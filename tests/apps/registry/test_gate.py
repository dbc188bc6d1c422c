import copy
from pathlib import Path
from typing import Any

import pytest

from apps.audit.models import AuditEvent
from apps.core.exceptions import ApplicationError
from apps.registry.artifacts import model_dir
from apps.registry.gate import challenger_gate_evaluate, promotion_gate_evaluate, spec_incompatibilities
from apps.registry.models import ModelVersion, ModelVersionStatusChange
from apps.registry.services import model_version_promote, model_version_set_challenger

from .conftest import ACTOR


def _spec(trained_dir: Path) -> dict[str, Any]:
    import json

    return json.loads((trained_dir / "manifest.json").read_text())["spec"]


def _feature(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in spec["features"] if f["name"] == name)


def _assert_nothing_changed(version: Any) -> None:
    version.refresh_from_db()
    assert version.status == "candidate"
    assert not AuditEvent.objects.filter(action__in=["model.promote", "model.rollback"],
                                         object_id=str(version.pk)).exists()
    assert list(version.status_changes.values_list("to_status", flat=True)) == ["candidate"]


def test_trained_model_passes_every_check_as_first_champion(register: Any, trained_dir: Path) -> None:
    version = register(trained_dir)

    verdict = promotion_gate_evaluate(version=version, live=None)

    assert verdict.ok, verdict.summary()
    assert [c.name for c in verdict.checks] == ["artifacts", "parity", "test_auroc", "calibration_slope",
                                                "signal", "feature_spec"]
    assert verdict.as_dict()["checks"]["signal"]["detail"].startswith("the training data showed signal")


def test_auroc_below_the_configured_limit_blocks_promotion(register: Any, trained_dir: Path, settings: Any) -> None:
    version = register(trained_dir)
    settings.CLINPREDICT_PROMOTION_GATE = {**settings.CLINPREDICT_PROMOTION_GATE, "min_test_auroc": 0.99}

    with pytest.raises(ApplicationError, match=r"test_auroc: test AUROC 0\.\d+ < 0\.990") as exc:
        model_version_promote(version_id=version.pk, actor=ACTOR, reason="try")

    assert exc.value.code == "gate_blocked"
    assert exc.value.extra["gate"]["checks"]["test_auroc"]["ok"] is False
    _assert_nothing_changed(version)


def test_calibration_slope_outside_limits_blocks_promotion(register: Any, edited_copy: Any) -> None:
    version = register(edited_copy(lambda m: m["metrics"]["test"].update(calibration_slope=2.4)))

    with pytest.raises(ApplicationError, match=r"calibration slope 2\.400 outside \[0\.70, 1\.50\]"):
        model_version_promote(version_id=version.pk, actor=ACTOR, reason="try")

    _assert_nothing_changed(version)


def test_missing_metrics_block_promotion(register: Any, edited_copy: Any) -> None:
    def drop(manifest: dict[str, Any]) -> None:
        del manifest["metrics"]["test"]["auroc"]
        del manifest["metrics"]["test"]["calibration_slope"]

    version = register(edited_copy(drop))

    verdict = promotion_gate_evaluate(version=version, live=None)

    failed = {c.name: c.detail for c in verdict.failures}
    assert failed == {"test_auroc": "no test AUROC recorded in the manifest",
                      "calibration_slope": "no test calibration slope recorded in the manifest"}


def test_no_signal_verdict_blocks_promotion_with_its_reasons(register: Any, edited_copy: Any) -> None:
    reasons = ["the CV AUROC's 95% CI (0.430-0.560) includes 0.5 (no better than chance)",
               "the test calibration slope -0.01 is below 0.2: predicted risks barely track the outcome"]
    version = register(edited_copy(lambda m: m["signal"].update(verdict="no_signal", reasons=reasons)))

    with pytest.raises(ApplicationError, match=r"signal: the training data showed no signal: the CV AUROC's 95% CI "
                                               r"\(0\.430-0\.560\) includes 0\.5") as exc:
        model_version_promote(version_id=version.pk, actor=ACTOR, reason="try")

    check = exc.value.extra["gate"]["checks"]["signal"]
    assert check["ok"] is False and reasons[1] in check["detail"]
    _assert_nothing_changed(version)


def test_a_version_trained_on_data_without_signal_is_refused(register: Any, tmp_path: Path) -> None:
    """A real `ml train` on Pima with its outcome shuffled (no relation left) says no_signal; the gate refuses."""
    import numpy as np

    from ml.datasets import pima_frame
    from ml.pipeline import train_run
    from ml.schema import UseCaseSpec
    from ml.training import TrainConfig

    frame = pima_frame()
    frame["Outcome"] = np.random.default_rng(0).permutation(frame["Outcome"].to_numpy())
    data = tmp_path / "shuffled.csv"
    frame.to_csv(data, index=False)
    spec = Path(__file__).resolve().parents[3] / "ml" / "specs" / "diabetes.yaml"
    manifest = train_run(spec=UseCaseSpec.load(spec), data_path=data, out_dir=tmp_path / "run", seed=7,
                         model_type="logistic", config=TrainConfig.fast(), tracking=False)
    assert manifest["signal"]["verdict"] == "no_signal", manifest["signal"]
    version = register(tmp_path / "run")

    verdict = promotion_gate_evaluate(version=version, live=None)

    assert not verdict.ok
    assert verdict.as_dict()["checks"]["signal"]["detail"] == (
        "the training data showed no signal: " + "; ".join(manifest["signal"]["reasons"]))
    with pytest.raises(ApplicationError, match="signal: the training data showed no signal"):
        model_version_promote(version_id=version.pk, actor=ACTOR, reason="try")
    _assert_nothing_changed(version)


def test_parity_beyond_the_configured_limit_blocks_promotion(register: Any, trained_dir: Path,
                                                            settings: Any) -> None:
    version = register(trained_dir)
    settings.CLINPREDICT_PROMOTION_GATE = {**settings.CLINPREDICT_PROMOTION_GATE, "max_onnx_parity_abs_diff": 1e-12}

    with pytest.raises(ApplicationError, match="parity: ONNX parity max"):
        model_version_promote(version_id=version.pk, actor=ACTOR, reason="try")

    _assert_nothing_changed(version)


def test_changed_canonical_unit_is_incompatible_with_the_live_champion(champion: Any, register: Any,
                                                                       edited_copy: Any) -> None:
    def to_mmol(manifest: dict[str, Any]) -> None:
        glucose = _feature(manifest["spec"], "glucose")
        glucose["unit"], glucose["alternative_units"] = "mmol/L", {"mg/dL": 0.0555}

    version = register(edited_copy(to_mmol))

    with pytest.raises(ApplicationError, match="glucose: canonical unit mmol/L differs from the live mg/dL") as exc:
        model_version_promote(version_id=version.pk, actor=ACTOR, reason="try")

    assert "incompatible with live diabetes@1" in exc.value.message
    champion.refresh_from_db()
    assert champion.status == "champion"
    _assert_nothing_changed(version)


def test_renamed_feature_is_incompatible_with_the_live_champion(champion: Any, register: Any,
                                                                edited_copy: Any) -> None:
    version = register(edited_copy(lambda m: _feature(m["spec"], "bmi").update(name="body_mass_index")))

    verdict = promotion_gate_evaluate(version=version, live=champion)

    detail = {c.name: c.detail for c in verdict.failures}["feature_spec"]
    assert "features missing compared with the live model: bmi" in detail
    assert "features the live model does not have: body_mass_index" in detail


def test_altered_file_in_model_storage_blocks_promotion(register: Any, trained_dir: Path) -> None:
    version = register(trained_dir)
    (model_dir(version) / "plots" / "roc.png").write_bytes(b"not the registered plot")

    with pytest.raises(ApplicationError, match="artifacts: plots/roc.png does not match its registered sha256"):
        model_version_promote(version_id=version.pk, actor=ACTOR, reason="try")

    _assert_nothing_changed(version)


def test_compatible_spec_may_widen_units_and_change_ranges(trained_dir: Path) -> None:
    live = _spec(trained_dir)
    candidate = copy.deepcopy(live)
    glucose = _feature(candidate, "glucose")
    glucose["alternative_units"]["g/L"] = 100.0
    glucose["max"] = 450.0
    _feature(candidate, "age")["allow_missing"] = True  # optional is fine: callers still send it
    candidate["features"].reverse()  # order does not matter: each model has its own feature order

    assert spec_incompatibilities(live, candidate) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda s: _feature(s, "glucose")["alternative_units"].pop("mmol/L"), "glucose: no longer accepts unit(s)"),
        (lambda s: _feature(s, "glucose")["alternative_units"].update({"mmol/L": 18.0}),
         "glucose: conversion factor changed for mmol/L"),
        (lambda s: _feature(s, "insulin").update(allow_missing=False),
         "insulin: may be missing for the live model but is required"),
        (lambda s: _feature(s, "bmi").update(loinc="0000-0"), "bmi: LOINC 0000-0 differs from the live 39156-5"),
        (lambda s: _feature(s, "age").update(type="categorical", categories=["young", "old"]), "age: type"),
        (lambda s: s.update(use_case="other"), "use case 'other' differs"),
    ],
)
def test_spec_changes_that_would_break_callers_are_incompatible(trained_dir: Path, change: Any,
                                                                problem: str) -> None:
    live = _spec(trained_dir)
    candidate = copy.deepcopy(live)
    change(candidate)

    problems = spec_incompatibilities(live, candidate)

    assert any(problem in p for p in problems), problems


def test_swapped_or_dropped_binary_labels_are_incompatible() -> None:
    live = {"use_case": "u", "features": [{"name": "sex", "type": "binary", "unit": None,
                                            "labels": ["Female", "Male"]}]}
    swapped = copy.deepcopy(live)
    swapped["features"][0]["labels"] = ["Male", "Female"]
    dropped = copy.deepcopy(live)
    del dropped["features"][0]["labels"]

    assert spec_incompatibilities(live, swapped) == [
        "sex: binary labels ['Male', 'Female'] differ from the live ['Female', 'Male']"]
    assert spec_incompatibilities(live, dropped) == ["sex: binary labels none differ from the live ['Female', 'Male']"]
    assert spec_incompatibilities(dropped, live) == []  # declaring labels only adds accepted values


def test_challenger_is_not_held_to_metric_limits_but_must_match_the_spec(champion: Any, register: Any,
                                                                         edited_copy: Any) -> None:
    weak = register(edited_copy(lambda m: m["metrics"]["test"].update(auroc=0.55, calibration_slope=3.0)))
    renamed = register(edited_copy(lambda m: _feature(m["spec"], "age").update(name="age_years")))

    assert challenger_gate_evaluate(version=weak, live=champion).ok
    model_version_set_challenger(version_id=weak.pk, actor=ACTOR, reason="shadow test")
    with pytest.raises(ApplicationError, match="feature_spec"):
        model_version_set_challenger(version_id=renamed.pk, actor=ACTOR, reason="shadow test")

    assert ModelVersion.objects.get(pk=weak.pk).status == "challenger"
    assert ModelVersion.objects.get(pk=renamed.pk).status == "candidate"
    assert not ModelVersionStatusChange.objects.filter(version=renamed, to_status="challenger").exists()


def test_challenger_needs_a_champion(register: Any, trained_dir: Path) -> None:
    version = register(trained_dir)

    with pytest.raises(ApplicationError, match="a challenger needs a live champion"):
        model_version_set_challenger(version_id=version.pk, actor=ACTOR, reason="shadow")
