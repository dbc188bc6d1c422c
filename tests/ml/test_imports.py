"""The ml library stays plain Python: no Django/DRF/Celery/apps anywhere, mlflow only in ml/tracking.py."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ML_DIR = Path(__file__).resolve().parents[2] / "ml"
FORBIDDEN = ("django", "rest_framework", "celery", "apps")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_ml_never_imports_django_drf_celery_or_apps() -> None:
    offenders = {str(p.relative_to(ML_DIR)): sorted(_imports(p) & set(FORBIDDEN)) for p in ML_DIR.rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_tracking_imports_mlflow() -> None:
    users = sorted(str(p.relative_to(ML_DIR)) for p in ML_DIR.rglob("*.py") if "mlflow" in _imports(p))
    assert users == ["tracking.py"]


def test_importing_the_library_loads_no_mlflow_or_django() -> None:
    code = (
        "import sys, ml.pipeline, ml.validation, ml.explain, ml.export, ml.tracking, ml.cli; "
        "bad = [m for m in ('mlflow', 'django', 'celery', 'rest_framework') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ML_DIR.parent, capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr
