"""Base settings: everything lives here; local/production/test only override.

All environment access goes through django-environ. With no DATABASE_URL the app runs on SQLite under var/,
with no CELERY_BROKER_URL Celery runs tasks eagerly, and MLflow tracks to sqlite under var/.

Every variable can also come from a file: `<NAME>_FILE=/run/secrets/...` (Docker and Kubernetes secrets) wins over
`<NAME>`, so no secret has to sit in a plain environment variable (clinpredict/settings/secrets.py).
"""

from datetime import timedelta
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from .secrets import SecretFileEnv

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = SecretFileEnv()

VAR_DIR = Path(env.str("CLINPREDICT_VAR_DIR", default=str(BASE_DIR / "var")))

SECRET_KEY = env.str("SECRET_KEY", default="")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "oauth2_provider",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "django_celery_beat",
    "csp",
    "axes",
    "apps.core",
    "apps.audit",
    "apps.registry",
    "apps.patients",
    "apps.predictions",
    "apps.monitoring",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "apps.core.middleware.RequestIdMiddleware",
    "apps.core.middleware.BodyLimitMiddleware",  # 413 for an API body over CLINPREDICT_MAX_BODY_BYTES, unread
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # The "pages only" middleware (apps.core.middleware.PagesOnly) are Django's own, passed straight through by a
    # request to an API path that carries a bearer token: the API never uses the session.
    "apps.core.middleware.SessionMiddleware",  # pages only
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "apps.core.middleware.AuthenticationMiddleware",  # pages only
    "apps.core.middleware.SessionTimeoutMiddleware",  # pages only
    "apps.core.middleware.MessageMiddleware",  # pages only
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "apps.core.middleware.CSPMiddleware",
    "apps.core.middleware.NoStoreMiddleware",
    "axes.middleware.AxesMiddleware",
    "apps.core.middleware.PrometheusAfterMiddleware",  # django-prometheus' with the method label bounded
]

# django-axes first: it refuses a locked-out (username, address) before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# --- Brute-force protection (sign-in page, admin sign-in, OAuth2 token endpoint) -----------------------------
# How many reverse proxies in front of the app append to X-Forwarded-For (0: the header is ignored).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "apps.core.net.client_ip"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# Failed client authentications at /o/token/ per (client id, address) before that pair is refused for a while.
TOKEN_FAILURE_LIMIT = env.int("TOKEN_FAILURE_LIMIT", default=10)
TOKEN_LOCKOUT_SECONDS = env.int("TOKEN_LOCKOUT_SECONDS", default=15 * 60)

ROOT_URLCONF = "clinpredict.urls"
WSGI_APPLICATION = "clinpredict.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    # An empty DATABASE_URL counts as unset (the embedded default), not as a malformed URL.
    "default": environ.Env.db_url_config(env.str("DATABASE_URL", default="")
                                         or f"sqlite:///{VAR_DIR / 'clinpredict.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)  # the embedded default keeps everything under var/
# The password may come on its own (DATABASE_PASSWORD or DATABASE_PASSWORD_FILE, e.g. a Docker secret), so the URL in
# the environment carries no secret; it wins over a password in the URL.
if env.str("DATABASE_PASSWORD", default=""):
    DATABASES["default"]["PASSWORD"] = env.str("DATABASE_PASSWORD")
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Fail fast instead of hanging when the database is unreachable: callers answer 503 quickly.
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env.int("DATABASE_CONNECT_TIMEOUT", default=3)
    # Off by default: the check is a `SELECT 1` round trip before every request's first query (~12% of a prediction
    # request's wall time under load, benchmarks/results/profile_request.json). Without it, a connection that broke
    # while idle (a database restart) fails its next request with a clean 503 and is then replaced; with it, that
    # one request would succeed instead. DATABASE_HEALTH_CHECKS=true turns it back on.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DATABASE_HEALTH_CHECKS", default=False)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

# --- ClinPredict -------------------------------------------------------------------------------------------
MODEL_STORAGE_DIR = Path(env.str("MODEL_STORAGE_DIR", default=str(VAR_DIR / "models")))
AUDIT_BACKUP_DIR = Path(env.str("AUDIT_BACKUP_DIR", default=str(VAR_DIR / "audit-backups")))

# Registered model files and audit backups (apps/core/storage.py). Embedded default: the local folders above, read
# when used, so a MODEL_STORAGE_DIR / AUDIT_BACKUP_DIR changed later (or by a test) still applies. With
# ARTIFACT_S3_BUCKET: an S3-compatible bucket through django-storages, under `<prefix>models/` and
# `<prefix>audit-backups/`; every replica reads the same objects and verifies each file's sha256 on the bytes it read.
# No keys: boto3 finds credentials itself (the pod's IAM role, instance profile). Keys may come from files
# (AWS_ACCESS_KEY_ID_FILE, AWS_SECRET_ACCESS_KEY_FILE).
ARTIFACT_S3_BUCKET = env.str("ARTIFACT_S3_BUCKET", default="")
ARTIFACT_S3_ENDPOINT_URL = env.str("ARTIFACT_S3_ENDPOINT_URL", default="")
ARTIFACT_S3_REGION = env.str("ARTIFACT_S3_REGION", default="")
ARTIFACT_S3_PREFIX = env.str("ARTIFACT_S3_PREFIX", default="").strip("/")
ARTIFACT_S3_SSE = env.str("ARTIFACT_S3_SSE", default="")  # "AES256" or "aws:kms"; empty: the bucket's default


def _artifact_storage(folder: str, setting: str) -> dict[str, Any]:
    if not ARTIFACT_S3_BUCKET:
        return {"BACKEND": "apps.core.storage.SettingDirStorage", "OPTIONS": {"setting": setting}}
    options: dict[str, Any] = {
        "bucket_name": ARTIFACT_S3_BUCKET,
        "location": "/".join(part for part in (ARTIFACT_S3_PREFIX, folder) if part),
        "default_acl": None,
        "file_overwrite": False,
    }
    if ARTIFACT_S3_ENDPOINT_URL:
        options["endpoint_url"] = ARTIFACT_S3_ENDPOINT_URL
    if ARTIFACT_S3_REGION:
        options["region_name"] = ARTIFACT_S3_REGION
    access_key = env.str("AWS_ACCESS_KEY_ID", default="")
    if access_key:
        options["access_key"] = access_key
        options["secret_key"] = env.str("AWS_SECRET_ACCESS_KEY", default="")
    if ARTIFACT_S3_SSE:
        options["object_parameters"] = {"ServerSideEncryption": ARTIFACT_S3_SSE}
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}


STORAGES["models"] = _artifact_storage("models", "MODEL_STORAGE_DIR")
STORAGES["audit_backups"] = _artifact_storage("audit-backups", "AUDIT_BACKUP_DIR")
MLFLOW_TRACKING_URI = env.str("MLFLOW_TRACKING_URI", default=f"sqlite:///{VAR_DIR / 'mlflow.db'}")
# Groups that the role migration creates; the names are part of the public surface (docs/security.md).
GROUP_CLINICIANS = "Clinicians"
GROUP_MODEL_ADMINS = "Model admins"
GROUP_AUDITORS = "Auditors"

# --- Celery ------------------------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
# Exactly one beat per deployment: beat holds this lock in the broker's Redis while it runs; another beat waits this
# long for it, then exits (apps/core/beat_lock.py). Deployments sharing one Redis need different keys.
CLINPREDICT_BEAT_LOCK_KEY = env.str("CLINPREDICT_BEAT_LOCK_KEY", default="clinpredict:celery-beat")
CLINPREDICT_BEAT_LOCK_WAIT_SECONDS = env.float("CLINPREDICT_BEAT_LOCK_WAIT_SECONDS", default=45.0)
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 2, "socket_timeout": 2, "max_retries": 1}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"

# --- REST framework and OAuth2 -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.core.authentication.BearerTokenAuthentication"],
    # Deny by default: every API view must declare its own permission and scopes.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_RENDERER_CLASSES": ["apps.core.renderers.JSONRenderer"],  # DRF's output, written by orjson
    # Bounded in size and depth, strict about numbers, duplicate keys and surrogates (apps/core/parsers.py).
    "DEFAULT_PARSER_CLASSES": ["apps.core.parsers.StrictJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "apps.core.exception_handler.api_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["apps.core.throttling.ClientRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

# Request bodies: at most this many bytes (413 above it, in the API's error shape; Django's own limit on form bodies is
# the same number) and JSON nested at most this deep (400 above it). The largest prediction batch (1,000 items) is
# well under 1 MB and nests 4 levels; a CDS Hooks request with a prefetch Bundle about 10.
CLINPREDICT_MAX_BODY_BYTES = env.int("CLINPREDICT_MAX_BODY_BYTES", default=2_621_440)
DATA_UPLOAD_MAX_MEMORY_SIZE = CLINPREDICT_MAX_BODY_BYTES
CLINPREDICT_MAX_JSON_DEPTH = env.int("CLINPREDICT_MAX_JSON_DEPTH", default=32)

# Requests per client (OAuth2 application) and period; one prediction request may carry a batch of up to 1,000.
CLINPREDICT_API_THROTTLE_RATE = env.str("CLINPREDICT_API_THROTTLE_RATE", default="6000/min")
# The throttle counts, the /o/token/ lockout counters and the CDS Hooks jti replay marks live in the cache: Redis when
# CACHE_URL is set (shared by every worker and host), else per process. Production refuses a per-process cache
# (apps/core/checks.py) unless CLINPREDICT_SINGLE_PROCESS=true says that exactly one process serves ClinPredict.
CACHE_URL = env.str("CACHE_URL", default="")
CLINPREDICT_SINGLE_PROCESS = env.bool("CLINPREDICT_SINGLE_PROCESS", default=False)
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL,
         "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default=""),  # several deployments on one Redis
         # JSON, not Django's default pickle: reading the cache must never unpickle (apps/core/cache.py).
         "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1, "serializer": "apps.core.cache.JSONSerializer"}}
        if CACHE_URL else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    ),
}

OAUTH2_SCOPES = {
    "predictions:write": "Create predictions",
    "predictions:read": "Read the predictions this application created, and the live model",
    "predictions:read:all": "Read every application's and clinician's predictions (only for applications whose "
                            "owner may see every prediction: CLINPREDICT_RESTRICTED_SCOPES)",
    "patients:read": "Read patients, observations and outcomes",
    "patients:write": "Write patients, observations and outcomes",
    "audit:read": "Read and export the audit log",
}
# A restricted scope is granted only to an application whose owner (Application.user) holds the permission named
# here (apps/core/oauth_scopes.py); django-oauth-toolkit alone grants every scope to every application.
CLINPREDICT_RESTRICTED_SCOPES = {"predictions:read:all": "patients.view_all_predictions"}
OAUTH2_PROVIDER = {
    "SCOPES": OAUTH2_SCOPES,
    "SCOPES_BACKEND_CLASS": "apps.core.oauth_scopes.ClinPredictScopes",
    "DEFAULT_SCOPES": ["predictions:read"],
    "ACCESS_TOKEN_EXPIRE_SECONDS": 3600,
    "REFRESH_TOKEN_EXPIRE_SECONDS": 14 * 24 * 3600,
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,  # reuse of a rotated refresh token revokes the whole family
    "PKCE_REQUIRED": True,
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"],
    "ALLOW_URI_WILDCARDS": False,
    # RFC 9700 (OAuth 2.0 Security BCP): enforce every compliant behaviour django-oauth-toolkit 3.4 offers:
    # no implicit or password grant, S256 only, bearer tokens never in the query string, `iss` in authorization
    # responses, tokens hashed at rest, and deploy checks that fail on a non-compliant setting.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "ClinPredict API",
    "DESCRIPTION": "Individual, explained and audited clinical risk predictions.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.core.openapi.add_error_responses",
    ],
    # The docs UI is served from our own static files: no external CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Sessions and cookies ----------------------------------------------------------------------------------
SESSION_IDLE_TIMEOUT_SECONDS = env.int("SESSION_IDLE_TIMEOUT_SECONDS", default=15 * 60)
SESSION_ABSOLUTE_TIMEOUT_SECONDS = env.int("SESSION_ABSOLUTE_TIMEOUT_SECONDS", default=12 * 3600)
SESSION_COOKIE_AGE = SESSION_ABSOLUTE_TIMEOUT_SECONDS
# How long a break-the-glass access to one prediction lasts in the session that stated the reason (audited).
CLINPREDICT_BREAK_GLASS_SECONDS = env.int("CLINPREDICT_BREAK_GLASS_SECONDS", default=15 * 60)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Content Security Policy (django-csp): only our own scripts, styles and images; no inline script or style, no
# framing. The API docs use drf-spectacular's split view so their init script is a file too.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Logging: structured JSON with the request id; patient values are never logged -------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "apps.core.logging.RequestIdFilter"},
        "redact_query": {"()": "apps.core.logging.RedactQueryStringFilter"},
    },
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id", "redact_query"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django.server": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "axes": {"handlers": ["console"], "level": "WARNING", "propagate": False},  # lockouts are audited instead
    },
}

CLINPREDICT_DEFAULT_USE_CASE = "diabetes"
CLINPREDICT_DEMO_SPEC = BASE_DIR / "ml" / "specs" / "diabetes.yaml"
CLINPREDICT_CHAMPION_CACHE_SECONDS = env.float("CLINPREDICT_CHAMPION_CACHE_SECONDS", default=2.0)
PREDICTION_BATCH_LIMIT = 1000
CDS_HOOKS_FHIR_TIMEOUT_SECONDS = env.float("CDS_HOOKS_FHIR_TIMEOUT_SECONDS", default=3.0)
ONNX_INTRA_OP_THREADS = env.int("ONNX_INTRA_OP_THREADS", default=1)
AUDIT_BACKUP_KEY = env.str("AUDIT_BACKUP_KEY", default="")

# --- Model registry: the promotion gate (apps/registry/gate.py) ---------------------------------------------
# A version is promoted only if its held-out AUROC and calibration slope fall within these limits, its ONNX parity
# is within max_onnx_parity_abs_diff, its files match their sha256 and its feature spec is compatible with the live
# champion's. Small test sets give wide calibration-slope intervals, so the slope band is deliberately not tight.
CLINPREDICT_PROMOTION_GATE = {
    "min_test_auroc": env.float("CLINPREDICT_GATE_MIN_TEST_AUROC", default=0.70),
    "calibration_slope_min": env.float("CLINPREDICT_GATE_CALIBRATION_SLOPE_MIN", default=0.70),
    "calibration_slope_max": env.float("CLINPREDICT_GATE_CALIBRATION_SLOPE_MAX", default=1.50),
    "max_onnx_parity_abs_diff": env.float("CLINPREDICT_GATE_MAX_PARITY_DIFF", default=1e-5),
}

# --- Audit ledger: encrypted backups and periodic verification ---------------------------------------------
# AUDIT_BACKUP_KEY (above) is base64 of 32 random bytes: `python manage.py backup_audit --generate-key`.
# AUDIT_BACKUP_DIR and the `audit_backups` storage: with MODEL_STORAGE_DIR above.
CELERY_BEAT_SCHEDULE = globals().get("CELERY_BEAT_SCHEDULE", {})  # keep entries other sections added
CELERY_BEAT_SCHEDULE.update({
    "audit-verify-chain": {"task": "audit.verify_chain",
                           "schedule": env.float("AUDIT_VERIFY_INTERVAL_SECONDS", default=3600.0)},
})
# The daily encrypted backup runs only with its key; without one it is off, and says so on the monitoring page and in
# /readyz (apps/audit/selectors.audit_backup_status) instead of failing every day in a worker log.
if AUDIT_BACKUP_KEY:
    CELERY_BEAT_SCHEDULE["audit-backup-daily"] = {"task": "audit.backup", "schedule": 24 * 3600.0}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Embedded default: BEGIN IMMEDIATE takes the write lock first and waits for it, so concurrent requests queue
    # instead of failing with "database is locked" (measured: 50 concurrent predictions fail without it).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("transaction_mode", "IMMEDIATE")
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)

# --- Patients: FHIR R4 sync (apps/patients) -------------------------------------------------------------------
# The server to sync Patients, Observations and outcome Conditions from (SMART Backend Services). Unset: no sync.
# FHIR_SYNC_INTERVAL_SECONDS > 0 schedules the `patients.sync_fhir` task (incremental, safe to rerun).
FHIR_BASE_URL = env.str("FHIR_BASE_URL", default="")
FHIR_CLIENT_ID = env.str("FHIR_CLIENT_ID", default="")
# Client authentication: with a private key (PEM, best as FHIR_PRIVATE_KEY_FILE) the token request carries a client
# assertion signed with it (private_key_jwt, RS384 or ES384); without one, FHIR_CLIENT_SECRET (client_secret_basic).
FHIR_PRIVATE_KEY = env.str("FHIR_PRIVATE_KEY", default="", multiline=True)
FHIR_KEY_ID = env.str("FHIR_KEY_ID", default="")  # unset: the key's RFC 7638 thumbprint
FHIR_SIGNING_ALG = env.str("FHIR_SIGNING_ALG", default="")  # RS384 or ES384; unset: from the key's type
FHIR_CLIENT_SECRET = env.str("FHIR_CLIENT_SECRET", default="")
FHIR_SCOPE = env.str("FHIR_SCOPE", default="system/Patient.rs system/Observation.rs system/Condition.rs")
FHIR_PAGE_SIZE = env.int("FHIR_PAGE_SIZE", default=200)
FHIR_TIMEOUT_SECONDS = env.float("FHIR_TIMEOUT_SECONDS", default=30.0)
# Connection errors, timeouts, 429 and 5xx are retried FHIR_MAX_RETRIES times: Retry-After is honoured up to
# FHIR_RETRY_MAX_WAIT_SECONDS, otherwise the wait doubles from FHIR_RETRY_BACKOFF_SECONDS (same cap).
FHIR_MAX_RETRIES = env.int("FHIR_MAX_RETRIES", default=2)
FHIR_RETRY_BACKOFF_SECONDS = env.float("FHIR_RETRY_BACKOFF_SECONDS", default=0.5)
FHIR_RETRY_MAX_WAIT_SECONDS = env.float("FHIR_RETRY_MAX_WAIT_SECONDS", default=30.0)
FHIR_SYNC_INTERVAL_SECONDS = env.float("FHIR_SYNC_INTERVAL_SECONDS", default=0.0)
if FHIR_BASE_URL and FHIR_SYNC_INTERVAL_SECONDS > 0:
    CELERY_BEAT_SCHEDULE = globals().get("CELERY_BEAT_SCHEDULE", {})
    CELERY_BEAT_SCHEDULE["patients-sync-fhir"] = {"task": "patients.sync_fhir", "schedule": FHIR_SYNC_INTERVAL_SECONDS}

# --- Monitoring and the retraining loop (apps/monitoring) ---------------------------------------------------------
# Redis redelivers a task whose worker died before acknowledging it (acks_late) once it has been unacknowledged for
# visibility_timeout seconds: keep it above the longest hard time limit (retraining, below), or a task still running
# is handed to a second worker (the retraining run's lock would then make that copy a no-op).
CELERY_BROKER_TRANSPORT_OPTIONS.update({
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT_SECONDS", default=3600),
    "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL_SECONDS", default=10),
    "unacked_restore_throttle": env.int("CELERY_UNACKED_RESTORE_THROTTLE", default=10),
})
# Who may read the web's /metrics: a client address (apps/core/net.py, behind TRUSTED_PROXY_COUNT proxies) inside
# one of these networks, or any client presenting `Authorization: Bearer <CLINPREDICT_METRICS_TOKEN>` (best as
# CLINPREDICT_METRICS_TOKEN_FILE); anyone else gets 403. Default: loopback only (local.py opens it for development).
# Docker compose and Kubernetes give Prometheus the token (docs/deploy.md).
METRICS_TOKEN_MIN_LENGTH = 32


def metrics_networks(value: list[str]) -> list[str]:
    """The CIDR list of CLINPREDICT_METRICS_ALLOWED_NETWORKS, checked at start-up (a typo must not open or close
    /metrics silently)."""
    try:
        return [str(ip_network(item.strip(), strict=False)) for item in value if item.strip()]
    except ValueError as exc:
        raise ImproperlyConfigured(f"CLINPREDICT_METRICS_ALLOWED_NETWORKS: {exc} (expected CIDR blocks such as "
                                   "10.0.0.0/8,127.0.0.1/32, comma-separated)") from None


CLINPREDICT_METRICS_ALLOWED_NETWORKS = metrics_networks(
    env.list("CLINPREDICT_METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"]))
CLINPREDICT_METRICS_TOKEN = env.str("CLINPREDICT_METRICS_TOKEN", default="")
if CLINPREDICT_METRICS_TOKEN and len(CLINPREDICT_METRICS_TOKEN) < METRICS_TOKEN_MIN_LENGTH:
    raise ImproperlyConfigured(f"CLINPREDICT_METRICS_TOKEN must be at least {METRICS_TOKEN_MIN_LENGTH} characters "
                               "(e.g. python -c 'import secrets; print(secrets.token_hex(32))').")
# The worker's own /metrics (Celery task outcomes; the web's /metrics cannot see the worker's processes). 0: off.
CELERY_WORKER_METRICS_PORT = env.int("CELERY_WORKER_METRICS_PORT", default=0)
CELERY_WORKER_METRICS_ADDRESS = env.str("CELERY_WORKER_METRICS_ADDRESS", default="127.0.0.1")
# Drift of the champion's inputs and outputs against the reference profile in its manifest, over the predictions of
# the last `window_days`: PSI per feature (alert above psi_alert), missing rate (alert when it moves by more than
# missing_alert), the predicted-risk distribution. Below min_samples predictions a check reports "too little data".
CLINPREDICT_DRIFT = {
    "psi_alert": env.float("CLINPREDICT_DRIFT_PSI_ALERT", default=0.25),
    "missing_alert": env.float("CLINPREDICT_DRIFT_MISSING_ALERT", default=0.10),
    "min_samples": env.int("CLINPREDICT_DRIFT_MIN_SAMPLES", default=100),
    "window_days": env.int("CLINPREDICT_DRIFT_WINDOW_DAYS", default=7),
}
# Realised performance: each outcome is paired with the patient's latest prediction of the use case made at most
# match_window_days before the outcome's onset (or, without one, before it was recorded); figures per model version
# over the predictions of the last window_days. Below min_outcomes pairs (or one class only) AUROC and calibration
# are not reported. A figure below auroc_alert / outside the slope band counts as degraded (retraining trigger).
CLINPREDICT_PERFORMANCE = {
    "match_window_days": env.int("CLINPREDICT_OUTCOME_MATCH_WINDOW_DAYS", default=365),
    "window_days": env.int("CLINPREDICT_PERFORMANCE_WINDOW_DAYS", default=365),
    "min_outcomes": env.int("CLINPREDICT_PERFORMANCE_MIN_OUTCOMES", default=50),
    "auroc_alert": env.float("CLINPREDICT_PERFORMANCE_AUROC_ALERT", default=0.65),
    "calibration_slope_min": env.float("CLINPREDICT_PERFORMANCE_SLOPE_MIN", default=0.6),
    "calibration_slope_max": env.float("CLINPREDICT_PERFORMANCE_SLOPE_MAX", default=1.6),
}
# Retraining registers a candidate and never promotes. Data: the CSV named here for a use case (the demo's), else the
# use case's training CSV assembled from the database (apps.patients training_dataset_export). config: "default"
# (ml.training.TrainConfig) or "fast" (TrainConfig.fast(), for tests and smoke runs). Triggers: drift alert,
# degraded realised performance (each at most once per cooldown_days per use case), and every schedule_days.
CLINPREDICT_RETRAIN = {
    "datasets": {CLINPREDICT_DEFAULT_USE_CASE: VAR_DIR / "data" / f"{CLINPREDICT_DEFAULT_USE_CASE}.csv"},
    "work_dir": VAR_DIR / "retraining",
    "config": env.str("CLINPREDICT_RETRAIN_CONFIG", default="default"),
    "model_type": env.str("CLINPREDICT_RETRAIN_MODEL_TYPE", default="xgboost"),
    "tracking": env.bool("CLINPREDICT_RETRAIN_TRACKING", default=True),
    "on_drift": env.bool("CLINPREDICT_RETRAIN_ON_DRIFT", default=True),
    "on_performance": env.bool("CLINPREDICT_RETRAIN_ON_PERFORMANCE", default=True),
    "cooldown_days": env.int("CLINPREDICT_RETRAIN_COOLDOWN_DAYS", default=7),
    "schedule_days": env.int("CLINPREDICT_RETRAIN_SCHEDULE_DAYS", default=30),
    "soft_time_limit": env.int("CLINPREDICT_RETRAIN_SOFT_TIME_LIMIT", default=1500),
    "time_limit": env.int("CLINPREDICT_RETRAIN_TIME_LIMIT", default=1800),
    "max_attempts": env.int("CLINPREDICT_RETRAIN_MAX_ATTEMPTS", default=3),
    "stale_after_seconds": env.int("CLINPREDICT_RETRAIN_STALE_AFTER_SECONDS", default=6 * 3600),
}
# Daily scoring: patients with observations stored since their last prediction of the use case (or never predicted),
# in chunk tasks of chunk_size patients that the workers share; features from the last lookback_days.
CLINPREDICT_SCORING = {
    "chunk_size": env.int("CLINPREDICT_SCORING_CHUNK_SIZE", default=200),
    "lookback_days": env.int("CLINPREDICT_SCORING_LOOKBACK_DAYS", default=365),
}
CELERY_BEAT_SCHEDULE = globals().get("CELERY_BEAT_SCHEDULE", {})
CELERY_BEAT_SCHEDULE.update({
    # In this order each night (UTC): score, then check drift and realised performance, then summarise the day.
    "monitoring-score-daily": {"task": "monitoring.score_daily", "schedule": crontab(hour=1, minute=0)},
    "monitoring-check-drift": {"task": "monitoring.check_drift", "schedule": crontab(hour=2, minute=0)},
    "monitoring-performance": {"task": "monitoring.realised_performance", "schedule": crontab(hour=2, minute=30)},
    "monitoring-daily-summary": {"task": "monitoring.daily_summary", "schedule": crontab(hour=3, minute=0)},
})
if CLINPREDICT_RETRAIN["schedule_days"] > 0:
    CELERY_BEAT_SCHEDULE["monitoring-retrain-scheduled"] = {
        "task": "monitoring.retrain_scheduled", "schedule": CLINPREDICT_RETRAIN["schedule_days"] * 86400.0}
