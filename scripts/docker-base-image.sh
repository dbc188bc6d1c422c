#!/usr/bin/env bash
# Builds a stand-in for the python:3.11-slim base image from Debian packages, for machines that can reach a Debian
# mirror but no image registry. The result, tagged clinpredict-base:bookworm by default, is Debian 12 (bookworm) with
# its Python 3.11 (`python3`, `python3-venv`, `python-is-python3` so `python` exists as in the official image),
# `ca-certificates` and `libgomp1` (OpenMP, loaded by xgboost and scikit-learn). Pass it to the build as
#
#   docker build --build-arg PYTHON_IMAGE=clinpredict-base:bookworm -f docker/Dockerfile .
#
# `make docker-check` (scripts/docker-check.sh) calls this script when python:3.11-slim cannot be pulled.
#
#   scripts/docker-base-image.sh [TAG]          # run as root: debootstrap needs it; about 2 minutes
#
# Idempotent: does nothing when TAG already exists (`docker image rm TAG` to rebuild). Environment:
#   DEBIAN_MIRROR  the mirror to bootstrap from (default: the first Debian mirror in the apt sources, else
#                  http://deb.debian.org/debian)
#   DEBIAN_SUITE   default bookworm (its python3 is 3.11, the version the lock files are compiled for)
set -euo pipefail

TAG=${1:-clinpredict-base:bookworm}
SUITE=${DEBIAN_SUITE:-bookworm}
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,libgomp1

say() { echo "docker-base-image: $*"; }

if docker image inspect "$TAG" >/dev/null 2>&1; then
  say "$TAG already exists, nothing to do"
  exit 0
fi
command -v debootstrap >/dev/null || { say "debootstrap is missing (Debian: apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { say "debootstrap must run as root" >&2; exit 1; }

mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  # deb822 (*.sources: "URIs: http://...") or one-line format ("deb http://... bookworm main"); skip security mirrors.
  mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}' | grep -v security | head -n1 || true)
  [ -n "$mirror" ] || mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; break}}' | grep -v security | head -n1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi

rootfs=$(mktemp -d /tmp/clinpredict-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

say "debootstrap --variant=minbase --include=$PACKAGES $SUITE $rootfs $mirror"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 ||
  { tail -n 20 "$rootfs.log" >&2; say "debootstrap failed (full log: $rootfs.log)" >&2; exit 1; }
rm -f "$rootfs.log"
# Smaller image: no apt package lists or downloaded .debs (the Dockerfile installs nothing with apt).
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

say "docker import -> $TAG"
tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$TAG" >/dev/null
say "$TAG: $(docker run --rm "$TAG" python --version)"
