"""The fitted model (``model.joblib``, a pickle) of a registered version: for management commands and workers only.

The web process never calls this: it serves ONNX plus the non-pickle explainer (apps/registry/loader.py), and an
import-linter contract keeps this module out of the serving path (pyproject.toml). Unpickling runs code from the
file, so it is only done on the hash-verified bytes of a registered version.
"""

import io
from typing import Any

from .artifacts import read_verified
from .models import ModelVersion


def load_fitted_model_for_tools(version: ModelVersion) -> Any:
    """The ``ml.model.ClinicalModel`` saved by ``ml train`` for this version, from its verified bytes (imports
    joblib and scikit-learn). Raises ModelIntegrityError when the file is missing or altered."""
    import joblib

    return joblib.load(io.BytesIO(read_verified(version, "model.joblib")))
