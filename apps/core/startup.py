"""Start-up gate of production processes: gunicorn workers (clinpredict/wsgi.py) and Celery workers and beat
(clinpredict/celery.py) run every deployment check before they serve, and stop with the checks' messages if any
fails. `manage.py check --deploy` shows the same messages before a rollout."""

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections


def enforce_deploy_checks() -> None:
    """Raise ImproperlyConfigured naming every failed deployment check (errors only; warnings are logged by
    `check --deploy`). A no-op unless settings ask for it (production settings do)."""
    if not getattr(settings, "CLINPREDICT_ENFORCE_DEPLOY_CHECKS", False):
        return
    try:
        messages = checks.run_checks(include_deployment_checks=True, databases=["default"])
    finally:
        connections.close_all()  # a check may have connected; request threads open their own connections
    errors = [message for message in messages if message.is_serious() and not message.is_silenced()]
    if errors:
        raise ImproperlyConfigured(
            "ClinPredict refuses to start: " + " | ".join(f"{e.id}: {e.msg} HINT: {e.hint}" for e in errors)
        )
