import getpass
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apps.audit.actors import Actor
from apps.audit.exports import FORMATS, audit_export_stream
from apps.audit.forms import AuditEventFilterForm
from apps.audit.services import audit_export_start


class Command(BaseCommand):
    help = ("Export audit events as CSV, JSONL or a FHIR R4 Bundle of AuditEvent resources, streamed in constant "
            "memory. The export is itself recorded as an audit event (with its filters) before it starts, and covers "
            "the events before that one.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=FORMATS, default="jsonl", dest="export_format")
        parser.add_argument("--output", "-o", default="-", help="File to write ('-' for standard output)")
        for name, field in AuditEventFilterForm.base_fields.items():
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, help=str(field.help_text or ""))
        parser.add_argument("--actor-name", default="", help="Who runs the export (recorded; default: OS user)")

    def handle(self, *args: Any, **options: Any) -> None:
        form = AuditEventFilterForm(data={name: options[name] for name in AuditEventFilterForm.base_fields
                                          if options.get(name) is not None})
        if not form.is_valid():
            problems = "; ".join(f"--{name.replace('_', '-')}: {' '.join(errors)}"
                                 for name, errors in form.errors.items())
            raise CommandError(f"invalid filter: {problems}")
        filters = form.filters()
        export_format = options["export_format"]
        who = options["actor_name"] or getpass.getuser()
        event = audit_export_start(actor=Actor(type="system", id=f"export_audit:{who}"[:150]),
                                   export_format=export_format, filters=filters, channel="command")
        blocks = audit_export_stream(export_format, filters=filters, up_to_seq=event.seq - 1,
                                     exported_at=timezone.now(), export_seq=event.seq)
        target = options["output"]
        written = 0
        if target == "-":
            out = sys.stdout.buffer
            for block in blocks:
                out.write(block)
                written += len(block)
            out.flush()
        else:
            path = Path(target)
            with path.open("wb") as out:
                for block in blocks:
                    out.write(block)
                    written += len(block)
            self.stderr.write(f"export #{event.seq}: wrote {written} bytes of {export_format} to {path}")
