"""Celery application. With no CELERY_BROKER_URL configured, settings make tasks run eagerly in-process."""

import os

from celery import Celery
from celery.signals import beat_init, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clinpredict.settings.local")

app = Celery("clinpredict")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
@beat_init.connect
def _enforce_deploy_checks(**kwargs: object) -> None:
    """Production workers and beat refuse to start on a failed deployment check, as the web workers do. Celery logs
    and swallows a handler's exception, so the message goes to stderr and the process exits (SystemExit passes)."""
    import sys

    import django
    from django.core.exceptions import ImproperlyConfigured

    django.setup()
    from apps.core.startup import enforce_deploy_checks

    try:
        enforce_deploy_checks()
    except ImproperlyConfigured as exc:
        print(exc, file=sys.stderr, flush=True)
        raise SystemExit(2) from None
