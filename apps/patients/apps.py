from django.apps import AppConfig


class PatientsConfig(AppConfig):
    name = "apps.patients"
    label = "patients"
    verbose_name = "Patients"

    def ready(self) -> None:
        from . import checks  # noqa: F401  registers the FHIR client key deployment check
