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
        print(exc, file=sys.__stderr__, flush=True)  # Celery may have redirected sys.stderr to its logger
        raise SystemExit(2) from None


@beat_init.connect
def _single_beat(**kwargs: object) -> None:
    """Exactly one beat per deployment (apps/core/beat_lock.py): a second one exits with a message."""
    import sys

    from django.conf import settings

    from apps.core.beat_lock import BeatLockHeld, beat_lock_acquire

    if not settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        return
    try:
        beat_lock_acquire(broker_url=settings.CELERY_BROKER_URL, key=settings.CLINPREDICT_BEAT_LOCK_KEY,
                          wait_seconds=settings.CLINPREDICT_BEAT_LOCK_WAIT_SECONDS)
    except BeatLockHeld as exc:
        print(exc, file=sys.__stderr__, flush=True)  # Celery may have redirected sys.stderr to its logger
        raise SystemExit(2) from None
