from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.actors import Actor
from apps.core.exceptions import ApplicationError
from apps.registry.services import model_version_register, model_version_register_from_mlflow


class Command(BaseCommand):
    help = ("Register the output folder of `python -m ml train` (--from DIR), or the run folder `ml train` logged to "
            "MLflow (--from-mlflow-run RUN_ID), as a candidate model version. Every artifact's sha256 and the ONNX "
            "parity are verified; nothing is kept when a check fails. Safe to rerun.")

    def add_arguments(self, parser: CommandParser) -> None:
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--from", dest="source", type=Path, help="`ml train` output folder")
        source.add_argument("--from-mlflow-run", dest="run_id", help="MLflow run id (MLFLOW_TRACKING_URI)")
        parser.add_argument("--actor", default="register_model", help="Name recorded in the audit log")

    def handle(self, *args: Any, source: Path | None, run_id: str | None, **options: Any) -> None:
        actor = Actor(type="system", id=options["actor"])
        self.stdout.write(f"Registering {source or f'MLflow run {run_id}'} ...")
        try:
            if run_id:
                result = model_version_register_from_mlflow(run_id=run_id, actor=actor)
            else:
                assert source is not None  # noqa: S101 - argparse requires one of the two
                result = model_version_register(source_dir=source, actor=actor)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        version = result.version
        state = "registered" if result.created else "already registered as"
        self.stdout.write(self.style.SUCCESS(
            f"{state} {version.label} (status {version.status}, test AUROC {version.test_auroc}, "
            f"onnx sha256 {version.onnx_sha256})"
        ))
