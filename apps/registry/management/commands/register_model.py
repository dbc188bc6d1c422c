from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.actors import Actor
from apps.core.exceptions import ApplicationError
from apps.registry.services import model_version_register


class Command(BaseCommand):
    help = "Register the output folder of `python -m ml train` as a candidate model version (verifies sha256)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="source", required=True, type=Path, help="`ml train` output folder")

    def handle(self, *args: Any, source: Path, **options: Any) -> None:
        self.stdout.write(f"Registering {source} ...")
        try:
            result = model_version_register(source_dir=source, actor=Actor(type="system", id="register_model"))
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        version = result.version
        state = "registered" if result.created else "already registered as"
        self.stdout.write(self.style.SUCCESS(
            f"{state} {version.label} (status {version.status}, test AUROC {version.test_auroc}, "
            f"onnx sha256 {version.onnx_sha256})"
        ))
