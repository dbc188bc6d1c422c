from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.actors import Actor
from apps.core.exceptions import ApplicationError
from apps.monitoring.models import RetrainingRun, Trigger
from apps.monitoring.services import retraining_request, retraining_run_execute

ACTOR = Actor(type="system", id="retrain command")


class Command(BaseCommand):
    help = (
        "Retrain a use case on its current data (the configured CSV, or the training CSV assembled from stored "
        "patients) and register the result as a candidate. Never promotes. Sends the task to the Celery workers "
        "(runs it here when no broker is configured, or with --inline). Safe to rerun: while a retraining of the "
        "use case is queued or running, that run is reported instead of starting another; the same --key never "
        "trains twice."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--use-case", required=True)
        parser.add_argument("--reason", default="requested with manage.py retrain")
        parser.add_argument("--key", default="", help="Names this request: the same key never trains twice")
        parser.add_argument("--inline", action="store_true",
                            help="Train in this process instead of a worker (the run is recorded the same way)")

    def handle(self, *args: Any, use_case: str, reason: str, key: str, inline: bool, **options: Any) -> None:
        self.stdout.write(f"Requesting a retraining of {use_case} (registers a candidate, never promotes) ...")
        try:
            result = retraining_request(use_case=use_case, actor=ACTOR, trigger=Trigger.COMMAND, reason=reason,
                                        request_key=key, enqueue_task=not inline)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        run = result.run
        if not result.created:
            self.stdout.write(f"A retraining of {use_case} exists for this request: run {run.pk} ({run.status}, "
                              f"requested {run.created_at:%Y-%m-%d %H:%M} UTC by {run.requested_by}).")
        if inline and result.created:
            self.stdout.write(f"Training run {run.pk} here ...")
            run = retraining_run_execute(run_id=run.pk, progress=lambda m: self.stdout.write(f"[train] {m}")) or run
        run.refresh_from_db()
        if run.status == RetrainingRun.Status.FAILED:
            raise CommandError(f"retraining run {run.pk} failed: {run.error}")
        if run.status == RetrainingRun.Status.SUCCEEDED and run.candidate is not None:
            new = "registered" if run.candidate_created else "identical to the already registered"
            self.stdout.write(self.style.SUCCESS(
                f"Run {run.pk}: {new} candidate {run.candidate.label} (status {run.candidate.status}, test AUROC "
                f"{run.candidate.test_auroc or float('nan'):.3f}). Promote it with promote_model if it is better."))
        else:
            self.stdout.write(f"Run {run.pk} is {run.status}; a worker trains it (see admin: Retraining runs).")

