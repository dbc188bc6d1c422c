import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.core.exceptions import ApplicationError
from apps.patients.services import FhirSettings
from apps.patients.smart_backend import (
    SUPPORTED_ALGS,
    signing_key_generate,
    signing_key_load,
    signing_key_write,
)


class Command(BaseCommand):
    help = ("Print the public JWKS of the FHIR sync's client key (FHIR_PRIVATE_KEY / FHIR_PRIVATE_KEY_FILE, kid "
            "FHIR_KEY_ID) to register at the FHIR server for SMART Backend Services (private_key_jwt). With "
            "--generate-key PATH, first write a new private key there (never over an existing file). Public keys "
            "only are printed.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--generate-key", metavar="PATH", type=Path,
                            help="write a new unencrypted PEM private key to PATH (mode 0600) and print its JWKS")
        parser.add_argument("--alg", choices=SUPPORTED_ALGS, default="RS384",
                            help="algorithm of the generated key (default RS384: RSA 3072; ES384: EC P-384)")

    def handle(self, *args: Any, generate_key: Path | None, alg: str, **options: Any) -> None:
        fhir = FhirSettings.from_django()
        if generate_key is not None:
            pem = signing_key_generate(alg)
            try:
                signing_key_write(generate_key, pem)
            except FileExistsError:
                raise CommandError(f"{generate_key} exists: not replaced (a key in use would stop the FHIR sync); "
                                   "choose another path") from None
            key = signing_key_load(pem, alg=alg)
            self.stderr.write(f"Wrote a new {alg} private key to {generate_key} (mode 0600). Use it with "
                              f"FHIR_PRIVATE_KEY_FILE={generate_key} (kid {key.kid}, or set FHIR_KEY_ID) and "
                              "register this JWKS for the client at the FHIR server:")
        else:
            try:
                key = fhir.signing_key()
            except ApplicationError as exc:
                raise CommandError(exc.message) from exc
            if key is None:
                raise CommandError("no FHIR client key is configured: set FHIR_PRIVATE_KEY_FILE (create one with "
                                   "--generate-key PATH)")
        self.stdout.write(json.dumps(key.public_jwks(), indent=2))
