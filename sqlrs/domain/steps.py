"""Steps of a chain and their normalized content.

The CLI reads a step's files and sends them as a *bundle*: every file it read, with the lines
that include other files mapped to those files' indexes. The engine validates the bundle and
derives the normalized content (includes expanded depth-first), whose digest is what the cache
key hashes: include spelling and paths do not matter, content does.

A step may also arrive *without content*, as its digest only: the CLI asks first whether the
chain is cached, and sends megabytes of scripts only when something must be built.

Besides psql's `file` and `command` steps there are *host* kinds (`alembic`, `exec`, ...): a tool
on the user's machine applies them to the build server over TCP. Their content is what the CLI
read and hashed (`keyed`: named facts such as a revision file's sha256, never paths or
environments), and how to run them (`run`: argv, cwd, environment) travels beside it but never
enters the key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Literal

import attrs

from sqlrs.domain.digests import digest
from sqlrs.domain.errors import UsageError
from sqlrs.domain.scripts import (
    connect_target_outside,
    content_digest,
    normalized_content,
    parse_include,
    script_lines,
)

DIGEST_LENGTH = 64

StepKind = Literal["file", "command", "alembic", "exec", "liquibase", "django"]
PSQL_KINDS = frozenset({"file", "command"})
# kinds applied by a tool on the host (sqlrs/services/states/steps has one executor per kind)
HOST_KINDS = frozenset({"alembic", "exec", "liquibase", "django"})
MAX_KEYED = 100_000


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """`text` with what UTF-8 cannot hold (surrogate-escaped bytes, lone surrogates) as backslash
    escapes: `f\\xffname.sql` for a file name with the byte 0xff."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


@attrs.frozen
class Include:
    line: int  # 0-based line index in the including file
    file: int  # index of the included file in the bundle


@attrs.frozen
class ScriptFile:
    path: str  # where the CLI read it; used only in messages
    content: str
    includes: tuple[Include, ...] = ()

    def lines(self) -> list[str]:
        """The file's lines; a final newline ends the last line rather than starting another."""
        return script_lines(self.content)


@attrs.frozen
class HostRun:
    """How a host-kind step runs on the engine's machine; none of it enters the key."""

    cwd: str  # absolute: where the tool runs (the CLI's cwd)
    argv: tuple[str, ...] = ()  # exec: the command; alembic, django: (the user's python,)
    env: tuple[tuple[str, str], ...] = ()  # the CLI's environment, connection variables removed
    params: tuple[tuple[str, str], ...] = ()  # kind-specific, e.g. alembic's config and revision

    def param(self, name: str) -> str | None:
        return next((value for key, value in self.params if key == name), None)


@attrs.frozen
class Step:
    """One unit of caching: a `-f` or `-c` argument, an Alembic revision, a Django migration, a command."""

    kind: StepKind
    source: str  # file path as the user gave it, "-" for stdin, "-c" for commands
    files: tuple[ScriptFile, ...] = ()  # file steps: files[0] is the script itself
    sql: str | None = None  # command steps
    digest: str | None = None  # sha256 of the normalized content; alone, it stands for the content
    keyed: tuple[tuple[str, str], ...] = ()  # host kinds: (name, value) facts that decide the result
    run: HostRun | None = None  # host kinds: how to apply it

    @property
    def has_content(self) -> bool:
        return bool(self.files) or self.sql is not None or self.run is not None

    @property
    def on_host(self) -> bool:
        return self.kind in HOST_KINDS

    def with_printable_labels(self) -> Step:
        """The step with its source and file paths as labels any store and terminal take.

        They are labels only (messages, listings; neither the key nor a path the engine opens),
        and a file name need not be UTF-8: its other bytes arrive surrogate-escaped
        (os.fsdecode), which SQLite and a UTF-8 stdout refuse. They become `\\xNN` escapes, as
        `ls -b` shows them."""
        if all(_is_utf8(text) for text in (self.source, *(f.path for f in self.files))):
            return self
        return attrs.evolve(self, source=printable(self.source),
                            files=tuple(attrs.evolve(f, path=printable(f.path)) for f in self.files))

    def validate(self) -> None:
        if self.kind not in PSQL_KINDS | HOST_KINDS:
            raise UsageError(f"unknown step kind {self.kind!r}",
                             hint="file (-f), command (-c), " + ", ".join(sorted(HOST_KINDS)))
        if self.digest is not None and (len(self.digest) != DIGEST_LENGTH
                                        or any(c not in "0123456789abcdef" for c in self.digest)):
            raise UsageError(f"step {self.source!r}: digest must be 64 lowercase hex characters")
        if not self.has_content:
            if self.digest is None:
                raise UsageError(f"step {self.source!r} carries neither content nor digest")
            return
        self._validate_content()
        if self.digest is not None and self.digest != self.content_digest():
            raise UsageError(f"step {self.source!r}: the content does not match its digest")

    def _validate_content(self) -> None:
        if self.on_host:
            self._validate_host()
            return
        if self.keyed or self.run is not None:
            raise UsageError(f"malformed step {self.source!r}: psql steps carry no host command")
        if self.kind == "command":
            if self.sql is None or self.files:
                raise UsageError("a -c step carries its SQL and no files")
            self._check_connects("-c", self.sql.split("\n"))
            return
        if self.kind != "file" or not self.files or self.sql is not None:
            raise UsageError(f"malformed step {self.source!r}: a -f step carries its files")
        for index, script in enumerate(self.files):
            lines = script.lines()
            for inc in script.includes:
                if not 0 <= inc.file < len(self.files) or inc.file == index:
                    raise UsageError(f"{script.path}: include on line {inc.line + 1} points nowhere")
                if not 0 <= inc.line < len(lines) or parse_include(lines[inc.line]) is None:
                    raise UsageError(f"{script.path}: line {inc.line + 1} is not an include directive")
            self._check_connects(script.path, lines)
        self._check_acyclic()

    def _validate_host(self) -> None:
        run = self.run
        if run is None or self.files or self.sql is not None:
            raise UsageError(f"malformed step {self.source!r}: a {self.kind} step carries its host command only")
        if not self.keyed or len(self.keyed) > MAX_KEYED:
            raise UsageError(f"step {self.source!r}: a {self.kind} step needs the facts that key it")
        if not os.path.isabs(run.cwd):
            raise UsageError(f"step {self.source!r}: the working directory must be absolute, not {run.cwd!r}")
        if not run.argv or not all(run.argv):
            raise UsageError(f"step {self.source!r}: the command is empty")

    @staticmethod
    def _check_connects(path: str, lines: list[str]) -> None:
        for number, line in enumerate(lines, 1):
            if "\\c" not in line:
                continue
            outside = connect_target_outside(line)
            if outside is not None:
                raise UsageError(
                    f"{path}:{number}: \\connect to {outside!r} leaves the instance",
                    hint="steps may change database or user (\\c dbname [user]), not host, port or conninfo",
                )

    def _check_acyclic(self) -> None:
        visiting: set[int] = set()
        done: set[int] = set()

        def visit(index: int, trail: tuple[str, ...]) -> None:
            if index in done:
                return
            if index in visiting:
                raise UsageError("include cycle: " + " -> ".join((*trail, self.files[index].path)))
            visiting.add(index)
            for inc in self.files[index].includes:
                visit(inc.file, (*trail, self.files[index].path))
            visiting.discard(index)
            done.add(index)

        visit(0, ())

    def normalized_content(self) -> str:
        """The script with include directives replaced by the included content, depth-first."""
        if self.kind == "command":
            return self.sql or ""
        return normalized_content([(f.content, [(i.line, i.file) for i in f.includes]) for f in self.files])

    def content_digest(self) -> str:
        """What the cache key hashes: the digest of the normalized content (host kinds: of `keyed`)."""
        if not self.has_content:
            assert self.digest is not None
            return self.digest
        if self.on_host:
            return keyed_digest(self.keyed)
        return content_digest(self.normalized_content())

    def without_content(self) -> Step:
        return Step(kind=self.kind, source=self.source, digest=self.content_digest())


def keyed_digest(keyed: Iterable[tuple[str, str]]) -> str:
    """The content digest of a host-kind step: its facts, length-prefixed, in their order.

    The CLI computes the same value when it builds the step (`sqlrs.domain.digests.digest`)."""
    return digest([[name, value] for name, value in keyed])


@attrs.frozen
class PsqlOptions:
    """psql options that change what the steps do; every one enters every step's hash."""

    variables: tuple[tuple[str, str], ...] = ()
    single_transaction: bool = False

    @classmethod
    def create(cls, variables: Iterable[tuple[str, str]], single_transaction: bool) -> PsqlOptions:
        # psql applies -v in order, so a later value of the same name wins.
        merged: dict[str, str] = {}
        for name, value in variables:
            merged[name] = value
        return cls(tuple(sorted(merged.items())), single_transaction)
