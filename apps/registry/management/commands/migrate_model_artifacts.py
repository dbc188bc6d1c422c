from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.actors import Actor
from apps.core.exceptions import ApplicationError
from apps.registry.explainer_migration import model_version_explainer_migrate
from apps.registry.models import ModelVersion


class Command(BaseCommand):
    help = ("Write the non-pickle explainer file (model.xgb.ubj / model.mlp.json / model.linear.json) and the "
            "calibration constants into every registered version that predates it, so the web process serves it "
            "without model.joblib. Reads "
            "each version's hash-verified model.joblib here (never in the web process), checks the explanations "
            "match within 1e-6, records the file's sha256; one transaction and one audit event per version. Safe "
            "to rerun: migrated versions are left alone.")

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # Our --version (the model version) replaces Django's --version (print Django's version and exit).
        kwargs.setdefault("conflict_handler", "resolve")
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--use-case", help="Only this use case")
        parser.add_argument("--version", type=int, help="Only this version number (with --use-case)")
        parser.add_argument("--force", action="store_true", help="Rewrite the explainer of migrated versions too")
        parser.add_argument("--actor", default="migrate_model_artifacts", help="Name recorded in the audit log")

    def handle(self, *args: Any, **options: Any) -> None:
        versions = ModelVersion.objects.order_by("use_case", "version")
        if options["use_case"]:
            versions = versions.filter(use_case=options["use_case"])
        if options["version"] is not None:
            if not options["use_case"]:
                raise CommandError("--version needs --use-case")
            versions = versions.filter(version=options["version"])
        ids = list(versions.values_list("pk", flat=True))
        if not ids:
            self.stdout.write("No model versions to migrate.")
            return
        actor = Actor(type="system", id=options["actor"])
        failed = 0
        for pk in ids:
            try:
                result = model_version_explainer_migrate(version_id=pk, actor=actor, force=options["force"])
            except ApplicationError as exc:
                failed += 1
                label = ModelVersion.objects.get(pk=pk).label
                self.stderr.write(self.style.ERROR(f"{label}: not migrated: {exc.message}"))
                continue
            version = result.version
            if result.migrated:
                self.stdout.write(self.style.SUCCESS(
                    f"{version.label}: wrote {result.file} (sha256 {result.sha256}); explanations match the "
                    f"fitted model within {result.parity_max_abs_diff:.1e}"))
            else:
                self.stdout.write(f"{version.label}: already migrated ({result.file}, sha256 {result.sha256})")
        if failed:
            raise CommandError(f"{failed} version(s) could not be migrated; they are not served until they are.")
