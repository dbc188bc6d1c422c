"""Celery application. With no CELERY_BROKER_URL configured, settings make tasks run eagerly in-process."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clinpredict.settings.local")

app = Celery("clinpredict")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
