"""The Kubernetes manifests under deploy/kubernetes/ are valid Kubernetes objects and keep docker/compose.yaml's
promises on a cluster.

Offline, without a cluster or the kubectl binary:

- `render()` builds a kustomization the way kustomize does for the few features the base and the overlays use
  (`resources`, `namespace`, `images`, `patches` that merge maps and replace whole lists) and refuses anything else,
  so it cannot silently render something kustomize would not. Where kubectl is installed, its `kubectl kustomize`
  output is compared with ours (same objects, same content).
- every rendered object is validated with kubernetes-validate against the pinned Kubernetes schema versions below
  (strict: an unknown or misspelt field is an error). docs/deploy.md gives the same check as a command.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAYS = sorted(path.parent for path in (KUBERNETES / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZATIONS = [BASE, *OVERLAYS]
COMPOSE_FILE = REPO / "docker" / "compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
DEPLOY_DOC = REPO / "docs" / "deploy.md"

# The oldest Kubernetes minor the manifests promise to work on, and the newest schema kubernetes-validate ships
# (requirements/dev.in pins the package): an API removed upstream fails the second.
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")

COMPONENTS = {"config", "db-roles", "migrate", "web", "worker", "beat"}
WORKLOADS = {"Deployment", "Job"}
APP_UID = 10001
SECRET_DIR = PurePosixPath("/run/secrets/clinpredict")
# Every egress port a component may use (DNS for every pod comes from its own policy): PostgreSQL, Redis, HTTPS
# (object storage, FHIR), and for the worker the MLflow tracking server. docs/deploy.md lists the same.
EGRESS_PORTS = {
    "web": {5432, 6379, 443},
    "worker": {5432, 6379, 443, 5000},
    "beat": {5432, 6379},
    "migrate": {5432},
    "db-roles": {5432},
}
# Secret keys each component mounts: compose's secrets for the same service (tests/deploy/test_docker_files.py), plus
# the object-storage keys for the two that read or write model artifacts.
S3_KEYS = {"aws_access_key_id", "aws_secret_access_key"}
EXTRA_SECRET_KEYS = {"web": S3_KEYS, "worker": S3_KEYS}
# A setting whose name says it is a secret: allowed only as <NAME>_FILE.
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|(^|_)KEY|ACCESS_KEY_ID)$")
# Lists that a strategic merge patch merges by key: a patch touching one would render differently here.
MERGE_KEYED_LISTS = {"containers", "initContainers", "volumes", "volumeMounts", "env", "envFrom", "ports",
                     "imagePullSecrets", "topologySpreadConstraints"}
SUPPORTED_KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}


# --- the renderer --------------------------------------------------------------------------------------------------


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _merge(target: Any, patch: Any, where: str) -> Any:
    """RFC 7386 merge: maps merge key by key, null deletes, anything else (lists included) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        assert key not in MERGE_KEYED_LISTS, (
            f"{where}: the patch touches `{key}`, a list kustomize merges by key; the test renderer only replaces "
            "lists, so write this change another way (or teach render() strategic merge)"
        )
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value, f"{where}.{key}")
    return result


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj["kind"] in WORKLOADS:
        return obj["spec"]["template"]["spec"]
    return None


def _retag(image: str, rules: list[dict[str, str]]) -> str:
    name = re.split(r"[@]", image)[0]
    name = re.sub(r":[^/:]+$", "", name)
    for rule in rules:
        if rule["name"] == name:
            new = rule.get("newName", name)
            if "digest" in rule:
                return f"{new}@{rule['digest']}"
            return f"{new}:{rule['newTag']}" if "newTag" in rule else new
    return image


def render(directory: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - SUPPORTED_KUSTOMIZATION_FIELDS
    assert not unsupported, f"{directory}: render() does not implement {sorted(unsupported)}"
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        objects.extend(render(path) if path.is_dir() else _load(path))
    for item in kustomization.get("patches", []):
        assert set(item) == {"path"}, f"{directory}: only `patches: - path: file` is implemented"
        for patch in _load(directory / item["path"]):
            matches = [obj for obj in objects if (obj["kind"], obj["metadata"]["name"], obj["apiVersion"])
                       == (patch["kind"], patch["metadata"]["name"], patch["apiVersion"])]
            assert len(matches) == 1, f"{directory / item['path']}: patches {len(matches)} objects"
            merged = _merge(matches[0], patch, f"{item['path']}:{patch['kind']}/{patch['metadata']['name']}")
            objects[objects.index(matches[0])] = merged
    if "namespace" in kustomization:
        for obj in objects:
            obj["metadata"]["namespace"] = kustomization["namespace"]
    for obj in objects:
        pod = _pod_spec(obj)
        for container in (pod or {}).get("containers", []) + (pod or {}).get("initContainers", []):
            container["image"] = _retag(container["image"], kustomization.get("images", []))
    return objects


# --- helpers -------------------------------------------------------------------------------------------------------


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


@pytest.fixture(scope="module", params=KUSTOMIZATIONS, ids=lambda path: str(path.relative_to(KUBERNETES)))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def _by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def _component(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def _workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """component -> its Deployment or Job."""
    return {_component(obj): obj for obj in objects if obj["kind"] in WORKLOADS}


def _containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for component, obj in _workloads(objects).items():
        pod = _pod_spec(obj)
        assert pod is not None
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            yield component, pod, container


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def _settings(objects: list[dict[str, Any]]) -> dict[str, str]:
    return _by_kind(objects, "ConfigMap")["clinpredict-settings"]["data"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", "extend _selects for this operator"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj["spec"]["template"]["metadata"]["labels"]


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


# --- rendering and schema validation -------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed; render() alone is used")
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda path: str(path.relative_to(KUBERNETES)))
def test_render_matches_kubectl_kustomize(directory: Path) -> None:
    result = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    theirs = {_key(obj): obj for obj in yaml.safe_load_all(result.stdout) if obj}
    ours = {_key(obj): obj for obj in render(directory)}
    assert theirs == ours


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_pinned_kubernetes_schema(
    rendered: list[dict[str, Any]], version: str
) -> None:
    errors = []
    for obj in rendered:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_base_has_every_object_the_deployment_needs() -> None:
    keys = {_key(obj) for obj in render(BASE)}
    assert {
        ("ConfigMap", "clinpredict-settings"), ("ServiceAccount", "clinpredict"),
        ("Deployment", "clinpredict-web"), ("Deployment", "clinpredict-worker"), ("Deployment", "clinpredict-beat"),
        ("Job", "clinpredict-migrate"), ("Job", "clinpredict-db-roles"),
        ("Service", "clinpredict-web"), ("Ingress", "clinpredict-web"),
        ("HorizontalPodAutoscaler", "clinpredict-web"), ("HorizontalPodAutoscaler", "clinpredict-worker"),
        ("PodDisruptionBudget", "clinpredict-web"), ("PodDisruptionBudget", "clinpredict-worker"),
        ("NetworkPolicy", "clinpredict-default-deny"),
    } <= keys
    assert not any(kind == "Secret" for kind, _ in keys), "secrets are created outside git (docs/deploy.md)"


def test_docs_give_the_validation_command_for_the_pinned_versions() -> None:
    text = DEPLOY_DOC.read_text()
    for version in KUBERNETES_VERSIONS:
        assert f"python -m kubernetes_validate --strict -k {version}" in text
    assert "tests/deploy/test_kubernetes.py" in text


# --- release steps -------------------------------------------------------------------------------------------------


def test_every_object_belongs_to_one_release_step(rendered: list[dict[str, Any]]) -> None:
    """docs/deploy.md applies the objects in steps selected by app.kubernetes.io/component."""
    for obj in rendered:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "clinpredict", _key(obj)
        assert labels.get("app.kubernetes.io/component") in COMPONENTS, _key(obj)
        if obj["kind"] in {"ConfigMap", "ServiceAccount", "NetworkPolicy"}:
            assert _component(obj) == "config", _key(obj)
        if obj["kind"] == "Job":
            assert _component(obj) in {"db-roles", "migrate"}, _key(obj)
        if obj["kind"] in WORKLOADS:
            assert _pod_labels(obj)["app.kubernetes.io/component"] == _component(obj)


def test_one_image_for_every_process(rendered: list[dict[str, Any]]) -> None:
    images = {container["image"] for _, _, container in _containers(rendered)}
    assert len(images) == 1, images
    assert set(_workloads(rendered)) == {"web", "worker", "beat", "migrate", "db-roles"}


# --- hardening -----------------------------------------------------------------------------------------------------


def test_every_container_is_hardened_as_in_compose(rendered: list[dict[str, Any]]) -> None:
    for component, pod, container in _containers(rendered):
        where = f"{component}/{container['name']}"
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["serviceAccountName"] == "clinpredict", where
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), where
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True, where
        assert (context["runAsUser"], context["runAsGroup"]) == (APP_UID, APP_UID), where
        assert context["readOnlyRootFilesystem"] is True, where
        assert context["allowPrivilegeEscalation"] is False, where
        assert context.get("privileged", False) is False, where
        assert context["capabilities"] == {"drop": ["ALL"]}, where
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where}: resources.{kind}"


def test_uid_is_the_images_user() -> None:
    assert re.search(rf"useradd [^\n]*--uid {APP_UID}\b", DOCKERFILE.read_text())
    assert re.search(rf"groupadd [^\n]*--gid {APP_UID}\b", DOCKERFILE.read_text())


def test_writable_paths_are_emptydirs_and_nothing_else_is_writable(rendered: list[dict[str, Any]]) -> None:
    for component, pod, container in _containers(rendered):
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in container["volumeMounts"]}
        for path in ("/tmp", "/tmp/prometheus", "/home/clinpredict"):
            assert "emptyDir" in mounts.get(path, {}), f"{component}: {path} is not an emptyDir"
        for path, volume in mounts.items():
            assert set(volume) & {"emptyDir", "secret"}, f"{component}: {path} is neither an emptyDir nor a secret"
        for volume in volumes.values():
            assert "hostPath" not in volume and "persistentVolumeClaim" not in volume, component


# --- secrets -------------------------------------------------------------------------------------------------------


def test_every_file_variable_points_at_a_key_of_a_mounted_secret(rendered: list[dict[str, Any]]) -> None:
    for component, pod, container in _containers(rendered):
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        files: set[PurePosixPath] = set()
        for mount in container["volumeMounts"]:
            secret = volumes[mount["name"]].get("secret")
            if secret:
                assert mount.get("readOnly") is True, component
                assert secret["defaultMode"] == 0o440, f"{component}: secret files readable by owner and fsGroup only"
                files |= {PurePosixPath(mount["mountPath"]) / item["path"] for item in secret["items"]}
        for name, item in _env(container).items():
            if name.endswith("_FILE"):
                assert PurePosixPath(item["value"]) in files, f"{component}: {name}={item['value']} is not mounted"


def test_each_component_mounts_the_secrets_compose_gives_it_and_no_more(rendered: list[dict[str, Any]]) -> None:
    compose = _compose()["services"]
    for component, pod, _ in _containers(rendered):
        keys = {item["key"] for volume in pod["volumes"] if "secret" in volume
                for item in volume["secret"]["items"]}
        assert all(volume["secret"]["secretName"] == "clinpredict-secrets"
                   for volume in pod["volumes"] if "secret" in volume)
        expected = set(compose[component]["secrets"]) | EXTRA_SECRET_KEYS.get(component, set())
        assert keys == expected, component


def test_no_setting_or_environment_value_is_a_secret(rendered: list[dict[str, Any]]) -> None:
    values = dict(_settings(rendered))
    for component, _, container in _containers(rendered):
        for name, item in _env(container).items():
            assert not (SECRET_NAME.search(name) and "value" in item), f"{component}: {name} has a literal value"
            if "value" in item:
                values[f"{component}:{name}"] = item["value"]
    for name, value in values.items():
        assert not SECRET_NAME.search(name.split(":")[-1]), f"{name} belongs in clinpredict-secrets, as a file"
        if "://" in value:
            assert urlsplit(value).password is None, f"{name} carries a password"


# --- settings ------------------------------------------------------------------------------------------------------


def test_production_settings_with_a_shared_redis_cache_and_broker(rendered: list[dict[str, Any]]) -> None:
    settings = _settings(rendered)
    assert settings["DJANGO_SETTINGS_MODULE"] == "clinpredict.settings.production"
    cache, broker = urlsplit(settings["CACHE_URL"]), urlsplit(settings["CELERY_BROKER_URL"])
    assert cache.scheme in {"redis", "rediss"} and broker.scheme in {"redis", "rediss"}
    assert (cache.path, broker.path) == ("/1", "/0"), "cache on Redis db 1, broker on db 0, as in compose"
    assert settings["TRUSTED_PROXY_COUNT"] == "1"
    for name in ("ARTIFACT_S3_BUCKET", "ARTIFACT_S3_REGION", "ARTIFACT_S3_PREFIX"):
        assert settings[name], name


def test_database_roles_per_component(rendered: list[dict[str, Any]]) -> None:
    """web, worker and beat as clinpredict_app; migrate as the owner; db-roles as the superuser (compose's roles)."""
    settings = _settings(rendered)
    user = {name: urlsplit(settings[name]).username
            for name in ("DATABASE_URL", "DATABASE_URL_OWNER", "DATABASE_URL_SUPERUSER")}
    assert user["DATABASE_URL"] == "clinpredict_app"
    assert user["DATABASE_URL_OWNER"] == "clinpredict_owner"
    password_file = {"web": "db_app_password", "worker": "db_app_password", "beat": "db_app_password",
                     "migrate": "db_owner_password", "db-roles": "postgres_superuser_password"}
    url_key = {"migrate": "DATABASE_URL_OWNER", "db-roles": "DATABASE_URL_SUPERUSER"}
    for component, _, container in _containers(rendered):
        env = _env(container)
        assert PurePosixPath(env["DATABASE_PASSWORD_FILE"]["value"]) == SECRET_DIR / password_file[component]
        if component in url_key:
            assert env["DATABASE_URL"]["valueFrom"]["configMapKeyRef"]["key"] == url_key[component]
        else:
            assert "DATABASE_URL" not in env, f"{component} takes DATABASE_URL (the app role) from the ConfigMap"
        assert container["envFrom"] == [{"configMapRef": {"name": "clinpredict-settings"}}], component


def test_commands_are_composes(rendered: list[dict[str, Any]]) -> None:
    """The same commands as docker/compose.yaml, with the secrets under /run/secrets/clinpredict/ instead."""
    compose = _compose()["services"]
    for component, _, container in _containers(rendered):
        if component == "web":
            continue
        expected = [arg.replace("/run/secrets/", f"{SECRET_DIR}/") for arg in compose[component]["command"]]
        assert container["command"] == expected, component
        assert "args" not in container, component


def test_web_runs_the_images_gunicorn_command_with_its_config_file(rendered: list[dict[str, Any]]) -> None:
    web = _workloads(rendered)["web"]["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in web and "args" not in web, "a command override must keep `-c gunicorn.conf.py`"
    cmd = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD ")]
    assert len(cmd) == 1 and "-c gunicorn.conf.py" in cmd[0] and "--bind 0.0.0.0:8000" in cmd[0]


def test_web_allowed_hosts_add_localhost_and_the_pod_ip_to_the_public_names(rendered: list[dict[str, Any]]) -> None:
    env = _env(_workloads(rendered)["web"]["spec"]["template"]["spec"]["containers"][0])
    names = list(env)
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["PUBLIC_HOSTS"]["valueFrom"]["configMapKeyRef"] == {"name": "clinpredict-settings",
                                                                   "key": "ALLOWED_HOSTS"}
    assert env["ALLOWED_HOSTS"]["value"] == "$(PUBLIC_HOSTS),localhost,$(POD_IP)"
    # $(VAR) expands only variables defined earlier in the list.
    assert names.index("POD_IP") < names.index("ALLOWED_HOSTS") and names.index("PUBLIC_HOSTS") < names.index(
        "ALLOWED_HOSTS")


def test_ingress_hosts_are_allowed_and_trusted_for_csrf(rendered: list[dict[str, Any]]) -> None:
    settings = _settings(rendered)
    ingress = _by_kind(rendered, "Ingress")["clinpredict-web"]["spec"]
    assert ingress["ingressClassName"] == "nginx"
    rule_hosts = {rule["host"] for rule in ingress["rules"]}
    tls_hosts = {host for tls in ingress["tls"] for host in tls["hosts"]}
    assert rule_hosts == tls_hosts, "every host is served with TLS"
    assert all(tls["secretName"] for tls in ingress["tls"])
    assert rule_hosts <= set(settings["ALLOWED_HOSTS"].split(","))
    assert {f"https://{host}" for host in rule_hosts} <= set(settings["CSRF_TRUSTED_ORIGINS"].split(","))
    for rule in ingress["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"]["name"] in _by_kind(rendered, "Service")


# --- probes, rollout, scaling --------------------------------------------------------------------------------------


def test_web_probes_healthz_for_liveness_and_readyz_for_readiness(rendered: list[dict[str, Any]]) -> None:
    web = _workloads(rendered)["web"]["spec"]["template"]["spec"]["containers"][0]
    paths = {probe: web[probe]["httpGet"]["path"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert paths == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe in paths:
        assert web[probe]["httpGet"]["port"] == "http"
        assert web[probe]["httpGet"]["httpHeaders"] == [{"name": "Host", "value": "localhost"}]
    assert [port["containerPort"] for port in web["ports"]] == [8000]


def test_web_rolls_out_without_losing_capacity(rendered: list[dict[str, Any]]) -> None:
    spec = _workloads(rendered)["web"]["spec"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["template"]["spec"]["topologySpreadConstraints"]


def test_worker_is_probed_by_a_celery_ping_and_given_time_to_finish_a_task(rendered: list[dict[str, Any]]) -> None:
    pod = _workloads(rendered)["worker"]["spec"]["template"]["spec"]
    probe = pod["containers"][0]["livenessProbe"]
    assert "celery -A clinpredict inspect ping --destination celery@$HOSTNAME" in " ".join(probe["exec"]["command"])
    assert probe["timeoutSeconds"] >= 20 and probe["periodSeconds"] >= 30
    assert pod["terminationGracePeriodSeconds"] >= 60
    env = _env(pod["containers"][0])
    assert env["CELERY_WORKER_METRICS_PORT"]["value"] == "9808"


def test_exactly_one_beat(rendered: list[dict[str, Any]]) -> None:
    beat = _workloads(rendered)["beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}, "a rolling update would run two beats for a while"
    for hpa in _by_kind(rendered, "HorizontalPodAutoscaler").values():
        assert hpa["spec"]["scaleTargetRef"]["name"] != beat["metadata"]["name"]


def test_autoscalers_target_web_and_worker_by_cpu(rendered: list[dict[str, Any]]) -> None:
    deployments = _by_kind(rendered, "Deployment")
    targets = {}
    for hpa in _by_kind(rendered, "HorizontalPodAutoscaler").values():
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["name"] in deployments
        assert hpa["spec"]["minReplicas"] >= 2
        assert [metric["resource"]["name"] for metric in hpa["spec"]["metrics"]] == ["cpu"]
        # The HPA owns the replica count; a `replicas` in the Deployment would reset it on every apply.
        assert "replicas" not in deployments[ref["name"]]["spec"]
        targets[_component(deployments[ref["name"]])] = hpa
    assert set(targets) == {"web", "worker"}


def test_disruption_budgets_select_web_and_worker_and_never_block_a_drain(rendered: list[dict[str, Any]]) -> None:
    workloads = _workloads(rendered)
    minimum = {hpa["spec"]["scaleTargetRef"]["name"]: hpa["spec"]["minReplicas"]
               for hpa in _by_kind(rendered, "HorizontalPodAutoscaler").values()}
    selected = set()
    for pdb in _by_kind(rendered, "PodDisruptionBudget").values():
        matching = [c for c, obj in workloads.items() if _selects(pdb["spec"]["selector"], _pod_labels(obj))]
        assert len(matching) == 1, pdb["metadata"]["name"]
        component = matching[0]
        replicas = minimum[workloads[component]["metadata"]["name"]]
        assert pdb["spec"].get("minAvailable", 0) < replicas, "a budget as large as the replicas blocks drains"
        selected.add(component)
    assert selected == {"web", "worker"}


def test_services_select_pods_and_name_their_ports(rendered: list[dict[str, Any]]) -> None:
    workloads = _workloads(rendered)
    for service in _by_kind(rendered, "Service").values():
        matching = [obj for obj in workloads.values() if _selects({"matchLabels": service["spec"]["selector"]},
                                                                  _pod_labels(obj))]
        assert len(matching) == 1, service["metadata"]["name"]
        ports = {port["name"] for c in matching[0]["spec"]["template"]["spec"]["containers"] for port in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports


# --- network policy ------------------------------------------------------------------------------------------------


def _policies_for(rendered: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    return [policy for policy in _by_kind(rendered, "NetworkPolicy").values()
            if _selects(policy["spec"]["podSelector"], labels)]


def test_every_pod_is_default_denied_both_ways(rendered: list[dict[str, Any]]) -> None:
    deny = _by_kind(rendered, "NetworkPolicy")["clinpredict-default-deny"]["spec"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    for component, obj in _workloads(rendered).items():
        assert _selects(deny["podSelector"], _pod_labels(obj)), component


def test_egress_is_dns_plus_exactly_the_documented_ports(rendered: list[dict[str, Any]]) -> None:
    for component, obj in _workloads(rendered).items():
        ports: set[int] = set()
        dns: set[str] = set()
        for policy in _policies_for(rendered, _pod_labels(obj)):
            for rule in policy["spec"].get("egress", []):
                for port in rule["ports"]:
                    if port["port"] == 53:
                        assert rule["to"] and all("podSelector" in peer for peer in rule["to"]), "DNS: kube-dns only"
                        dns.add(port["protocol"])
                    else:
                        assert port["protocol"] == "TCP"
                        ports.add(port["port"])
        assert dns == {"UDP", "TCP"}, component
        assert ports == EGRESS_PORTS[component], component


def test_ingress_only_from_the_ingress_controller_and_prometheus(rendered: list[dict[str, Any]]) -> None:
    allowed = {"web": {8000}, "worker": {9808}}
    for component, obj in _workloads(rendered).items():
        ports: set[int] = set()
        for policy in _policies_for(rendered, _pod_labels(obj)):
            for rule in policy["spec"].get("ingress", []):
                assert rule["from"], f"{component}: an ingress rule without `from` admits every pod"
                namespaces = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                              for peer in rule["from"]}
                assert namespaces <= {"ingress-nginx", "monitoring"}, component
                ports |= {port["port"] for port in rule["ports"]}
        assert ports == allowed.get(component, set()), component
