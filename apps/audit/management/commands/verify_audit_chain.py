from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.audit.models import AuditChainVerification
from apps.audit.services import audit_chain_verification_run


class Command(BaseCommand):
    help = ("Verify the audit hash chain: prints 'OK <count> events, head <hash>', or the first broken sequence "
            "number and why (altered, missing, reordered) and exits 1. The result is stored, so /metrics "
            "(clinpredict_audit_chain_ok) and the auditor pages show it.")

    def handle(self, *args: Any, **options: Any) -> None:
        record = audit_chain_verification_run(trigger=AuditChainVerification.Trigger.COMMAND)
        if record.ok:
            self.stdout.write(f"OK {record.event_count} events, head {record.head_hash}")
            return
        self.stdout.write(f"BROKEN at #{record.broken_seq}: {record.reason}")
        raise CommandError(f"audit chain broken at #{record.broken_seq}", returncode=1)
