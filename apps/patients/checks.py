"""Deployment checks of the FHIR sync's settings (`manage.py check --deploy`, also run by production processes before
they serve, apps/core/startup.py): a configured client key that cannot sign stops start-up naming the setting,
instead of failing every scheduled sync later."""

from typing import Any

from django.core.checks import CheckMessage, Error, Tags, register

from apps.core.exceptions import ApplicationError

from .services import FhirSettings


@register(Tags.security, deploy=True)
def check_fhir_client_key(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        FhirSettings.from_django().signing_key()
    except ApplicationError as exc:
        setting = next(iter(exc.fields or {}), "FHIR_PRIVATE_KEY_FILE")
        return [Error(exc.message, hint=f"Fix {setting}, or unset FHIR_PRIVATE_KEY_FILE to use FHIR_CLIENT_SECRET "
                      "(client_secret_basic).", id="patients.E001")]
    return []
