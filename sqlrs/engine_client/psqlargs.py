"""PSQL_ARGS as the user typed them → steps with their files read, for the engine.

psql's own rules: each `-f`/`-c` is one step, in order; `-v` applies to all; `\\i`/`\\include`
resolve against the cwd and `\\ir`/`\\include_relative` against the including file. Connection
flags are refused: sqlrs connects the tools to the instance itself.
"""

from __future__ import annotations

import sys

from sqlrs.engine_client.errors import usage

# typing is not imported on the CLI's hot path (sqlrs/entrypoints/cli/fast.py); pathlib and the
# include parser only when a script file is read: `run:psql -c SQL` needs neither
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

CONNECTION_FLAGS = {"-h": "--host", "-p": "--port", "-U": "--username", "-d": "--dbname", "-w": "--no-password",
                    "-W": "--password"}
CONNECTION_LONG = set(CONNECTION_FLAGS.values())
FILE_TOKEN = "@sqlrs-file:"

# psql flags that take a value, short and long spellings
VALUE_FLAGS = {"-f": "--file", "-c": "--command", "-v": "--set", "-o": "--output", "-L": "--log-file",
               "-P": "--pset", "-F": "--field-separator", "-R": "--record-separator", "-T": "--table-attr",
               "-h": "--host", "-p": "--port", "-U": "--username", "-d": "--dbname"}
LONG_ALIASES = {"--variable": "--set"}
SHORT_BY_LONG = {long: short for short, long in VALUE_FLAGS.items()}
# flags without a value that prepare accepts (they change nothing in the result, or are implied)
PREPARE_NOOP = {"-X", "--no-psqlrc", "-q", "--quiet", "-e", "--echo-queries", "-a", "--echo-all", "-b",
                "--echo-errors", "-n", "--no-readline", "-E", "--echo-hidden"}
SINGLE_TRANSACTION = {"-1", "--single-transaction"}


class Workspace:
    """Where relative paths start (cwd) and which tree scripts may come from (root)."""

    # plain classes, not dataclasses: this module is on every prepare's path, and a dataclass
    # costs about a millisecond to define
    def __init__(self, cwd: Path | None = None, root: Path | None = None, allow_outside: bool = False):
        self._cwd = cwd
        self._root = root
        self.allow_outside = allow_outside

    @classmethod
    def detect(cls, allow_outside: bool) -> Workspace:
        """The cwd and its workspace root (sqlrs.engine_client.workspace), looked up when first needed."""
        return cls(allow_outside=allow_outside)

    @property
    def cwd(self) -> Path:
        if self._cwd is None:
            from pathlib import Path

            self._cwd = Path.cwd()
        return self._cwd

    @property
    def root(self) -> Path:
        if self._root is None:
            from pathlib import Path

            from sqlrs.engine_client.workspace import find_root

            self._root = Path(find_root(str(self.cwd)))
        return self._root

    def display(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.cwd))
        except ValueError:
            return str(path)

    def check(self, path: Path, given: str) -> None:
        if self.allow_outside:
            return
        resolved = path.resolve()
        try:
            resolved.relative_to(self.root.resolve())
        except ValueError:
            raise usage(f"{given}: outside the workspace {self.root}",
                        hint="run from the project directory, or pass --allow-outside") from None


class ScriptReader:
    """Reads a script and everything it includes into one bundle (a step)."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.stdin_used = False
        self.files: list[dict[str, Any]] = []
        self.index_by_path: dict[str, int] = {}

    def read_step(self, given: str) -> dict[str, Any]:
        self.files, self.index_by_path = [], {}
        if given == "-":
            if self.stdin_used:
                raise usage("-f - (stdin) can be given only once")
            self.stdin_used = True
            data = sys.stdin.buffer.read()
            self._add("<stdin>", data, None, ())
        else:
            self._read(self.workspace.cwd / given, given, ())
        return {"kind": "file", "source": given, "files": self.files}

    def _read(self, path: Path, given: str, trail: tuple[str, ...]) -> int:
        from pathlib import Path

        self.workspace.check(path, given)
        key = str(path.resolve())
        if key in trail:
            raise usage("include cycle: " + " -> ".join([*(self.workspace.display(Path(p)) for p in trail), given]))
        if key in self.index_by_path:
            return self.index_by_path[key]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            where = f" (included from {self.workspace.display(Path(trail[-1]))})" if trail else ""
            raise usage(f"{given}: no such file{where}") from None
        except IsADirectoryError:
            raise usage(f"{given}: is a directory") from None
        except OSError as exc:
            raise usage(f"{given}: cannot read: {exc.strerror}") from None
        return self._add(self.workspace.display(path), data, path, (*trail, key))

    def _add(self, display: str, data: bytes, path: Path | None, trail: tuple[str, ...]) -> int:
        index = len(self.files)
        content = data.decode("utf-8", "surrogateescape")
        entry: dict[str, Any] = {"path": display, "content": content, "includes": []}
        self.files.append(entry)
        if path is not None:
            self.index_by_path[str(path.resolve())] = index
        if "\\i" not in content:
            return index  # no include directive can be in it
        from pathlib import Path

        from sqlrs.domain.scripts import RELATIVE_COMMANDS, parse_include

        base_dir = path.parent if path is not None else self.workspace.cwd
        for number, line in enumerate(content.split("\n")):
            if "\\i" not in line:
                continue
            parsed = parse_include(line)
            if parsed is None:
                continue
            command, target = parsed
            if not target:
                raise usage(f"{display}:{number + 1}: \\{command} without a file name")
            if target.startswith(":") or "`" in target:
                raise usage(f"{display}:{number + 1}: cannot follow \\{command} {target}: "
                            "file names from variables or commands are not supported")
            target_path = Path(target)
            if not target_path.is_absolute():
                target_path = (base_dir if command in RELATIVE_COMMANDS else self.workspace.cwd) / target_path
            included = self._read(target_path, target, trail)
            entry["includes"].append({"line": number, "file": included})
        return index


class ParsedPsql:
    """psql arguments taken apart: steps and settings for prepare, arguments for run."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.variables: list[tuple[str, str]] = []
        self.single_transaction = False
        self.tool_args: list[str] = []  # run: arguments passed on, files as tokens
        self.uses_scripts = False  # run: -f/-c present


def _split_option(args: list[str], index: int) -> tuple[str, str | None, int]:
    """(canonical flag, value or None, next index) for the option at args[index]."""
    arg = args[index]
    if arg.startswith("--"):
        name, eq, inline = arg.partition("=")
        name = LONG_ALIASES.get(name, name)
        if name in SHORT_BY_LONG:
            if eq:
                return name, inline, index + 1
            if index + 1 >= len(args):
                raise usage(f"{arg} needs a value")
            return name, args[index + 1], index + 2
        return name, inline if eq else None, index + 1
    short = arg[:2]
    if short in VALUE_FLAGS:
        if len(arg) > 2:
            return VALUE_FLAGS[short], arg[2:], index + 1
        if index + 1 >= len(args):
            raise usage(f"{arg} needs a value")
        return VALUE_FLAGS[short], args[index + 1], index + 2
    return arg, None, index + 1


def _expand_short_clusters(args: list[str]) -> list[str]:
    """-Xq1 → -X -q -1 (psql's getopt allows clustering flags without values)."""
    out: list[str] = []
    for arg in args:
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2 and arg[:2] not in VALUE_FLAGS:
            letters = arg[1:]
            if all(f"-{c}" not in VALUE_FLAGS for c in letters[:-1]):
                out.extend(f"-{c}" for c in letters)
                continue
        out.append(arg)
    return out


def _refuse_connection(flag: str) -> None:
    if flag in CONNECTION_FLAGS or flag in CONNECTION_LONG:
        raise usage(f"{flag}: connection options are not allowed",
                    hint="sqlrs connects psql to the instance itself; pick the instance with --instance")


def parse_prepare_args(args: list[str], workspace: Workspace) -> ParsedPsql:
    reader = ScriptReader(workspace)
    parsed = ParsedPsql()
    args = _expand_short_clusters(args)
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            index += 1
            continue
        if not arg.startswith("-") or arg == "-":
            raise usage(f"unexpected argument {arg!r}: a connection string or database name is not allowed",
                        hint="steps are -f FILE or -c SQL")
        flag, value, index = _split_option(args, index)
        _refuse_connection(flag)
        if flag == "--file":
            parsed.steps.append(reader.read_step(value or ""))
        elif flag == "--command":
            parsed.steps.append({"kind": "command", "source": "-c", "sql": value or ""})
        elif flag == "--set":
            name, eq, val = (value or "").partition("=")
            if not name or not eq:
                raise usage(f"-v {value}: expected NAME=VALUE")
            parsed.variables.append((name, val))
        elif flag in SINGLE_TRANSACTION:
            parsed.single_transaction = True
        elif flag in PREPARE_NOOP:
            pass
        else:
            raise usage(f"psql option {flag} is not supported by prepare",
                        hint="prepare takes -f, -c, -v, -1 and flags that only change psql's echo")
    return parsed


def parse_run_args(args: list[str], workspace: Workspace, tool: str) -> ParsedPsql:
    """Arguments for run:psql / run:pgbench: files are read here, the rest passed on."""
    reader = ScriptReader(workspace)
    parsed = ParsedPsql()
    if tool == "psql":
        args = _expand_short_clusters(args)
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--" and index == 0:
            index += 1
            continue
        if tool == "psql":
            if not arg.startswith("-") or arg == "-":
                raise usage(f"unexpected argument {arg!r}: a connection string or database name is not allowed",
                            hint="sqlrs connects psql to the instance; use -c or -f for what to run")
            flag, value, index = _split_option(args, index)
            _refuse_connection(flag)
            if flag in ("--output", "--log-file"):
                raise usage(f"{flag} writes files where the tool runs; redirect sqlrs's output instead")
            if flag == "--file":
                parsed.steps.append(reader.read_step(value or ""))
                parsed.tool_args += ["-f", f"{FILE_TOKEN}{len(parsed.steps) - 1}"]
                parsed.uses_scripts = True
            elif value is not None:
                if flag == "--command":
                    parsed.uses_scripts = True
                parsed.tool_args += [SHORT_BY_LONG.get(flag, flag), value]
            else:
                parsed.tool_args.append(flag)
        else:
            index = _pgbench_arg(args, index, reader, parsed)
    return parsed


PGBENCH_CONNECTION = {"-h", "--host", "-p", "--port", "-U", "--username"}
# pgbench options that take a separate value (short) or a value (long, also as --opt=value)
PGBENCH_VALUE_SHORT = {"-s", "-c", "-j", "-t", "-T", "-D", "-F", "-I", "-b", "-L", "-M", "-P", "-R"}
PGBENCH_VALUE_LONG = {"--scale", "--client", "--jobs", "--transactions", "--time", "--define", "--fillfactor",
                      "--init-steps", "--builtin", "--latency-limit", "--protocol", "--progress", "--rate",
                      "--partitions", "--partition-method", "--tablespace", "--index-tablespace",
                      "--aggregate-interval", "--log-prefix", "--sampling-rate", "--random-seed", "--max-tries",
                      "--show-script"}


def _pgbench_arg(args: list[str], index: int, reader: ScriptReader, parsed: ParsedPsql) -> int:
    arg = args[index]
    name = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
    if name in PGBENCH_CONNECTION:
        _refuse_connection(name)
    if not arg.startswith("-") or arg == "-":
        raise usage(f"unexpected argument {arg!r}: the database is the instance's",
                    hint="pgbench options only; sqlrs connects pgbench to the instance")
    if name in ("-f", "--file"):
        if arg in ("-f", "--file"):
            if index + 1 >= len(args):
                raise usage(f"{arg} needs a value")
            value, index = args[index + 1], index + 2
        else:
            value, index = (arg.split("=", 1)[1] if arg.startswith("--") else arg[2:]), index + 1
        script, at, weight = value.partition("@")
        parsed.steps.append(reader.read_step(script))
        parsed.tool_args += ["-f", f"{FILE_TOKEN}{len(parsed.steps) - 1}{at}{weight}"]
        return index
    takes_value = (arg in PGBENCH_VALUE_SHORT) or (arg in PGBENCH_VALUE_LONG)
    if takes_value:
        if index + 1 >= len(args):
            raise usage(f"{arg} needs a value")
        parsed.tool_args += [arg, args[index + 1]]
        return index + 2
    parsed.tool_args.append(arg)
    return index + 1


def stdin_script(workspace: Workspace) -> dict[str, Any]:
    """A step of the script on stdin (`run:psql` with no -c/-f), its includes followed."""
    return ScriptReader(workspace).read_step("-")


def text_script(workspace: Workspace, text: str) -> dict[str, Any]:
    """A step of a script given as text (the library's `input=`), followed like stdin's."""
    reader = ScriptReader(workspace)
    reader._add("<input>", text.encode(), None, ())
    return {"kind": "file", "source": "-", "files": reader.files}
