#!/usr/bin/env bash
# Run the whole test suite against real PostgreSQL, docker, podman, btrfs and XFS.
#
#   ./scripts/test.sh [PYTEST_ARGS...]
#
# Starts what the tests need (dockerd, the podman API service), builds the local PostgreSQL test
# image (there is no registry here), then runs pytest. Every runtime and snapshot backend named in
# SQLRS_REQUIRE must work: a test that cannot get one fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

export SQLRS_REQUIRE=${SQLRS_REQUIRE:-docker,podman,native,btrfs,reflink}
if [[ ",$SQLRS_REQUIRE," == *,docker,* || ",$SQLRS_REQUIRE," == *,podman,* ]]; then
    ./scripts/services.sh
    ./scripts/build-test-image.sh
fi

# Two phases. Most tests own their state dir, engine, processes and containers (each checks for
# leftovers labelled with it), so they run in parallel workers: they mostly wait on servers,
# daemons and JVMs, which is why more workers than the 2 cores still pay (on 2 cores: 22 min with
# 4 workers, 29 with 3). A module stays on one worker (--dist loadfile: module-scoped engines are
# shared by its tests). Tests marked `serial` touch what every test shares (they stop dockerd and
# the podman service) and run alone after.
# SQLRS_TEST_WORKERS=0 runs everything in this process, one test at a time.
workers=${SQLRS_TEST_WORKERS:-4}
pytest=(.venv/bin/python -m pytest -q -p no:cacheprovider)
targets=(tests)  # the whole suite, unless the arguments name test files or directories
for arg in "$@"; do
    if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then targets=(); break; fi
done
if [[ "$workers" == 0 ]]; then
    exec "${pytest[@]}" --durations=15 "${targets[@]}" "$@"
fi
phase() {  # exit 5 (nothing collected: the arguments select no test of this phase) is not a failure
    local rc=0
    "${pytest[@]}" "$@" || rc=$?
    if [[ $rc == 5 ]]; then rc=0; fi
    return $rc
}
status=0
echo "== parallel phase ($workers workers)"
phase --durations=15 -n "$workers" --dist loadfile -m "not serial" "${targets[@]}" "$@" || status=$?
echo "== serial phase"
phase --durations=5 -m serial "${targets[@]}" "$@" || status=$?
exit $status
