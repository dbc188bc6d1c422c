"""The import contract (pyproject.toml): ml/ is a plain library (no Django, DRF, Celery or apps); only ml.tracking
imports mlflow. import-linter checks the real import graph."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    linter = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(linter), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_ml_imports_without_django_installed_in_the_process() -> None:
    code = (
        "import sys, ml.schema, ml.validation, ml.pipeline, ml.explain, ml.export\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in {'django', 'rest_framework', 'celery', 'apps'}]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
