from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.actors import Actor
from apps.core.exceptions import ApplicationError
from apps.monitoring.models import Trigger
from apps.monitoring.selectors import monitored_use_cases
from apps.monitoring.services import scoring_run_start

ACTOR = Actor(type="system", id="score_daily command")


class Command(BaseCommand):
    help = (
        "Score the patients with observations stored since their last prediction (or never predicted) with the "
        "live champion, in chunk tasks the Celery workers share; each prediction is stored and audited like any "
        "other (channel system). Once per use case and day: running it again reports the day's run and re-sends "
        "its chunks that are not done yet."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--use-case", help="One use case (default: every use case with a champion)")
        parser.add_argument("--chunk-size", type=int, help="Patients per task (default: CLINPREDICT_SCORING)")

    def handle(self, *args: Any, use_case: str | None, chunk_size: int | None, **options: Any) -> None:
        use_cases = [use_case] if use_case else monitored_use_cases()
        if not use_cases:
            self.stdout.write("No use case has a champion model: nothing to score.")
            return
        failed = False
        for name in use_cases:
            try:
                plan = scoring_run_start(use_case=name, actor=ACTOR, trigger=Trigger.COMMAND, chunk_size=chunk_size)
            except ApplicationError as exc:
                raise CommandError(exc.message) from exc
            run = plan.run
            what = "planned" if plan.created else "already planned today"
            self.stdout.write(f"{name} {run.day}: {what}: {run.patients} patient(s) with new observations in "
                              f"{run.chunks} chunk(s) of at most {run.chunk_size}, champion {run.model_label}.")
            run.refresh_from_db()
            self.stdout.write(f"  status {run.status}: {run.predicted} scored, {run.skipped} skipped so far"
                              + "".join(f"; {reason}: {n}" for reason, n in sorted(run.skipped_reasons.items())))
            for error in plan.enqueue_errors:
                failed = True
                self.stderr.write(f"  {error}; the chunks stay pending and the next run sends them again")
        if failed:
            raise CommandError("some chunks could not be sent to the workers")
