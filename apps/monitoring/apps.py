from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "apps.monitoring"
    label = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from . import celery_signals
        from .metrics import register_collector

        celery_signals.connect()
        register_collector()
