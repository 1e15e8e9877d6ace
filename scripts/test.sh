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
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 tests "$@"
