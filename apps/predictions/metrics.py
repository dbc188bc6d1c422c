from prometheus_client import Counter, Histogram

PREDICTIONS = Counter(
    "clinpredict_predictions_total",
    "Predictions served",
    ["use_case", "model_version", "risk_band", "channel"],
)
REJECTIONS = Counter(
    "clinpredict_prediction_rejections_total",
    "Prediction requests rejected before inference",
    ["use_case", "reason"],
)
INFERENCE_SECONDS = Histogram(
    "clinpredict_inference_seconds",
    "Model inference and explanation time per request",
    ["use_case"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
