"""The S3-API server of tests/storage/conftest.py (moto's standalone server, one per session) for the multi-replica
tests: `s3_server` and `s3_prefix` come from that file, loaded by path like tests/conftest.py loads its helpers (a
site-packages package already owns the top-level name `tests`)."""

import importlib.util
import sys
from pathlib import Path

_NAME = "clinpredict_tests_storage_conftest"
if _NAME not in sys.modules:
    _path = Path(__file__).resolve().parents[1] / "storage" / "conftest.py"
    _spec = importlib.util.spec_from_file_location(_NAME, _path)
    assert _spec is not None and _spec.loader is not None
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])
_storage = sys.modules[_NAME]

s3_server, s3_prefix, S3Server = _storage.s3_server, _storage.s3_prefix, _storage.S3Server
__all__ = ["S3Server", "s3_prefix", "s3_server"]
