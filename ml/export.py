"""Export: joblib of the whole fitted model, ONNX of the whole model (pipeline + calibration), parity check, sha256.

ONNX contract: input ``features`` float32 (n, n_features) in canonical units, spec order, NaN for missing; output
``probabilities`` float32 (n, 2), column 1 = positive class (calibrated when the model is).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np

from ml.model import LOGIT_EPS, ClinicalModel

from .validation import file_sha256

ONNX_INPUT_NAME = "features"
ONNX_OUTPUT_NAME = "probabilities"
TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}
PARITY_TOLERANCE = 1e-5


class ExportError(RuntimeError):
    """The ONNX export failed or does not reproduce the fitted model."""


def sha256_file(path: Path) -> str:
    return file_sha256(Path(path))


def save_joblib(model: ClinicalModel, path: Path) -> Path:
    joblib.dump(model, path, compress=3)
    return path


def load_joblib(path: Path) -> Any:
    """Load the fitted object written by ``ml train`` (a ``ml.model.ClinicalModel``). Only load trusted files."""
    return joblib.load(path)


def predict_proba(model: Any, X: np.ndarray) -> np.ndarray:
    """Positive-class probability (n,) from the joblib model for canonical-unit rows (NaN = missing)."""
    return np.asarray(model.predict_proba(np.asarray(X, dtype=np.float64))[:, 1], dtype=np.float64)


_XGB_REGISTERED = False


def _register_xgboost_converter() -> None:
    global _XGB_REGISTERED
    if _XGB_REGISTERED:
        return
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes
    from xgboost import XGBClassifier

    update_registered_converter(
        XGBClassifier,
        "XGBoostXGBClassifier",
        calculate_linear_classifier_output_shapes,
        convert_xgboost,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    _XGB_REGISTERED = True


def to_onnx(model: ClinicalModel, *, doc: str = "") -> Any:
    """Convert the whole model to an ONNX ModelProto (deterministic for a given fitted model)."""
    import onnx
    from onnx import TensorProto, helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    _register_xgboost_converter()
    pipeline = model.pipeline
    final = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    n = len(model.feature_names)
    try:
        onx = convert_sklearn(
            pipeline,
            initial_types=[(ONNX_INPUT_NAME, FloatTensorType([None, n]))],
            target_opset=TARGET_OPSET,
            options={id(final): {"zipmap": False}},
        )
    except Exception as exc:  # converters raise many types; report one
        raise ExportError(f"ONNX conversion failed: {type(exc).__name__}: {exc}") from exc

    graph = onx.graph
    prob_out = next(o.name for o in graph.output if "prob" in o.name)
    raw = "raw_probabilities"
    for node in graph.node:
        node.output[:] = [raw if o == prob_out else o for o in node.output]
        node.input[:] = [raw if i == prob_out else i for i in node.input]
    del graph.output[:]

    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, value: Any, dtype: Any = np.float64) -> str:
        arr = np.asarray(value, dtype=dtype)
        inits.append(onnx.numpy_helper.from_array(arr, name=name))
        return name

    cal = model.calibrator
    if cal is None:
        nodes.append(helper.make_node("Identity", [raw], [ONNX_OUTPUT_NAME], name="cp_identity"))
    else:
        # Work in float64 so the calibration adds no float32 rounding of its own.
        nodes.append(helper.make_node("Cast", [raw], ["cp_raw64"], to=TensorProto.DOUBLE, name="cp_cast64"))
        nodes.append(
            helper.make_node(
                "Slice",
                ["cp_raw64", const("cp_one_i", [1], np.int64), const("cp_two_i", [2], np.int64),
                 const("cp_axis_i", [1], np.int64)],
                ["cp_p"],
                name="cp_slice",
            )
        )
        nodes.append(
            helper.make_node(
                "Clip", ["cp_p", const("cp_lo", LOGIT_EPS), const("cp_hi", 1 - LOGIT_EPS)], ["cp_pc"], name="cp_clip"
            )
        )
        if cal.method == "sigmoid":
            nodes += [
                helper.make_node("Sub", [const("cp_one", 1.0), "cp_pc"], ["cp_q"], name="cp_q"),
                helper.make_node("Log", ["cp_pc"], ["cp_logp"], name="cp_logp"),
                helper.make_node("Log", ["cp_q"], ["cp_logq"], name="cp_logq"),
                helper.make_node("Sub", ["cp_logp", "cp_logq"], ["cp_logit"], name="cp_logit"),
                helper.make_node("Mul", ["cp_logit", const("cp_a", cal.a)], ["cp_az"], name="cp_mul"),
                helper.make_node("Add", ["cp_az", const("cp_b", cal.b)], ["cp_z"], name="cp_add"),
                helper.make_node("Sigmoid", ["cp_z"], ["cp_cal"], name="cp_sigmoid"),
            ]
        elif cal.method == "isotonic":
            x = np.asarray(cal.x, dtype=np.float64)
            y = np.asarray(cal.y, dtype=np.float64)
            if x.size < 2:
                nodes.append(
                    helper.make_node(
                        "Mul", ["cp_pc", const("cp_zero", 0.0)], ["cp_zeros"], name="cp_zeros"
                    )
                )
                nodes.append(
                    helper.make_node("Add", ["cp_zeros", const("cp_y0", y[0] if y.size else 0.0)], ["cp_cal"])
                )
            else:
                slopes = np.diff(y) / np.diff(x)
                nodes += [
                    helper.make_node("Min", ["cp_pc", const("cp_xhi", x[1:].reshape(1, -1))], ["cp_min"],
                                     name="cp_min"),
                    helper.make_node("Max", ["cp_min", const("cp_xlo", x[:-1].reshape(1, -1))], ["cp_max"],
                                     name="cp_max"),
                    helper.make_node("Sub", ["cp_max", "cp_xlo"], ["cp_seg"], name="cp_seg"),
                    helper.make_node("MatMul", ["cp_seg", const("cp_slopes", slopes.reshape(-1, 1))], ["cp_inc"],
                                     name="cp_matmul"),
                    helper.make_node("Add", ["cp_inc", const("cp_y0", y[0])], ["cp_cal"], name="cp_add"),
                ]
        else:
            raise ExportError(f"cannot export calibration method {cal.method!r}")
        nodes += [
            helper.make_node("Cast", ["cp_cal"], ["cp_p1"], to=TensorProto.FLOAT, name="cp_cast32"),
            helper.make_node("Sub", [const("cp_one_f", 1.0, np.float32), "cp_p1"], ["cp_p0"], name="cp_p0"),
            helper.make_node("Concat", ["cp_p0", "cp_p1"], [ONNX_OUTPUT_NAME], axis=1, name="cp_concat"),
        ]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    graph.output.append(helper.make_tensor_value_info(ONNX_OUTPUT_NAME, TensorProto.FLOAT, [None, 2]))
    # Drop nodes whose outputs nobody uses any more (the argmax label branch).
    _prune(graph)
    onx.doc_string = doc
    onx.graph.name = f"clinpredict_{model.model_type}"  # skl2onnx names graphs with a random uuid
    onx.producer_name = "clinpredict-ml"
    onx.producer_version = "1"
    onx.model_version = 1
    onnx.checker.check_model(onx)
    return onx


def _prune(graph: Any) -> None:
    needed = {o.name for o in graph.output}
    keep: list[Any] = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    used_inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used_inits)


def save_onnx(onx: Any, path: Path) -> Path:
    Path(path).write_bytes(onx.SerializeToString(deterministic=True))
    return path


def onnx_session(path_or_bytes: Path | bytes) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    src = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_predict(session: Any, X: np.ndarray) -> np.ndarray:
    """Positive-class probability (n,) from an onnxruntime session."""
    out = session.run([ONNX_OUTPUT_NAME], {ONNX_INPUT_NAME: np.asarray(X, dtype=np.float32)})[0]
    return np.asarray(out[:, 1], dtype=np.float64)


def parity_rows(X: np.ndarray, seed: int, missing_fraction: float = 0.3) -> np.ndarray:
    """The rows the parity check runs on: ``X`` itself plus a copy with ~30% of values set to NaN (fixed seed), so
    missing values are always exercised even when the test part has none."""
    rng = np.random.default_rng(seed)
    holes = np.array(X, dtype=np.float64, copy=True)
    holes[rng.random(holes.shape) < missing_fraction] = np.nan
    return np.vstack([np.asarray(X, dtype=np.float64), holes])


def parity_check(model: ClinicalModel, onnx_bytes: bytes, X: np.ndarray,
                 tolerance: float = PARITY_TOLERANCE) -> dict[str, Any]:
    """max |p_joblib - p_onnx| over rows X. Raises ExportError when above ``tolerance``."""
    session = onnx_session(onnx_bytes)
    p_model = model.predict_proba(X)[:, 1]
    p_onnx = onnx_predict(session, X)
    diff = np.abs(p_model - p_onnx)
    max_diff = float(diff.max()) if diff.size else 0.0
    result = {
        "max_abs_diff": max_diff,
        "n_rows": int(X.shape[0]),
        "n_rows_with_missing": int(np.isnan(X).any(axis=1).sum()),
        "tolerance": tolerance,
    }
    if not np.isfinite(max_diff) or max_diff > tolerance:
        raise ExportError(
            f"ONNX parity check failed: max |p_joblib - p_onnx| = {max_diff:.3g} > {tolerance:g} "
            f"over {X.shape[0]} rows"
        )
    return result


# --- the serving explainer (not a pickle): see ml/serving_explain.py ------------------------------------------


def explainer_artifact(model: ClinicalModel) -> tuple[str, bytes, dict[str, Any]]:
    """(file name, file bytes, ``manifest["explainer"]`` block without ``parity``) for the fitted model.

    XGBoost: the booster in XGBoost's own UBJSON format. MLP: the impute/scale/MLP arrays as JSON. The block holds
    the calibration constants (Platt ``a``/``b`` or the isotonic knots) and the training medians per feature."""
    from ml import explain, serving_explain

    final = model.pipeline.steps[-1][1] if hasattr(model.pipeline, "steps") else model.pipeline
    if model.model_type == "xgboost":
        kind, name = "xgboost_treeshap", serving_explain.XGB_BOOSTER_FILE
        raw = bytes(final.get_booster().save_raw(raw_format="ubj"))
    elif model.model_type == "mlp":
        kind, name = "mlp_occlusion", serving_explain.MLP_WEIGHTS_FILE
        raw = _mlp_weights(model).to_json()
    elif model.model_type == "logistic":
        kind, name = "logistic_linear", serving_explain.LINEAR_WEIGHTS_FILE
        raw = _mlp_weights(model).to_json()
    else:
        raise ExportError(f"no serving explainer for model type {model.model_type!r}")
    cal = model.calibrator
    calibration: dict[str, Any] | None = None
    if cal is not None:
        calibration = ({"method": "sigmoid", "a": float(cal.a), "b": float(cal.b)} if cal.method == "sigmoid"
                       else {"method": cal.method, "x": [float(v) for v in cal.x], "y": [float(v) for v in cal.y]})
    medians = np.asarray(model.medians, dtype=np.float64)
    meta: dict[str, Any] = {
        "kind": kind,
        "file": name,
        "format_version": serving_explain.EXPLAINER_FORMAT_VERSION,
        "method": explain.explanation_method(model),
        "calibration": calibration,
        "medians": {feature: float(medians[i]) if medians.size else 0.0
                    for i, feature in enumerate(model.feature_names)},
    }
    return name, raw, meta


def _mlp_weights(model: ClinicalModel) -> Any:
    """The fitted MLP or logistic pipeline as ``ml.serving_explain.MLPWeights`` (a logistic regression is one layer
    with an identity activation)."""
    from ml.serving_explain import MLPWeights

    steps = dict(model.pipeline.steps)
    names = list(steps)
    last_name = names[-1]
    if names not in (["impute", "scale", last_name], ["encode", last_name]) or last_name not in ("mlp", "logreg"):
        raise ExportError(f"cannot write the explainer for pipeline steps {names}")
    numeric_columns: tuple[int, ...] = ()
    one_hot: list[tuple[int, float, tuple[float, ...]]] = []
    if "encode" in steps:
        num: Any = None
        for tname, transformer, columns in steps["encode"].transformers_:
            if tname == "num":
                num, numeric_columns = transformer, tuple(int(c) for c in columns)
            elif tname.startswith("cat"):
                imp, enc = transformer.named_steps["impute"], transformer.named_steps["onehot"]
                one_hot.append((int(columns[0]), float(imp.statistics_[0]),
                                tuple(float(v) for v in enc.categories_[0])))
            elif transformer != "drop":
                raise ExportError(f"cannot write the explainer for encoding step {tname!r}")
        if num is not None:
            imputer, scaler = num.named_steps["impute"], num.named_steps["scale"]
            impute, mean, scale = imputer.statistics_, scaler.mean_, scaler.scale_
        else:
            impute = mean = scale = np.zeros(0)
            imputer = None
    else:
        imputer, scaler = steps["impute"], steps["scale"]
        impute, mean, scale = imputer.statistics_, scaler.mean_, scaler.scale_
    if imputer is not None and getattr(imputer, "strategy", None) != "median":
        raise ExportError("the explainer supports median imputation of numeric columns only")
    final = steps[last_name]
    if last_name == "mlp":
        if final.out_activation_ != "logistic":
            raise ExportError("the MLP explainer supports a logistic output only")
        coefs = tuple(np.asarray(c) for c in final.coefs_)
        intercepts = tuple(np.asarray(b) for b in final.intercepts_)
        activation, out_activation, fmt = str(final.activation), str(final.out_activation_), "clinpredict-mlp"
    else:
        coefs = (np.asarray(final.coef_).T.copy(),)
        intercepts = (np.asarray(final.intercept_),)
        activation, out_activation, fmt = "identity", "logistic", "clinpredict-linear"
    return MLPWeights(
        impute=np.asarray(impute), mean=np.asarray(mean), scale=np.asarray(scale), coefs=coefs,
        intercepts=intercepts, activation=activation, out_activation=out_activation,
        numeric_columns=numeric_columns, one_hot=tuple(one_hot), format=fmt,
    )


def explainer_parity(model: ClinicalModel, meta: dict[str, Any], raw: bytes, X: np.ndarray,
                     tolerance: float | None = None) -> dict[str, Any]:
    """max |contribution| and |base| difference between the serving explainer (from ``raw``) and ``ml.explain``
    on the fitted model over rows X. Raises ExportError when above ``tolerance`` (1e-6)."""
    from ml import explain, serving_explain

    tolerance = serving_explain.EXPLAINER_TOLERANCE if tolerance is None else tolerance
    served = serving_explain.load_explainer(meta, raw, model.feature_names)
    phi_ref, base_ref = explain.explain_with_base(model, X)
    phi, base = served.explain_with_base(X)
    max_diff = float(max(np.max(np.abs(phi - phi_ref), initial=0.0), np.max(np.abs(base - base_ref), initial=0.0)))
    result = {"max_abs_diff": max_diff, "n_rows": int(np.asarray(X).shape[0]), "tolerance": tolerance}
    if not np.isfinite(max_diff) or max_diff > tolerance:
        raise ExportError(f"explainer parity check failed: max |contribution difference| = {max_diff:.3g} > "
                          f"{tolerance:g} over {result['n_rows']} rows")
    return result


def explainer_check_rows(medians: np.ndarray, feature_ranges: list[tuple[float | None, float | None]],
                         seed: int, n: int = 256) -> np.ndarray:
    """Rows for the explainer parity check when no data is at hand (migrating a registered version): uniform
    within each feature's plausible range (around its median when the spec gives none), then ``parity_rows``
    adds a copy with ~30% NaN."""
    rng = np.random.default_rng(seed)
    cols = []
    for median, (lo, hi) in zip(np.asarray(medians, dtype=np.float64), feature_ranges, strict=True):
        low = float(lo) if lo is not None else median - max(abs(median), 1.0)
        high = float(hi) if hi is not None else median + max(abs(median), 1.0)
        cols.append(rng.uniform(low, high, size=n))
    return parity_rows(np.column_stack(cols), seed)
