from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.actors import Actor
from apps.core.exceptions import ApplicationError
from apps.patients.fhir_client import SearchPage
from apps.patients.models import IngestionRun
from apps.patients.services import DEFAULT_SYNC_USE_CASE, fhir_sync_run, sync_report


class Command(BaseCommand):
    help = ("Sync Patients, the use case's Observations (by the LOINC codes of its spec) and outcome Conditions from "
            "the FHIR R4 server in FHIR_BASE_URL (client credentials FHIR_CLIENT_ID / FHIR_CLIENT_SECRET). "
            "Incremental by _lastUpdated since the last successful sync; safe to rerun. Exit code 1 when the run "
            "did not complete.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--spec", default=DEFAULT_SYNC_USE_CASE,
                            help=f"use case name or spec YAML path (default {DEFAULT_SYNC_USE_CASE})")
        parser.add_argument("--full", action="store_true",
                            help="ask for every resource, not only those changed since the last successful sync")

    def handle(self, *args: Any, spec: str, full: bool, **options: Any) -> None:
        self.stdout.write(f"Syncing {spec} from the FHIR server ({'full' if full else 'incremental'}) ...")

        def progress(page: SearchPage, run: IngestionRun) -> None:
            total = "?" if page.total is None else page.total
            done = run.counts.get(page.resource_type, {}).get("fetched", 0)
            self.stdout.write(f"  {page.resource_type} page {page.number}: {done}/{total}")

        try:
            run = fhir_sync_run(spec=spec, actor=Actor(type="system", id="sync_fhir command"), full=full,
                                progress=progress)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        report = sync_report(run)
        if not run.complete:
            self.stderr.write(report)
            raise CommandError(f"FHIR sync run #{run.pk} FAILED: {run.error}")
        self.stdout.write(self.style.SUCCESS(report))
