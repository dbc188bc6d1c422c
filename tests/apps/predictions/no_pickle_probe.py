"""Run by tests/apps/predictions/test_no_pickle.py in a fresh interpreter (so sys.modules starts clean): the real WSGI
application makes one prediction with its explanation through the API, then this prints, as JSON, which of
scikit-learn / joblib / xgboost / SciPy got imported, who imported the stdlib pickle module first, and every
pickle load call with the modules on its stack. Arguments: the bearer token and the request body (JSON)."""

import io
import json
import sys
import traceback

CALLS: list[dict] = []
FIRST_PICKLE_IMPORT: list[str] = []


class _WatchPickleImport:
    """Records the importers of the first `import pickle` (stack of module names), then steps aside."""

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201 - importlib protocol
        if name == "pickle" and not FIRST_PICKLE_IMPORT:
            FIRST_PICKLE_IMPORT.extend(_stack_modules())
        return None


def _stack_modules() -> list[str]:
    seen: list[str] = []
    for frame, _line in traceback.walk_stack(sys._getframe(1)):
        name = frame.f_globals.get("__name__", "?")
        if name.startswith(("importlib", "_frozen_importlib")) or name == __name__:
            continue
        if not seen or seen[-1] != name:
            seen.append(name)
    return seen


def _patch_pickle() -> None:
    import _pickle
    import pickle

    def record(name, real):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            CALLS.append({"function": name, "stack": _stack_modules()})
            return real(*args, **kwargs)
        return wrapper

    for module in (pickle, _pickle):
        for fn in ("load", "loads", "_load", "_loads"):
            if hasattr(module, fn):
                setattr(module, fn, record(f"{module.__name__}.{fn}", getattr(module, fn)))

    for cls_name in ("Unpickler", "_Unpickler"):
        base = getattr(pickle, cls_name)

        class Recording(base):  # type: ignore[misc, valid-type]
            def __init__(self, *args, _n=cls_name, **kwargs):  # noqa: ANN002, ANN003, ANN001
                CALLS.append({"function": f"pickle.{_n}", "stack": _stack_modules()})
                super().__init__(*args, **kwargs)

        setattr(pickle, cls_name, Recording)


def main() -> None:
    token, body = sys.argv[1], sys.argv[2].encode()
    if "pickle" in sys.modules:
        FIRST_PICKLE_IMPORT.append("<already imported at interpreter start>")
    sys.meta_path.insert(0, _WatchPickleImport())

    import django

    django.setup()
    _patch_pickle()  # after whatever imported pickle first; before any model is loaded
    from clinpredict.wsgi import application

    status: list[str] = []
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/api/v1/predictions", "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)), "HTTP_AUTHORIZATION": f"Bearer {token}",
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
    chunks = application(environ, lambda s, headers, exc_info=None: status.append(s))
    response = b"".join(chunks)
    forbidden = sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "joblib", "xgboost", "scipy"))
    print(json.dumps({
        "status": status[0],
        "response": json.loads(response or b"null"),
        "forbidden_modules": forbidden,
        "pickle_imported": "pickle" in sys.modules,
        "pickle_first_imported_by": FIRST_PICKLE_IMPORT,
        "pickle_load_calls": CALLS,
    }))


if __name__ == "__main__":
    main()
