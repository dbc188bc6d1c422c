from prometheus_client import Counter, Gauge

# "livemin" under prometheus_client multiprocess mode (one sample per gunicorn worker): the use case shows 0 as soon
# as any live worker could not load or verify its model, which is what an alert should fire on.
MODEL_INTEGRITY_OK = Gauge(
    "clinpredict_model_integrity_ok",
    "1 when the last model file loaded for the use case matched its registered sha256, 0 when one was refused",
    ["use_case"],
    multiprocess_mode="livemin",
)
CHAMPION_LOADED = Gauge(
    "clinpredict_champion_loaded",
    "1 when the champion of the use case is loaded and verified in this process, 0 when it is missing or refused",
    ["use_case"],
    multiprocess_mode="livemin",
)
SHADOW_FAILURES = Counter(
    "clinpredict_shadow_failures_total",
    "Challenger (shadow) scorings that failed; the champion's answer is unaffected",
    ["use_case"],
)
MLFLOW_SYNC = Counter(
    "clinpredict_mlflow_alias_sync_total",
    "Attempts to move the MLflow 'champion' alias after a promotion, by outcome",
    ["use_case", "outcome"],
)
