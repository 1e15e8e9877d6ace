"""How the CLI's argv is shaped: the global options every command takes and where a composite
`prepare[:KIND] ... run[:KIND] ...` splits. The one table both the fast path (fast.py) and the
Click CLI (main.py, prepare_cmd.py) read; stdlib only, no typing (the hot path imports it).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing is one of the imports the fast path exists to avoid
if TYPE_CHECKING:
    # (parameter name, the constant a flag stores or None for an option taking a value,
    #  the choices that value must be one of, or an entry point group whose names (and `auto`) they
    #  are, or None)
    Spec = tuple[str, object, tuple[str, ...] | str | None]

# spelling -> Spec (checked against the Click CLI by tests/unit/test_cli_fast.py)
GLOBAL_OPTIONS: dict[str, Spec] = {
    "--state-dir": ("state_dir", None, None),
    "-q": ("quiet", True, None),
    "--quiet": ("quiet", True, None),
    "--workspace": ("workspace", None, None),
    "--timeout": ("timeout", None, None),
}

RUN_COMMANDS = ("run:psql", "run:pgbench")  # `prepare:psql ... run:*` is a composite (prepare_cmd.py)
RUN_ALIAS_SUFFIX = ".run.s9s.yaml"


def composite_split(argv: list[str]) -> int | None:
    """Where the run stage of a composite `prepare[:KIND] ... run[:KIND] ...` starts; None when
    argv is no composite. After an alias stage (`prepare REF`, which takes no arguments) the
    first `run` is the run stage; after a raw one, `run:psql`/`run:pgbench`, or `run REF` when
    REF names a run alias file (so a command's own argument `run` stays an argument)."""
    start = 0
    while start < len(argv) and argv[start].startswith("-"):  # the global options
        spec = GLOBAL_OPTIONS.get(argv[start])
        start += 2 if spec is not None and spec[1] is None else 1
    if start >= len(argv) or not (argv[start] == "prepare" or argv[start].startswith("prepare:")):
        return None  # `diff ... prepare:psql ... run:psql`, `alias create ...` are no composites
    for index in range(start + 1, len(argv)):
        arg = argv[index]
        if arg in RUN_COMMANDS:
            return index
        if arg == "run" and (argv[start] == "prepare" or _names_run_alias(argv[index + 1:])):
            return index
    return None


def _names_run_alias(rest: list[str]) -> bool:
    ref = next((arg for arg in rest if not arg.startswith("-")), None)
    if ref is None:
        return False
    path = ref[:-1] if ref.endswith(".") else ref + RUN_ALIAS_SUFFIX
    return os.path.isfile(path)
