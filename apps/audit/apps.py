from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "apps.audit"
    label = "audit"
    verbose_name = "Audit"

    def ready(self) -> None:
        # By now django.contrib.admin has imported every app's admin module (it is listed first), so the
        # User/Group/Application admins that exist are the final ones to wrap.
        from .auth_events import audit_admin_changes, connect_signals
        from .metrics import register_collector

        connect_signals()
        audit_admin_changes()
        register_collector()
