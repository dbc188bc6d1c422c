from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.actors import Actor
from apps.core.exceptions import ApplicationError
from apps.patients.selectors import DEFAULT_LOOKBACK
from apps.patients.services import training_dataset_export


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("give a timezone, e.g. 2026-06-01T00:00:00+00:00")
    return value


class Command(BaseCommand):
    help = ("Write a use case's training CSV from the database (features assembled per patient at --at within the "
            "look-back window, canonical units, outcome 1/0), ready for `python -m ml train --spec ... --data OUT`.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--use-case", required=True, help="e.g. t2d_fhir (or a spec YAML path)")
        parser.add_argument("--out", required=True, type=Path, help="the CSV to write")
        parser.add_argument("--at", type=_aware, default=None, help="assessment time (ISO 8601 with timezone; "
                            "default: now)")
        parser.add_argument("--lookback-days", type=float, default=DEFAULT_LOOKBACK.days,
                            help=f"look-back window for observations (default {DEFAULT_LOOKBACK.days})")

    def handle(self, *args: Any, use_case: str, out: Path, at: datetime | None, lookback_days: float,
               **options: Any) -> None:
        self.stdout.write(f"Assembling the {use_case} dataset into {out} ...")
        try:
            result = training_dataset_export(spec=use_case, out_path=out, at=at,
                                             lookback=timedelta(days=lookback_days),
                                             actor=Actor(type="system", id="export_training_data"))
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(self.style.SUCCESS(result.text()))
