"""TreeSHAP contributions from an XGBoost booster file through libxgboost's C API, without the ``xgboost`` package.

Why not ``import xgboost``: its ``__init__`` imports ``xgboost.compat``, which imports scikit-learn whenever it is
installed (``from sklearn.base import BaseEstimator`` ...), and ``xgboost.core`` imports SciPy unconditionally. The
web process must not import scikit-learn at all, so it talks to the very same shared library
(``xgboost/lib/libxgboost.so``, which the Python package itself loads with ctypes) through the documented C API:
``XGBoosterLoadModelFromBuffer``, ``XGDMatrixCreateFromDense`` and ``XGBoosterPredictFromDMatrix`` with prediction
type 2, the call ``Booster.predict(dmatrix, pred_contribs=True)`` makes. Same library, same code path, so the
contributions are identical bit for bit (tests/ml/test_serving_explain.py).

Only ``importlib.util.find_spec("xgboost")`` touches the package: it locates the folder without executing it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NativeBooster", "XGBoostNativeError", "library_path"]

_PREDICT_CONTRIBUTIONS = 2  # PredictionType::kContribution in xgboost/c_api.h (pred_contribs=True)


class XGBoostNativeError(RuntimeError):
    """libxgboost could not be found or loaded, or a C API call failed."""


def library_path() -> Path:
    """The libxgboost shared library of the installed ``xgboost`` distribution (the same candidates, in the same
    order, as ``xgboost/libpath.py``)."""
    spec = importlib.util.find_spec("xgboost")
    if spec is None or not spec.submodule_search_locations:
        raise XGBoostNativeError("the xgboost distribution is not installed")
    if sys.platform == "win32":
        name = "xgboost.dll"
    elif sys.platform == "darwin":
        name = "libxgboost.dylib"
    else:
        name = "libxgboost.so"
    package = Path(next(iter(spec.submodule_search_locations)))
    for folder in (package / "lib", package.parent.parent / "lib", Path(sys.base_prefix) / "lib"):
        if (folder / name).is_file():
            return folder / name
    raise XGBoostNativeError(f"{name} not found beside the xgboost package in {package}")


_lib: Any = None
_lib_lock = threading.Lock()


def _library() -> Any:
    global _lib
    if _lib is None:
        with _lib_lock:
            if _lib is None:
                path = library_path()
                try:
                    lib = ctypes.cdll.LoadLibrary(str(path))
                except OSError as exc:
                    raise XGBoostNativeError(f"cannot load {path}: {exc}") from exc
                lib.XGBGetLastError.restype = ctypes.c_char_p
                _lib = lib
    return _lib


def _check(rc: int) -> None:
    if rc != 0:
        raise XGBoostNativeError(_library().XGBGetLastError().decode("utf-8", "replace"))


class NativeBooster:
    """One booster loaded from the bytes of a model file XGBoost wrote (UBJSON or JSON), predicting on one thread.

    Thread-safe for prediction like ``xgboost.Booster.predict`` (the C API keeps each thread's output buffer
    apart); the buffer is copied before the call returns."""

    def __init__(self, raw: bytes) -> None:
        lib = _library()
        self._lib = lib
        self._handle = ctypes.c_void_p()
        _check(lib.XGBoosterCreate(None, ctypes.c_uint64(0), ctypes.byref(self._handle)))
        buffer = (ctypes.c_char * len(raw)).from_buffer_copy(raw)
        _check(lib.XGBoosterLoadModelFromBuffer(self._handle, buffer, ctypes.c_uint64(len(raw))))
        # One thread: for the few rows of a request, OpenMP start-up on a busy host costs more than the work
        # (benchmarks/results/profile_request.json); the contributions are the same on any number of threads.
        _check(lib.XGBoosterSetParam(self._handle, b"nthread", b"1"))
        self._config = json.dumps({"type": _PREDICT_CONTRIBUTIONS, "training": False, "iteration_begin": 0,
                                   "iteration_end": 0, "strict_shape": False}).encode()

    def num_features(self) -> int:
        out = ctypes.c_uint64()
        _check(self._lib.XGBoosterGetNumFeature(self._handle, ctypes.byref(out)))
        return int(out.value)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """float32 (n, n_features + 1): per-feature contributions, bias last, on the booster's margin scale
        (exactly ``Booster.predict(DMatrix(X, missing=nan), pred_contribs=True)``)."""
        arr = np.ascontiguousarray(X, dtype=np.float32)
        if arr.ndim != 2:
            raise ValueError(f"expected a 2-D array, got {arr.ndim} dimension(s)")
        matrix = ctypes.c_void_p()
        interface = json.dumps(arr.__array_interface__).encode()
        # json writes NaN as the bare token NaN, which XGBoost's JSON reader accepts (the Python package does this).
        config = json.dumps({"missing": float("nan"), "nthread": 1}).encode()
        _check(self._lib.XGDMatrixCreateFromDense(interface, config, ctypes.byref(matrix)))
        try:
            shape = ctypes.POINTER(ctypes.c_uint64)()
            dims = ctypes.c_uint64()
            out = ctypes.POINTER(ctypes.c_float)()
            _check(self._lib.XGBoosterPredictFromDMatrix(self._handle, matrix, self._config, ctypes.byref(shape),
                                                         ctypes.byref(dims), ctypes.byref(out)))
            dims_tuple = tuple(int(shape[i]) for i in range(dims.value))
            size = int(np.prod(dims_tuple))
            flat = np.ctypeslib.as_array(out, shape=(size,)).copy() if size else np.zeros(0, dtype=np.float32)
        finally:
            _check(self._lib.XGDMatrixFree(matrix))
        return flat.reshape(arr.shape[0], -1)

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.XGBoosterFree(handle)
            self._handle = None
