from datetime import datetime
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.actors import Actor
from apps.core.exceptions import ApplicationError
from apps.patients.services import patients_import_csv


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("give a timezone, e.g. 2026-01-01T00:00:00+00:00")
    return value


class Command(BaseCommand):
    help = ("Import patients, observations (canonical units) and outcomes from a CSV extract with the columns of a "
            "use-case spec. The file is validated with the `ml` dataset checks first and imported all-or-nothing; "
            "the report names rows. Importing the same file again adds nothing. Exit code 1 when nothing was "
            "imported.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--spec", required=True,
                            help="use case name or spec YAML path, e.g. ml/specs/diabetes.yaml")
        parser.add_argument("--csv", required=True, type=Path, help="the CSV file")
        parser.add_argument("--source", default="csv", help="name of the extract's source system (default csv)")
        parser.add_argument("--effective-at", type=_aware, default=None,
                            help="when the values were measured (ISO 8601 with timezone; default: now)")

    def handle(self, *args: Any, spec: str, csv: Path, source: str, effective_at: datetime | None,
               **options: Any) -> None:
        self.stdout.write(f"Importing {csv} with spec {spec} (all-or-nothing) ...")
        if not csv.is_file():
            raise CommandError(f"--csv {csv}: no such file")
        try:
            result = patients_import_csv(spec=spec, csv_path=csv, actor=Actor(type="system", id="import_patients"),
                                         source_name=source, effective_at=effective_at)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if not result.ok:
            self.stderr.write(result.text())
            raise CommandError(f"import run #{result.run.pk} FAILED: nothing was stored")
        self.stdout.write(self.style.SUCCESS(result.text()))
