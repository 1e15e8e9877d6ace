"""Alias files, in the upstream sqlrs' format and resolution rules (docs/cli.md, "Aliases").

A *prepare alias* `NAME.prep.s9s.yaml` is a committed recipe for a state (`kind`, optional
`image`, `args`: what `prepare:KIND` would take after `--`); a *run alias* `NAME.run.s9s.yaml`
a committed preset for `run:KIND` (`kind`, `args`; no image). They are referred to by a *ref*:

- a stem relative to the current directory: `chinook` is `./chinook.prep.s9s.yaml`,
  `../db/app` is `../db/app.prep.s9s.yaml` (never searched for, never rebased on the workspace
  root); a ref ending in `.` names a file exactly (`smoke.yaml.` is `./smoke.yaml`);
- the file must lie inside the workspace (sqlrs.engine_client.workspace).

Paths inside an alias are relative to the alias file's directory: psql's `-f`, Liquibase's
`--changelog-file`, `--defaults-file` and `--searchPath`, Alembic's `-c`; an `exec` or `alembic`
alias runs in the alias file's directory. Only the CLI reads aliases; this module has no Click.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlrs.engine_client.errors import ClientError, usage

PREPARE = "prepare"
RUN = "run"
SUFFIXES = {PREPARE: ".prep.s9s.yaml", RUN: ".run.s9s.yaml"}
# what an alias of each class may be: prepare:KIND / run:KIND
KINDS = {PREPARE: ("psql", "lb", "alembic", "exec"), RUN: ("psql", "pgbench")}
MARKER = ".sqlrs"  # the local-only workspace directory: never scanned


class Alias:
    """One alias file, loaded: its class, where it is, and the command it stands for."""

    def __init__(self, cls: str, path: Path, kind: str, image: str | None, args: list[str]):
        self.cls = cls
        self.path = path
        self.kind = kind
        self.image = image
        self.args = args

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def command_args(self) -> list[str]:
        """`args` with their paths rebased from the alias file's directory: relative to the current
        directory for the kinds that run there (psql, pgbench, Liquibase: what they show stays
        short), absolute for those that run in the alias file's directory (alembic, exec)."""
        relative_to = Path.cwd() if self.kind in ("psql", "pgbench", "lb") else None
        return rebase(self.cls, self.kind, self.args, self.base_dir, relative_to)


def class_of(path: str) -> str | None:
    lowered = path.lower()
    return next((cls for cls, suffix in SUFFIXES.items() if lowered.endswith(suffix)), None)


def inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def resolve(ref: str, cls: str | None, cwd: Path, root: Path) -> tuple[Path, str]:
    """The alias file `ref` names and its class (`cls` when given, else from the file's suffix).

    Usage errors (exit 2) for an empty ref, a file outside the workspace, a stem that matches
    both a prepare and a run alias, an exact file of no known class; not found (exit 4) when
    no such file exists."""
    if not ref or ref == ".":
        raise usage("the alias ref is empty", hint="e.g. sqlrs prepare chinook (./chinook.prep.s9s.yaml)")
    if ref.endswith("."):
        path = _within(cwd / ref[:-1], root, ref)
        if not path.is_file():
            raise ClientError(f"alias file not found: {display(path, cwd)}", exit_code=4)
        found = class_of(path.name)
        if found is None and cls is None:
            raise usage(f"{ref}: an exact file without a .prep.s9s.yaml or .run.s9s.yaml suffix",
                        hint="say which it is: --prepare or --run")
        if found is not None and cls is not None and found != cls:
            raise usage(f"{ref}: a {found} alias, not a {cls} alias")
        return path, cls or str(found)
    classes = [cls] if cls else [PREPARE, RUN]
    matches = [(path, c) for c in classes
               if (path := _within(cwd / (ref + SUFFIXES[c]), root, ref)).is_file()]
    if len(matches) > 1:
        raise usage(f"alias ref {ref!r} names both {ref}{SUFFIXES[PREPARE]} and {ref}{SUFFIXES[RUN]}",
                    hint="add --prepare or --run, or name the file exactly with a trailing '.'")
    if not matches:
        wanted = " or ".join(display(cwd / (ref + SUFFIXES[c]), cwd) for c in classes)
        raise ClientError(f"alias file not found: {wanted}", exit_code=4,
                          hint="alias refs are relative to the current directory; list them with: sqlrs alias ls")
    return matches[0]


def _within(path: Path, root: Path, given: str) -> Path:
    if not inside(path, root):
        raise usage(f"{given}: outside the workspace {root}", hint="run from inside the workspace, or --workspace DIR")
    return Path(os.path.normpath(path))


def display(path: Path, cwd: Path) -> str:
    return os.path.relpath(path, cwd)


def ref_of(path: Path, cwd: Path, cls: str) -> str:
    """How the alias at `path` is invoked from `cwd`."""
    relative = Path(os.path.relpath(path, cwd)).as_posix()
    suffix = SUFFIXES[cls]
    return relative[: -len(suffix)] if relative.lower().endswith(suffix) else relative + "."


def load(path: Path, cls: str) -> Alias:
    """Read and validate an alias file (usage errors name the file and what is wrong)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise usage(f"{path}: cannot read it: {exc}") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "not YAML"
        raise usage(f"{path}: not a valid {cls} alias: {first}") from None
    if not isinstance(data, dict):
        raise usage(f"{path}: a {cls} alias is a mapping with kind and args")
    unknown = sorted(set(data) - {"kind", "image", "args"})
    if unknown:
        raise usage(f"{path}: unknown field {unknown[0]!r}", hint="an alias has kind, args and (prepare) image")
    kind = str(data.get("kind") or "").strip().lower()
    if not kind:
        raise usage(f"{path}: {cls} alias kind is required", hint="kind: " + " | ".join(KINDS[cls]))
    if kind not in KINDS[cls]:
        raise usage(f"{path}: unknown {cls} alias kind {kind!r}", hint="kind: " + " | ".join(KINDS[cls]))
    image = data.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise usage(f"{path}: image takes an image reference, e.g. postgres:17")
    if image is not None and cls == RUN:
        raise usage(f"{path}: a run alias takes no image")
    args = data.get("args")
    if not isinstance(args, list) or not args:
        raise usage(f"{path}: {cls} alias args are required (a list)")
    if not all(isinstance(arg, str | int | float) and not isinstance(arg, bool) for arg in args):
        raise usage(f"{path}: every arg is a string")
    return Alias(cls, path, kind, image.strip() if isinstance(image, str) else None, [str(arg) for arg in args])


# -- paths inside an alias -------------------------------------------------------------------------
# option -> how its value is a path: "file" (one path) or "list" (comma-separated paths)
PATH_OPTIONS = {
    "psql": {"-f": "file", "--file": "file"},
    "pgbench": {"-f": "file", "--file": "file"},
    "lb": {"--changelog-file": "file", "--defaults-file": "file", "--searchPath": "list", "--search-path": "list"},
    "alembic": {"-c": "file", "--config": "file"},
    "exec": {},
}


def _remote(value: str) -> bool:
    """Liquibase also takes classpath: and URL resources; they are no local paths."""
    return ":" in value.split("/", 1)[0] and not os.path.isabs(value)


def _rebase_value(value: str, how: str, base: Path, relative_to: Path | None = None) -> str:
    def one(item: str) -> str:
        item = item.strip()
        if not item or item == "-" or _remote(item):
            return item
        weight = ""
        if "@" in item and not os.path.exists(base / item):  # pgbench's -f FILE@WEIGHT
            item, _, rest = item.partition("@")
            weight = "@" + rest
        path = os.path.normpath(base / item)
        return (os.path.relpath(path, relative_to) if relative_to is not None else path) + weight

    return ",".join(one(part) for part in value.split(",")) if how == "list" else one(value)


def rebase(cls: str, kind: str, args: list[str], base: Path, relative_to: Path | None = None) -> list[str]:
    """The alias args with every path-valued option taken from `base`: absolute, or relative to
    `relative_to` when given."""
    options = PATH_OPTIONS.get(kind, {})
    out: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            out += args[index - 1:]
            break
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in options and eq:
            out.append(f"{name}={_rebase_value(value, options[name], base, relative_to)}")
        elif name in options and index < len(args):
            out += [arg, _rebase_value(args[index], options[name], base, relative_to)]
            index += 1
        elif not arg.startswith("--") and arg[:2] in options and len(arg) > 2:  # -fFILE
            out.append(arg[:2] + _rebase_value(arg[2:], options[arg[:2]], base, relative_to))
        else:
            out.append(arg)
    return out


def referenced_paths(alias: Alias) -> list[tuple[str, Path, bool]]:
    """(as written, absolute path, must be a file) of every local path the alias names."""
    options = PATH_OPTIONS.get(alias.kind, {})
    found: list[tuple[str, Path, bool]] = []
    args = alias.args
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            break
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name not in options and not (not arg.startswith("--") and arg[:2] in options and len(arg) > 2):
            continue
        if not eq and name in options:
            if index >= len(args):
                found.append((f"{name} (no value)", alias.base_dir, True))
                continue
            value = args[index]
            index += 1
        elif not eq:
            name, value = arg[:2], arg[2:]
        how = options[name]
        for item in (value.split(",") if how == "list" else [value]):
            item = item.strip()
            if not item or item == "-" or _remote(item):
                continue
            rebased = _rebase_value(item, how, alias.base_dir)
            found.append((item, Path(rebased.split("@")[0] if alias.kind == "pgbench" else rebased), how == "file"))
    return found


def check(alias_path: Path, cls: str, root: Path) -> tuple[str | None, list[str]]:
    """Static checks of one alias (no engine, no tools): (its kind, the problems found)."""
    try:
        alias = load(alias_path, cls)
    except ClientError as exc:
        return None, [exc.message.replace(f"{alias_path}: ", "", 1)]
    problems = []
    for given, path, is_file in referenced_paths(alias):
        if not inside(path, root):
            problems.append(f"{given}: outside the workspace")
        elif not path.exists():
            problems.append(f"referenced path not found: {given}")
        elif is_file and path.is_dir():
            problems.append(f"referenced path must be a file: {given}")
    if alias.kind == "psql" and cls == PREPARE and not any(a in ("-f", "--file", "-c", "--command")
                                                          or a.startswith(("-f", "--file=", "-c", "--command="))
                                                          for a in alias.args):
        problems.append("a psql prepare alias needs at least one -f FILE or -c SQL")
    if alias.kind == "lb" and cls == PREPARE and not any(a.startswith("--changelog-file") for a in alias.args):
        problems.append("a Liquibase prepare alias needs --changelog-file")
    return alias.kind, problems


# -- scanning --------------------------------------------------------------------------------------
def scan(start: Path, depth: str, classes: tuple[str, ...]) -> list[tuple[Path, str]]:
    """Alias files below `start` (`self`: in it only, `children`: and its subdirectories,
    `recursive`: everywhere below), by path; `.sqlrs/` and `.git/` are skipped."""
    found: list[tuple[Path, str]] = []

    def walk(directory: Path, level: int) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name in (MARKER, ".git") or depth == "self" or (depth == "children" and level >= 1):
                    continue
                walk(Path(entry.path), level + 1)
            elif (cls := class_of(entry.name)) is not None and cls in classes:
                found.append((Path(entry.path), cls))

    walk(start, 0)
    return sorted(found, key=lambda item: str(item[0]))


def peek_kind(path: Path) -> tuple[str | None, str | None]:
    """(kind, error) read cheaply for `alias ls`: malformed files are listed too."""
    import yaml

    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return None, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(data, dict):
        return None, "not a mapping"
    kind = data.get("kind")
    return (str(kind).strip().lower() or None) if kind is not None else None, None


# -- writing ---------------------------------------------------------------------------------------
def relativize(cls: str, kind: str, args: list[str], cwd: Path, alias_dir: Path) -> list[str]:
    """The arguments of a command run in `cwd`, written for an alias file in `alias_dir`: every
    path-valued option relative to the alias file's directory."""
    absolute = rebase(cls, kind, args, cwd)
    options = PATH_OPTIONS.get(kind, {})

    def rel(value: str, how: str) -> str:
        def one(item: str) -> str:
            if not item or item == "-" or _remote(item) or not os.path.isabs(item.split("@")[0]):
                return item
            path, at, weight = item.partition("@") if kind == "pgbench" else (item, "", "")
            return Path(os.path.relpath(path, alias_dir)).as_posix() + at + weight

        return ",".join(one(part) for part in value.split(",")) if how == "list" else one(value)

    out: list[str] = []
    index = 0
    while index < len(absolute):
        arg = absolute[index]
        index += 1
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if arg == "--":
            out += absolute[index - 1:]
            break
        if name in options and eq:
            out.append(f"{name}={rel(value, options[name])}")
        elif name in options and index < len(absolute):
            out += [arg, rel(absolute[index], options[name])]
            index += 1
        elif not arg.startswith("--") and arg[:2] in options and len(arg) > 2:
            out.append(arg[:2] + rel(arg[2:], options[arg[:2]]))
        else:
            out.append(arg)
    return out


def render(kind: str, image: str | None, args: list[str]) -> str:
    """An alias file's text, in the upstream's layout (kind, image, args)."""
    import yaml

    data: dict[str, Any] = {"kind": kind}
    if image:
        data["image"] = image
    data["args"] = args
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
