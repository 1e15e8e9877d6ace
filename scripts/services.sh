#!/usr/bin/env bash
# Start the container services sqlrs' container runtimes and their tests need (Debian 12, root).
#
#   scripts/services.sh            # idempotent: safe to run again and again
#
# - /etc/containers/containers.conf: podman uses runc (crun fails on this cgroup v1 setup) and no
#   default ulimits (the default nofile ulimit cannot be applied inside this sandbox).
# - dockerd: started in the background when `docker info` fails (log: /var/log/dockerd-sqlrs.log).
# - podman API service: `podman system service --time=0 unix:///run/podman/podman.sock` in the
#   background when the socket does not answer (log: /var/log/podman-service-sqlrs.log).
# Waits until both answer; exits non-zero (and shows the log tail) when one does not come up.
set -euo pipefail

WAIT_SECONDS=${SQLRS_SERVICES_WAIT:-60}
DOCKERD_LOG=/var/log/dockerd-sqlrs.log
PODMAN_LOG=/var/log/podman-service-sqlrs.log
PODMAN_SOCK=/run/podman/podman.sock
CONF=/etc/containers/containers.conf

log() { printf 'services: %s\n' "$*" >&2; }

# --- podman configuration --------------------------------------------------------------------
conf_ok() {
    [ -f "$CONF" ] || return 1
    grep -Eq '^[[:space:]]*default_ulimits[[:space:]]*=[[:space:]]*\[[[:space:]]*\]' "$CONF" || return 1
    grep -Eq '^[[:space:]]*runtime[[:space:]]*=[[:space:]]*"runc"' "$CONF" || return 1
}
if ! conf_ok; then
    mkdir -p "$(dirname "$CONF")"
    if [ -f "$CONF" ]; then
        cp -p "$CONF" "$CONF.sqlrs-backup.$(date +%s)"
        log "backed up existing $CONF"
    fi
    printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' > "$CONF"
    log "wrote $CONF"
fi

# --- dockerd ---------------------------------------------------------------------------------
docker_ok() { timeout 5 docker info >/dev/null 2>&1; }
if docker_ok; then
    log "docker: daemon already answers"
else
    if pgrep -x dockerd >/dev/null 2>&1; then
        log "docker: a dockerd process exists but does not answer yet; waiting for it"
    else
        log "docker: starting dockerd (log: $DOCKERD_LOG)"
        # containerd is started by dockerd itself (managed mode) when none runs.
        nohup setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    fi
fi

# --- podman API service ----------------------------------------------------------------------
podman_ok() {
    [ -S "$PODMAN_SOCK" ] || return 1
    timeout 5 curl -fsS --unix-socket "$PODMAN_SOCK" http://d/_ping >/dev/null 2>&1 \
        || timeout 5 podman --url "unix://$PODMAN_SOCK" version >/dev/null 2>&1
}
if podman_ok; then
    log "podman: API service already answers on $PODMAN_SOCK"
else
    mkdir -p "$(dirname "$PODMAN_SOCK")"
    if pgrep -f "podman system service .*unix://$PODMAN_SOCK" >/dev/null 2>&1; then
        log "podman: a service process exists but does not answer yet; waiting for it"
    else
        rm -f "$PODMAN_SOCK"
        log "podman: starting the API service on unix://$PODMAN_SOCK (log: $PODMAN_LOG)"
        nohup setsid podman system service --time=0 "unix://$PODMAN_SOCK" >>"$PODMAN_LOG" 2>&1 </dev/null &
    fi
fi

# --- wait ------------------------------------------------------------------------------------
deadline=$((SECONDS + WAIT_SECONDS))
until docker_ok; do
    if [ $SECONDS -ge $deadline ]; then
        log "docker: daemon did not answer within ${WAIT_SECONDS}s; last log lines:"
        tail -n 30 "$DOCKERD_LOG" >&2 || true
        exit 1
    fi
    sleep 0.5
done
log "docker: ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
until podman_ok; do
    if [ $SECONDS -ge $deadline ]; then
        log "podman: API service did not answer within ${WAIT_SECONDS}s; last log lines:"
        tail -n 30 "$PODMAN_LOG" >&2 || true
        exit 1
    fi
    sleep 0.5
done
log "podman: ready (unix://$PODMAN_SOCK)"
