"""/metrics, included at the root in place of django_prometheus.urls (same path and name): the view also sums every
gunicorn worker's samples in multiprocess mode and adds the collectors that read stored state."""

from django.urls import path

from . import views

urlpatterns = [
    path("metrics", views.metrics, name="prometheus-django-metrics"),
]
