#!/usr/bin/env bash
# Install sqlrs and everything its runtimes and tests use, on Debian 12 (as root or with sudo).
#
#   ./scripts/install.sh          # apt packages + .venv with sqlrs (editable) and test tools
#   ./scripts/install.sh --demo   # ... then prepare the example under examples/library and query it
#
# apt: postgresql (native runtime, psql/pgbench), docker.io, podman, runc (container runtimes),
# btrfs-progs, xfsprogs (copy-on-write snapshot stores), curl, debootstrap-free,
# openjdk-17-jre-headless + Liquibase 4.x (prepare:lb; from npm, under /opt/sqlrs/liquibase).
# docker-registry (the CNCF distribution registry the remote-cache tests start) and apache2-utils
# (htpasswd for its basic auth).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

log() { printf 'install: %s\n' "$*" >&2; }

PACKAGES=(postgresql postgresql-contrib docker.io podman runc uidmap btrfs-progs xfsprogs curl
          python3-venv python3-pip ca-certificates procps util-linux openjdk-17-jre-headless
          docker-registry apache2-utils)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    $SUDO apt-get update -q
    # postgresql's package would start a cluster of its own; sqlrs runs its own servers
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian starts a system cluster on 5432 we do not need; leave it alone if the admin wants it.

# Liquibase (prepare:lb): the npm package `liquibase` carries the open-source distribution (jars,
# launcher, PostgreSQL JDBC driver); Maven Central is not needed. sqlrs finds it under this prefix.
LIQUIBASE_VERSION=${LIQUIBASE_VERSION:-4.28.1}
LIQUIBASE_PREFIX=${LIQUIBASE_PREFIX:-/opt/sqlrs/liquibase}
LIQUIBASE_PACKAGE="$LIQUIBASE_PREFIX/node_modules/liquibase/package.json"
if ! grep -qs "\"version\": \"$LIQUIBASE_VERSION\"" "$LIQUIBASE_PACKAGE"; then
    if ! command -v npm >/dev/null 2>&1; then
        log "apt-get install npm"
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm
    fi
    log "npm install liquibase@$LIQUIBASE_VERSION under $LIQUIBASE_PREFIX"
    $SUDO mkdir -p "$LIQUIBASE_PREFIX"
    $SUDO npm install --prefix "$LIQUIBASE_PREFIX" --no-audit --no-fund --loglevel=error \
        "liquibase@$LIQUIBASE_VERSION" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
log "pip install -e .[test]"
# compat mode: a plain path entry, not an import hook that every CLI start would pay for
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]" --config-settings editable_mode=compat
# an editable install leaves sqlrs' own modules uncompiled; where PYTHONDONTWRITEBYTECODE is set
# (CI images often set it) every CLI start would then compile them again: ~20 ms of each command
.venv/bin/python -m compileall -q sqlrs
log "sqlrs $(.venv/bin/sqlrs --version | awk '{print $NF}') installed: $REPO/.venv/bin/sqlrs"

if [ "${1:-}" = "--demo" ]; then
    exec ./examples/library/demo.sh
fi
