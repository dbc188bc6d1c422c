"""No pickle in the web process (issue 15): a prediction and its explanation, through the real WSGI application with
production settings in a fresh interpreter, import neither scikit-learn nor joblib (nor the xgboost package or
SciPy), and no pickle is loaded while the model is loaded, scores or explains.

The stdlib `pickle` module itself is imported by the web process regardless of the model: Django imports it during
setup (django.core.cache.backends.filebased, via the system checks; the probe prints the chain). So the pickle
check is on the calls: none may have the model loader, the prediction service or `ml` on its stack (Django's
caches may unpickle their own values; in this request nothing was unpickled at all)."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.utils import timezone

from apps.registry.models import ModelVersion

REPO = Path(__file__).resolve().parents[3]
PROBE = Path(__file__).with_name("no_pickle_probe.py")
MODEL_CODE = ("apps.registry.loader", "apps.registry.fitted", "apps.predictions.services", "ml.")


def _token(raw: str) -> None:
    from oauth2_provider.models import AccessToken, Application, set_token_value

    app = Application.objects.create(name="probe", client_type=Application.CLIENT_CONFIDENTIAL,
                                     authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
                                     client_id="probe", client_secret="probe-secret")
    token = AccessToken(application=app, scope="predictions:write", expires=timezone.now() + timedelta(hours=1))
    set_token_value(token, raw)
    token.save()


def _probe(settings: Any, tmp_path: Path, body: dict[str, Any], database_url: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTEST") and k != "DJANGO_ALLOW_ASYNC_UNSAFE"}  # set by tests/e2e/conftest.py
    env.update({
        "PYTHONPATH": str(REPO),
        "DJANGO_SETTINGS_MODULE": "clinpredict.settings.production",
        "SECRET_KEY": "no-pickle-test-secret-key-that-is-long-enough-0123456789",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": database_url,  # as production runs: the application role, a shared cache
        "CACHE_URL": "redis://127.0.0.1:6379/14", "CACHE_KEY_PREFIX": f"no-pickle-{os.getpid()}",
        "MODEL_STORAGE_DIR": str(settings.MODEL_STORAGE_DIR),
        "CLINPREDICT_VAR_DIR": str(tmp_path / "var"),
    })
    res = subprocess.run([sys.executable, str(PROBE), "tok-no-pickle", json.dumps(body)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    result: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return result


def test_prediction_and_explanation_without_sklearn_joblib_or_pickle_loads(
        transactional_db: None, champion: ModelVersion, valid_features: dict, settings: Any, tmp_path: Path,
        app_role_database_url: str) -> None:
    # transactional_db: committed rows, so the subprocess sees them.
    _token("tok-no-pickle")

    result = _probe(settings, tmp_path, {"use_case": "diabetes", "features": valid_features}, app_role_database_url)

    assert result["status"].startswith("201"), result["response"]
    explanation = result["response"]["explanation"]
    assert len(explanation) == 8 and any(item["contribution"] != 0 for item in explanation)
    assert result["forbidden_modules"] == []
    model_pickle_loads = [call for call in result["pickle_load_calls"]
                          if any(m.startswith(MODEL_CODE) for m in call["stack"])]
    assert model_pickle_loads == []
    print("pickle first imported by:", " <- ".join(result["pickle_first_imported_by"][:6]))
    print("pickle load calls (all):", sorted({(c["function"], c["stack"][0] if c["stack"] else "?")
                                              for c in result["pickle_load_calls"]}))
