#!/usr/bin/env bash
# `make docker-check`: builds both images of docker/Dockerfile (full = the last stage, web = `--target web`) and runs
# them as docker/compose.yaml does (read-only root filesystem, tmpfs for /tmp, /tmp/prometheus and the home directory,
# no capabilities, no-new-privileges, uid 10001) against the PostgreSQL and Redis on this host:
#
#   1. the database roles as the superuser, migrate and grant as the owner, bootstrap_demo as the application role
#      (full image, as the db-roles/migrate jobs and `bootstrap_demo` in compose);
#   2. gunicorn from the web image as the application role (SECRET_KEY and the database password from files mounted
#      read-only, as compose's secrets); against it: /readyz, an OAuth client-credentials token, and
#      POST /api/v1/predictions -> 201 with its explanation (ONNX prediction + xgboost contributions);
#   3. a Celery worker from the full image answering `celery inspect ping`;
#   4. verify_audit_chain -> OK; then both image sizes.
#
# Containers use the host network (PostgreSQL and Redis on 127.0.0.1). Each step prints its name; the first failure
# stops the check naming the step, and every container, the volume, the database and its two roles are removed on
# exit.
#
# Environment (all optional):
#   PYTHON_IMAGE    base image; default python:3.11-slim when it is present or can be pulled, otherwise the stand-in
#                   clinpredict-base:bookworm built by scripts/docker-base-image.sh (no image registry needed)
#   CA_BUNDLE       PEM bundle the build should trust (default /etc/ssl/certs/ca-certificates.crt): its certificates
#                   that the base image lacks (e.g. a TLS-inspecting proxy's CA) go to the EXTRA_CA_CERTS build arg
#   DB_HOST / DB_PORT / DB_SUPERUSER   default 127.0.0.1 / 5432 / postgres (local trust or peer authentication)
#   REDIS_URL       default redis://127.0.0.1:6379 (db 12: broker, db 13: cache)
#   IMAGE / WEB_IMAGE   tags built; default clinpredict:local and clinpredict-web:local
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-clinpredict:local}
WEB_IMAGE=${WEB_IMAGE:-clinpredict-web:local}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
DB_HOST=${DB_HOST:-127.0.0.1}
DB_PORT=${DB_PORT:-5432}
DB_SUPERUSER=${DB_SUPERUSER:-postgres}
DB_NAME=clinpredict_docker_check
DB_OWNER=clinpredict_docker_check_owner
DB_APP=clinpredict_docker_check_app
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
# The legacy builder: BuildKit would fetch the `# syntax=` frontend image from a registry, which may be unreachable.
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}

RUN_ID=$$
NAME=clinpredict-docker-check-$RUN_ID
VOLUME=$NAME-var
WORK=$(mktemp -d /tmp/clinpredict-docker-check.XXXXXX)
STEP=setup
START=$(date +%s)

step() { STEP=$1; echo; echo "== docker-check: $STEP ($(( $(date +%s) - START )) s)"; }
fail() { echo "docker-check: FAILED at step '$STEP': $*" >&2; exit 1; }

cleanup() {
  local rc=$?
  docker rm -f "$NAME-web" "$NAME-worker" >/dev/null 2>&1 || true
  docker volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  psql_super postgres -qc "DROP DATABASE IF EXISTS $DB_NAME" -qc "DROP ROLE IF EXISTS $DB_APP" \
    -qc "DROP ROLE IF EXISTS $DB_OWNER" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  [ "$rc" = 0 ] || echo "docker-check: FAILED at step '$STEP' (exit $rc)" >&2
}
trap cleanup EXIT

psql_super() {  # psql_super DB ARGS...: as the superuser (a client on the host, or the one in the postgres container)
  local db=$1; shift
  psql "postgres://$DB_SUPERUSER@$DB_HOST:$DB_PORT/$db" "$@"
}

# ---------------------------------------------------------------------------------------------------------------------
step "docker engine"
command -v docker >/dev/null || fail "no docker client: install the engine (Debian: apt-get install docker.io), \
start it (dockerd, or systemctl start docker) and rerun"
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || fail "the docker daemon is not running and dockerd is not installed (Debian: \
apt-get install docker.io)"
  [ "$(id -u)" = 0 ] || fail "the docker daemon is not running: start it (systemctl start docker) and rerun"
  echo "starting dockerd (log: /tmp/dockerd.log)"
  nohup dockerd >/tmp/dockerd.log 2>&1 &
  for _ in $(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || fail "dockerd did not start (see /tmp/dockerd.log)"
fi
docker version --format 'engine {{.Server.Version}}, client {{.Client.Version}}'
command -v psql >/dev/null || fail "psql (the PostgreSQL client) is needed to create the check's database"
psql_super postgres -tAc "SELECT 1" >/dev/null || fail "PostgreSQL is not reachable as $DB_SUPERUSER at $DB_HOST:$DB_PORT"

# ---------------------------------------------------------------------------------------------------------------------
step "base image"
if [ -z "${PYTHON_IMAGE:-}" ]; then
  if docker image inspect python:3.11-slim >/dev/null 2>&1 || timeout 60 docker pull -q python:3.11-slim >/dev/null 2>&1
  then
    PYTHON_IMAGE=python:3.11-slim
  else
    echo "python:3.11-slim cannot be pulled: using the stand-in from Debian packages (scripts/docker-base-image.sh)"
    PYTHON_IMAGE=clinpredict-base:bookworm
    scripts/docker-base-image.sh "$PYTHON_IMAGE" || fail "scripts/docker-base-image.sh failed"
  fi
fi
docker image inspect "$PYTHON_IMAGE" >/dev/null 2>&1 || docker pull -q "$PYTHON_IMAGE" >/dev/null ||
  fail "base image $PYTHON_IMAGE is neither present nor pullable"
echo "PYTHON_IMAGE=$PYTHON_IMAGE ($(docker run --rm "$PYTHON_IMAGE" python --version))"

# The certificates of CA_BUNDLE that the base image does not already trust, computed by the base image's Python
# (the bundle mounted read-only): usually none, or a TLS-inspecting proxy's CA. Passed as PEM text (a few KB; a whole
# bundle would exceed the 128 KiB limit of one argument).
build_args=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
if [ -f "$CA_BUNDLE" ]; then
  docker run --rm -v "$(realpath "$CA_BUNDLE"):/tmp/host-ca.pem:ro" "$PYTHON_IMAGE" python -c '
import re
pem = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
base = set(pem.findall(open("/etc/ssl/certs/ca-certificates.crt").read()))
print("\n".join(c for c in pem.findall(open("/tmp/host-ca.pem").read()) if c not in base))
' >"$WORK/extra-ca.pem" || fail "could not compare $CA_BUNDLE with the base image's CA bundle"
  extra=$(grep -c 'BEGIN CERTIFICATE' "$WORK/extra-ca.pem" || true)
  echo "EXTRA_CA_CERTS: $extra certificate(s) of $CA_BUNDLE that the base image lacks"
  [ "$extra" = 0 ] || build_args+=(--build-arg "EXTRA_CA_CERTS=$(cat "$WORK/extra-ca.pem")")
fi

build() {  # build TAG [--target STAGE]
  local tag=$1; shift
  local t0; t0=$(date +%s)
  docker build --network host -f docker/Dockerfile "${build_args[@]}" "$@" -t "$tag" . >"$WORK/build.log" 2>&1 ||
    { tail -n 40 "$WORK/build.log" >&2; fail "docker build of $tag failed"; }
  echo "built $tag in $(( $(date +%s) - t0 )) s"
}

# web first: the legacy builder builds every stage before the target, so the full build (the last stage) reuses the
# web stages from cache and each time below is that image's own.
step "build web image ($WEB_IMAGE, --target web)"
build "$WEB_IMAGE" --target web
step "build full image ($IMAGE)"
build "$IMAGE"

# ---------------------------------------------------------------------------------------------------------------------
# Secrets as compose mounts them: files readable by uid 10001, mounted read-only, named by <NAME>_FILE.
mkdir -p "$WORK/secrets"
python_rand() { docker run --rm "$PYTHON_IMAGE" python -c 'import secrets; print(secrets.token_urlsafe(32))'; }
python_rand >"$WORK/secrets/django_secret_key"
python_rand >"$WORK/secrets/db_owner_password"
python_rand >"$WORK/secrets/db_app_password"
DEMO_PASSWORD=$(python_rand)
DEMO_CLIENT_ID=docker-check-client
DEMO_CLIENT_SECRET=$(python_rand)
chmod 0755 "$WORK" "$WORK/secrets"
chmod 0444 "$WORK"/secrets/*

# compose's hardening (docker/compose.yaml, x-app), the host network, and /app/var on a volume as there.
HARDENING=(--network host --read-only
  --tmpfs /tmp:mode=1777
  --tmpfs /tmp/prometheus:uid=10001,gid=10001,mode=0700
  --tmpfs /home/clinpredict:uid=10001,gid=10001,mode=0700
  --cap-drop ALL --security-opt no-new-privileges --user 10001:10001
  -v "$VOLUME:/app/var"
  -v "$WORK/secrets:/run/secrets:ro")
BROKER=$REDIS_URL/12
APP_ENV=(-e DJANGO_SETTINGS_MODULE=clinpredict.settings.production
  -e SECRET_KEY_FILE=/run/secrets/django_secret_key
  -e ALLOWED_HOSTS=127.0.0.1,localhost
  -e SECURE_SSL_REDIRECT=false
  -e CELERY_BROKER_URL="$BROKER"
  -e CACHE_URL="$REDIS_URL/13"
  -e CACHE_KEY_PREFIX="docker-check-$RUN_ID")
DB=postgres://%s@$DB_HOST:$DB_PORT/$DB_NAME
# shellcheck disable=SC2059
AS_SUPERUSER=(-e DATABASE_URL="$(printf "$DB" "$DB_SUPERUSER")")
# shellcheck disable=SC2059
AS_OWNER=(-e DATABASE_URL="$(printf "$DB" "$DB_OWNER")" -e DATABASE_PASSWORD_FILE=/run/secrets/db_owner_password)
# shellcheck disable=SC2059
AS_APP=(-e DATABASE_URL="$(printf "$DB" "$DB_APP")" -e DATABASE_PASSWORD_FILE=/run/secrets/db_app_password)

run() {  # run IMAGE ENV... -- COMMAND...: a one-shot container, hardened as in compose
  local image=$1; shift
  local env=()
  while [ "$1" != -- ]; do env+=("$1"); shift; done; shift
  docker run --rm "${HARDENING[@]}" "${APP_ENV[@]}" "${env[@]}" "$image" "$@"
}

step "database $DB_NAME (dropped and created) and a fresh /app/var volume"
psql_super postgres -qc "DROP DATABASE IF EXISTS $DB_NAME" -qc "CREATE DATABASE $DB_NAME"
docker volume rm -f "$VOLUME" >/dev/null 2>&1 || true
docker volume create "$VOLUME" >/dev/null

step "setup_database_roles (full image, superuser)"
run "$IMAGE" "${AS_SUPERUSER[@]}" -- python manage.py setup_database_roles --owner "$DB_OWNER" --app "$DB_APP" \
  --owner-password-file /run/secrets/db_owner_password --app-password-file /run/secrets/db_app_password

step "migrate + grant_app_role (full image, owner)"
run "$IMAGE" "${AS_OWNER[@]}" -- sh -c "python manage.py migrate --noinput -v 0 && \
python manage.py grant_app_role --app $DB_APP"

step "bootstrap_demo (full image, application role)"
run "$IMAGE" "${AS_APP[@]}" -e CLINPREDICT_DEMO_PASSWORD="$DEMO_PASSWORD" -e CLINPREDICT_DEMO_CLIENT_ID="$DEMO_CLIENT_ID" \
  -e CLINPREDICT_DEMO_CLIENT_SECRET="$DEMO_CLIENT_SECRET" -- python manage.py bootstrap_demo

# ---------------------------------------------------------------------------------------------------------------------
step "web image holds the runtime lock only (no training/export stack)"
run "$WEB_IMAGE" -- python -c '
import importlib.util as u, sys
present = [m for m in ("onnx", "skl2onnx", "mlflow", "matplotlib") if u.find_spec(m)]
sys.exit(f"the web image carries {present}") if present else print("no onnx, skl2onnx, mlflow, matplotlib")
' || fail "the web image is not slim"

step "gunicorn (web image, application role)"
PORT=$(docker run --rm --network host "$PYTHON_IMAGE" python -c \
  'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The image's CMD with another --bind (the host network may have 8000 taken); `-c gunicorn.conf.py` kept. No image
# healthcheck in either container: on the host network it would probe whatever listens on 127.0.0.1:8000.
docker run -d --name "$NAME-web" --no-healthcheck "${HARDENING[@]}" "${APP_ENV[@]}" "${AS_APP[@]}" "$WEB_IMAGE" \
  sh -c "exec gunicorn clinpredict.wsgi:application -c gunicorn.conf.py --bind 127.0.0.1:$PORT --workers 2 \
--worker-tmp-dir /dev/shm" >/dev/null
ready=
for _ in $(seq 1 60); do
  if docker run --rm --network host "$PYTHON_IMAGE" python -c "import urllib.request as u; \
u.urlopen(u.Request('http://127.0.0.1:$PORT/healthz', headers={'Host': 'localhost'}), timeout=3)" >/dev/null 2>&1
  then ready=1; break; fi
  [ "$(docker inspect -f '{{.State.Running}}' "$NAME-web")" = true ] || break
  sleep 1
done
[ -n "$ready" ] || { docker logs --tail 40 "$NAME-web" >&2; fail "gunicorn did not answer /healthz on port $PORT"; }
echo "gunicorn answers on 127.0.0.1:$PORT"

step "prediction through gunicorn (web image: /readyz, OAuth token, POST /api/v1/predictions -> 201 with explanation)"
# The API only: the sign-in form needs the Secure CSRF cookie, which a client sends over https only (production
# settings), and this check speaks plain http to gunicorn. Standard library only, in the web image (as a client).
docker run --rm -i --network host --read-only --cap-drop ALL --security-opt no-new-privileges --user 10001:10001 \
  -e BASE="http://127.0.0.1:$PORT" -e CLIENT_ID="$DEMO_CLIENT_ID" -e CLIENT_SECRET="$DEMO_CLIENT_SECRET" \
  "$WEB_IMAGE" python - <<'PY' | tee "$WORK/api.log" || { docker logs --tail 40 "$NAME-web" >&2; fail "the API check failed"; }
import base64, json, os, sys, urllib.error, urllib.parse, urllib.request

base = os.environ["BASE"]
with urllib.request.urlopen(f"{base}/readyz", timeout=10) as response:
    print(f"readyz: {response.status} {json.loads(response.read())['status']}")
basic = base64.b64encode(f"{os.environ['CLIENT_ID']}:{os.environ['CLIENT_SECRET']}".encode()).decode()
token_request = urllib.request.Request(f"{base}/o/token/", headers={"Authorization": f"Basic {basic}"}, data=urllib.parse.urlencode(
    {"grant_type": "client_credentials", "scope": "predictions:write predictions:read"}).encode())
with urllib.request.urlopen(token_request, timeout=10) as response:
    token = json.loads(response.read())
print(f"token: {token['token_type']} scope={token['scope']}")
features = {"pregnancies": 2, "glucose": {"value": 7.9, "unit": "mmol/L"}, "blood_pressure": 72, "skin_thickness": None,
            "insulin": None, "bmi": 33.6, "pedigree": 0.627, "age": 50}
body = json.dumps({"use_case": "diabetes", "patient_id": "docker-check-1", "features": features}).encode()
request = urllib.request.Request(f"{base}/api/v1/predictions", data=body, headers={
    "Authorization": f"Bearer {token['access_token']}", "Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=30) as response:
        status, prediction = response.status, json.loads(response.read())
except urllib.error.HTTPError as exc:
    sys.exit(f"POST /api/v1/predictions answered {exc.code}: {exc.read().decode()[:300]}")
if status != 201 or not prediction.get("explanation"):
    sys.exit(f"POST /api/v1/predictions answered {status} with {len(prediction.get('explanation') or [])} explanation items")
print(f"api: {status} probability={prediction['probability']:.4f} risk_band={prediction['risk_band']} "
      f"model_version={prediction['model_version']} audit_seq={prediction['audit_seq']} "
      f"explanation={len(prediction['explanation'])} features")
PY
grep -q '^api: 201 ' "$WORK/api.log" || fail "no 201 from POST /api/v1/predictions"
API_LINE=$(grep '^api: 201 ' "$WORK/api.log" | sed 's/^api: //')

# ---------------------------------------------------------------------------------------------------------------------
step "celery worker (full image, application role) answering a ping"
NODE=docker-check-$RUN_ID@localhost
docker run -d --name "$NAME-worker" --no-healthcheck "${HARDENING[@]}" "${APP_ENV[@]}" "${AS_APP[@]}" "$IMAGE" \
  celery -A clinpredict worker -l info -n "$NODE" --concurrency 1 >/dev/null
pong=
for _ in $(seq 1 30); do
  [ "$(docker inspect -f '{{.State.Running}}' "$NAME-worker")" = true ] || break
  if docker exec "$NAME-worker" celery -A clinpredict inspect ping --destination "$NODE" --timeout 5 \
      >"$WORK/ping.log" 2>&1; then pong=1; break; fi
  sleep 2
done
[ -n "$pong" ] || { cat "$WORK/ping.log" >&2; docker logs --tail 40 "$NAME-worker" >&2; fail "the worker did not answer"; }
PING_LINE=$(grep -m1 -- '->' "$WORK/ping.log" | sed 's/^ *//')
echo "$PING_LINE"

step "verify_audit_chain (full image, application role)"
AUDIT_LINE=$(run "$IMAGE" "${AS_APP[@]}" -- python manage.py verify_audit_chain) ||
  { echo "$AUDIT_LINE" >&2; fail "verify_audit_chain did not pass"; }
echo "$AUDIT_LINE"
[[ $AUDIT_LINE == OK* ]] || fail "verify_audit_chain: $AUDIT_LINE"

# ---------------------------------------------------------------------------------------------------------------------
step "summary"
size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.2f GB (%d bytes)", $1 / 1e9, $1}'; }
echo "docker-check: OK in $(( $(date +%s) - START )) s"
echo "  base         $PYTHON_IMAGE"
echo "  full image   $IMAGE: $(size "$IMAGE")"
echo "  web image    $WEB_IMAGE: $(size "$WEB_IMAGE")"
echo "  migrate, bootstrap_demo: OK (roles $DB_OWNER / $DB_APP)"
echo "  prediction   $API_LINE"
echo "  worker       $PING_LINE"
echo "  audit chain  $AUDIT_LINE"
