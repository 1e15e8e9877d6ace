"""The serving loop of the runners sqlrs starts in the user's Python (`python -u -c RUNNER ...`):
Alembic's and Django's build steps (services/states/steps, through host.HostSession) and the
Django undo of `check:django --backwards` (engine_client/reversals.py). Source text, prepended to
a runner's own and run with `python -u -c`.
"""

from __future__ import annotations

# `sqlrs_serve(apply, fail, mark)` reads one JSON request a line from stdin and calls
# `apply(request)`; when that raises, `fail(exc, request)` reports it (inside the except block: the
# traceback is at hand); then it answers `mark` and the exit code on stdout and on stderr (two
# pipes for HostSession: the answer is complete when both carry it), and stops after a failure.
HOST_SERVE_LOOP = r'''
import json, sys
def sqlrs_serve(apply, fail, mark):
    for line in sys.stdin:
        request = json.loads(line)
        code = 0
        try:
            apply(request)
        except BaseException as exc:
            fail(exc, request)
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        print(mark + str(code), flush=True)
        print(mark + str(code), file=sys.stderr, flush=True)
        if code:
            break
'''
