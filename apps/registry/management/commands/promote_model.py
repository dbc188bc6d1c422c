from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.actors import Actor
from apps.core.exceptions import ApplicationError
from apps.registry.gate import challenger_gate_evaluate, promotion_gate_evaluate
from apps.registry.selectors import (
    model_version_champion,
    model_version_get,
    model_version_previous_champion,
)
from apps.registry.services import model_version_promote, model_version_rollback, model_version_set_challenger


class Command(BaseCommand):
    help = (
        "Promote a registered model version to champion of its use case, through the same gate as the admin "
        "(parity, test AUROC, calibration slope, artifacts' sha256, feature-spec compatibility); the previous "
        "champion is archived and everything is audited. --rollback promotes the previous champion; --challenger "
        "runs the version in the shadow instead; --dry-run only prints the gate's verdict. Safe to rerun."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # Our --version (the model version) replaces Django's --version (print Django's version and exit).
        kwargs.setdefault("conflict_handler", "resolve")
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--use-case", required=True)
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--version", type=int, help="Version number to promote (e.g. 3 for diabetes@3)")
        target.add_argument("--rollback", action="store_true", help="Promote the champion before the current one")
        parser.add_argument("--challenger", action="store_true", help="Set --version as challenger (shadow)")
        parser.add_argument("--reason", default="", help="Why (required unless --dry-run; kept in the audit log)")
        parser.add_argument("--dry-run", action="store_true", help="Print the gate's verdict and change nothing")
        parser.add_argument("--actor", default="promote_model", help="Name recorded in the audit log")

    def handle(self, *args: Any, **options: Any) -> None:
        use_case = options["use_case"]
        if options["challenger"] and options["rollback"]:
            raise CommandError("--challenger takes --version, not --rollback.")
        try:
            if options["rollback"]:
                version = model_version_previous_champion(use_case=use_case)
                if version is None:
                    raise CommandError(f"{use_case} has no earlier champion to roll back to.")
            else:
                version = model_version_get(use_case=use_case, version=options["version"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        champion = model_version_champion(use_case=use_case)
        challenger = options["challenger"]
        verb = "Setting as challenger" if challenger else "Rolling back to" if options["rollback"] else "Promoting"
        self.stdout.write(f"{verb} {version.label} (currently {version.status}); champion now: "
                          f"{champion.label if champion else 'none'}")
        evaluate = challenger_gate_evaluate if challenger else promotion_gate_evaluate
        verdict = evaluate(version=version, live=champion)
        for check in verdict.checks:
            self.stdout.write(f"  gate {check.name:<18} {'pass' if check.ok else 'FAIL'}  {check.detail}")
        if options["dry_run"]:
            outcome = "passes" if verdict.ok else "BLOCKED"
            self.stdout.write(f"gate verdict: {outcome} (dry run: nothing changed)")
            return
        actor = Actor(type="system", id=options["actor"])
        try:
            if challenger:
                result = model_version_set_challenger(version_id=version.pk, actor=actor, reason=options["reason"])
            elif options["rollback"]:
                result = model_version_rollback(use_case=use_case, actor=actor, reason=options["reason"])
            else:
                result = model_version_promote(version_id=version.pk, actor=actor, reason=options["reason"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        role = "challenger" if challenger else "champion"
        self.stdout.write(self.style.SUCCESS(f"{result.label} is {role} of {result.use_case}"))
