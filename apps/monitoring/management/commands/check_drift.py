from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.actors import Actor
from apps.core.exceptions import ApplicationError
from apps.monitoring.models import Trigger
from apps.monitoring.selectors import monitored_use_cases
from apps.monitoring.services import drift_check_run

ACTOR = Actor(type="system", id="check_drift")


class Command(BaseCommand):
    help = (
        "Compare the champion's recent predictions with the reference profile in its manifest: PSI and missing rate "
        "per feature, PSI of the predicted risk (limits: CLINPREDICT_DRIFT). Stores and audits the result, which "
        "/metrics and the monitoring page show. Too few predictions are reported as such, without an alert. Safe to "
        "rerun (each run is one more stored check)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--use-case", help="One use case (default: every use case with a champion)")
        parser.add_argument("--window-days", type=int, help="Days of predictions to look at (default: settings)")
        parser.add_argument("--fail-on-drift", action="store_true", help="Exit 1 when a feature drifted")

    def handle(self, *args: Any, use_case: str | None, window_days: int | None, fail_on_drift: bool,
               **options: Any) -> None:
        use_cases = [use_case] if use_case else monitored_use_cases()
        if not use_cases:
            self.stdout.write("No use case has a champion model: nothing to check.")
            return
        drifted = []
        for name in use_cases:
            self.stdout.write(f"Checking drift of {name} ...")
            try:
                check = drift_check_run(use_case=name, actor=ACTOR, trigger=Trigger.COMMAND, window_days=window_days)
            except ApplicationError as exc:
                raise CommandError(exc.message) from exc
            self.stdout.write(f"{check.model_label}: {check.status} ({check.n_predictions} predictions, "
                              f"{check.window_start:%Y-%m-%d %H:%M} to {check.window_end:%Y-%m-%d %H:%M} UTC)")
            self.stdout.write(f"  {check.message}")
            for feature in check.features.all():
                psi = "   n/a" if feature.psi is None else f"{feature.psi:6.3f}"
                missing = "" if feature.missing_rate is None else f"  missing {feature.missing_rate:.1%}"
                flag = "  ALERT" if feature.alert or feature.missing_alert else ""
                note = f"  ({feature.note})" if feature.note else ""
                self.stdout.write(f"  {feature.feature:<20} PSI {psi}{missing}{flag}{note}")
            if check.prediction_psi is not None:
                moved = "  MOVED" if check.prediction_alert else ""
                self.stdout.write(f"  {'predicted risk':<20} PSI {check.prediction_psi:6.3f}{moved}")
            for feature in check.alert_features:
                self.stdout.write(self.style.WARNING(f"ALERT {name}: {feature} drifted (limit PSI {check.psi_alert})"))
            if check.alert_features:
                drifted.append(name)
        if drifted and fail_on_drift:
            raise CommandError(f"drift in {', '.join(drifted)}")
