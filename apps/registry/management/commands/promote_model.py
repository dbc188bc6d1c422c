from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.actors import Actor
from apps.core.exceptions import ApplicationError
from apps.registry.models import ModelVersion
from apps.registry.services import model_version_promote


class Command(BaseCommand):
    help = "Promote a registered model version to champion of its use case (the previous champion is archived)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--use-case", required=True)
        parser.add_argument("--version", required=True, type=int)
        parser.add_argument("--reason", required=True, help="Why this version should serve patients (audited)")
        parser.add_argument("--actor", default="promote_model", help="Name recorded in the audit log")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            version = ModelVersion.objects.get(use_case=options["use_case"], version=options["version"])
        except ModelVersion.DoesNotExist as exc:
            raise CommandError(f"No model version {options['use_case']}@{options['version']}") from exc
        self.stdout.write(f"Promoting {version.label} (currently {version.status}) ...")
        try:
            promoted = model_version_promote(
                version_id=version.pk, actor=Actor(type="system", id=options["actor"]), reason=options["reason"]
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(self.style.SUCCESS(f"{promoted.label} is champion of {promoted.use_case}"))
