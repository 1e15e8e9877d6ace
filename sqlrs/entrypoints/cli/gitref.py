"""`--ref GIT_REF`: read a command's inputs from a Git revision without touching the working tree.

The repository is the one the current directory is in; the current directory is *projected* into
the revision (`<repo>/db` → `<revision>/db`), so relative paths and alias refs mean what they
mean today, only at another commit. Two ways to get the revision's files:

- `worktree` (default): `git worktree add --detach` into a temporary directory (symlinks, file
  modes, everything as a checkout has it); removed afterwards unless `--ref-keep-worktree`;
- `blob`: the files read straight from Git's objects (`git archive`) into a temporary directory;
  no worktree is registered in the repository.

While the context is open the process works in the projected directory (the CLI is one thread),
and SQLRS_WORKSPACE points at the projected workspace root; both are restored afterwards. A
prepare keeps the context open until its job ends: Alembic, exec and Liquibase steps run in it.
Standard library only; imported only when --ref is given.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from typing import Any

from sqlrs.engine_client.errors import ClientError, usage
from sqlrs.engine_client.workspace import ENV_WORKSPACE, find_root

MODES = ("worktree", "blob")


class RefSource:
    """The revision a command reads from: what was asked, what it resolved to, where it lies."""

    def __init__(self, requested: str, commit: str, mode: str, repo: str, tree: str, cwd: str):
        self.requested = requested
        self.commit = commit
        self.mode = mode
        self.repo = repo  # the live repository's top level
        self.tree = tree  # the revision's files
        self.cwd = cwd  # the projected current directory

    def to_json(self) -> dict[str, Any]:
        return {"requested": self.requested, "commit": self.commit, "mode": self.mode}


def check_flags(ref: str | None, mode: str | None, keep: bool) -> None:
    if ref is None and (mode is not None or keep):
        raise usage("--ref-mode and --ref-keep-worktree go with --ref", hint="e.g. --ref HEAD~1 --ref-mode blob")
    if mode is not None and mode not in MODES:
        raise usage(f"--ref-mode {mode}: worktree or blob")
    if keep and mode == "blob":
        raise usage("--ref-keep-worktree goes with --ref-mode worktree (blob mode makes no worktree)")


def git(args: list[str], cwd: str, what: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise usage("--ref needs git, which is not installed") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise usage(f"{what}: {detail[-1] if detail else f'git {args[0]} failed'}")
    return done.stdout.strip()


def resolve(ref: str, cwd: str) -> tuple[str, str]:
    """(the repository's top level, the commit `ref` names)."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True,
                             check=False)
    except FileNotFoundError:
        raise usage("--ref needs git, which is not installed") from None
    if top.returncode != 0:
        raise usage(f"--ref {ref}: {cwd} is not in a Git repository", hint="run from inside the repository")
    repo = top.stdout.strip()
    commit = git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], repo, f"--ref {ref}: no such revision")
    return repo, commit


@contextlib.contextmanager
def checkout(ref: str | None, mode: str | None = None, keep: bool = False,
             note: Any = None) -> Iterator[RefSource | None]:
    """Work in `ref`'s files (see the module docstring); nothing at all without a ref."""
    check_flags(ref, mode, keep)
    if ref is None:
        yield None
        return
    mode = mode or "worktree"
    cwd = os.getcwd()
    repo, commit = resolve(ref, cwd)
    live_root = find_root(cwd)
    scratch = tempfile.mkdtemp(prefix="sqlrs-ref-")
    tree = os.path.join(scratch, "tree")
    registered = False
    old_workspace = os.environ.get(ENV_WORKSPACE)
    try:
        if mode == "worktree":
            git(["worktree", "add", "--detach", "--quiet", tree, commit], repo, f"--ref {ref}: cannot check it out")
            registered = True
        else:
            _extract(repo, commit, tree, ref)
        projected = os.path.join(tree, os.path.relpath(cwd, repo))
        if not os.path.isdir(projected):
            raise usage(f"--ref {ref}: the current directory {os.path.relpath(cwd, repo)} does not exist at {ref}")
        root = live_root if not _inside(live_root, repo) else os.path.join(tree, os.path.relpath(live_root, repo))
        os.environ[ENV_WORKSPACE] = os.path.normpath(root)
        os.chdir(projected)
        try:
            yield RefSource(ref, commit, mode, repo, tree, projected)
        finally:
            os.chdir(cwd)
    finally:
        if old_workspace is None:
            os.environ.pop(ENV_WORKSPACE, None)
        else:
            os.environ[ENV_WORKSPACE] = old_workspace
        if registered and keep:
            if note is not None:
                note(f"kept the worktree of {ref} ({commit[:12]}): {tree}")
        else:
            if registered:
                subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=repo, capture_output=True,
                               check=False)
            shutil.rmtree(scratch, ignore_errors=True)
            if registered:
                subprocess.run(["git", "worktree", "prune"], cwd=repo, capture_output=True, check=False)


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([os.path.realpath(path), os.path.realpath(root)]) == os.path.realpath(root)


def _extract(repo: str, commit: str, tree: str, ref: str) -> None:
    """The revision's files from Git's objects (`git archive`), without a worktree."""
    os.makedirs(tree)
    with subprocess.Popen(["git", "archive", "--format=tar", commit], cwd=repo, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
                archive.extractall(tree, filter="tar")
        except tarfile.TarError as exc:
            raise ClientError(f"--ref {ref}: cannot read the revision's files: {exc}") from None
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise usage(f"--ref {ref}: git archive failed: {stderr.strip()}")
