#!/usr/bin/env bash
# Prepare the library example, query it through run:psql, and show the cache at work.
# Nothing stays running afterwards unless KEEP=1 (then the instance 'library' does).
set -euo pipefail
cd "$(dirname "$0")"
SQLRS=${SQLRS:-../../.venv/bin/sqlrs}
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
STEPS=(-f schema.sql -f migrations/001_isbn.sql -f migrations/002_returns.sql -f migrations/003_views.sql -f seed.sql)

"$SQLRS" -q rm library >/dev/null  # idempotent: a previous run's instance goes
echo "== first prepare: builds every step (cached after the first run)" >&2
start=$EPOCHREALTIME
DSN=$("$SQLRS" prepare:psql --name library -- "${STEPS[@]}")
echo "DSN: $DSN" >&2
echo "took $(elapsed "$start") s" >&2

echo "== the report, through run:psql" >&2
"$SQLRS" run:psql --instance library -- -f queries/report.sql

echo "== a second, independent instance of the same state: a cache hit" >&2
start=$EPOCHREALTIME
"$SQLRS" -q prepare:psql -- "${STEPS[@]}" run:psql -- -At -c "SELECT 'hit: ' || count(*) || ' loans' FROM loans"
echo "took $(elapsed "$start") s, including removing that throwaway instance" >&2

"$SQLRS" ls
if [ -n "${KEEP:-}" ]; then
    echo "== KEEP is set: the instance 'library' stays running" >&2
    echo "Connect with: psql '$DSN'   remove with: $SQLRS rm library" >&2
else
    # a demo leaves nothing running: the state stays cached, so the same prepare is a hit next time
    "$SQLRS" -q rm library >/dev/null
    echo "== removed the instance 'library' (the states stay cached); to keep one to explore:" >&2
    echo "   $SQLRS prepare:psql --name library -- ${STEPS[*]}   (or KEEP=1 $0)" >&2
fi
