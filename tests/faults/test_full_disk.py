"""A full filesystem under the state directory (issue 26.2), on a small ext4 loop filesystem
filled to the last block (root's reserve included): every command says so in one line with a
hint and exits 1; run:psql keeps psql's own exit code; nothing answers 500 `internal`; once there
is room again, everything works."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _require import require
from fixtures import native_available
from harness import Sqlrs, processes_mentioning, short_tmp, wait_until

from sqlrs.adapters.sqlite.repository import SqliteRepository, create_sqlite_engine, migrate
from sqlrs.domain.errors import NoSpace
from sqlrs.domain.model import Job, JobStatus

pytestmark = pytest.mark.timeout(900)


@contextlib.contextmanager
def small_filesystem(size: str) -> Iterator[Path]:
    """A fresh ext4 loop filesystem of `size`, mounted on a short path; gone afterwards."""
    if os.geteuid() != 0:
        require("native", False, "a loop filesystem needs root")
    where = short_tmp("full")
    image = where.with_suffix(".img")
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(where)], check=True)  # autoclear: umount detaches
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)
        image.unlink(missing_ok=True)
        shutil.rmtree(where, ignore_errors=True)


def fill(mount: Path) -> Path:
    """Fill the filesystem to its last block, as root (the reserve too); the filler file."""
    filler = mount / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True, check=False)
    with open(filler, "ab") as handle, contextlib.suppress(OSError):  # the last partial megabyte
        while True:
            handle.write(b"\0" * 4096)
            handle.flush()
    assert os.statvfs(mount).f_bavail == 0
    return filler


@contextlib.contextmanager
def native_on_a_small_filesystem() -> Iterator[tuple[Sqlrs, Path]]:
    """A native sqlrs whose state dir is on a fresh 300 MB filesystem, warm instances off (their
    copies would take the room); afterwards nothing of it runs and nothing was left behind."""
    available, reason = native_available()
    require("native", available, reason)
    with small_filesystem("300M") as mount:
        sq = Sqlrs(mount / "sd", runtime="native", cwd=mount)
        sq.env["SQLRS_WARM"] = "false"
        try:
            yield sq, mount
        finally:
            with contextlib.suppress(FileNotFoundError):
                (mount / "filler").unlink()
            problems = sq.close()
            assert wait_until(lambda: not processes_mentioning(str(mount)), 30), processes_mentioning(str(mount))
        assert not problems, problems


def one_clear_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("sqlrs: error:")]
    assert len(errors) == 1, result.stderr
    assert "internal" not in result.stderr and "Traceback" not in result.stderr and "sqlite" not in result.stderr
    assert any(word in errors[0] for word in words), errors[0]
    assert "\nhint: " in result.stderr, result.stderr
    return errors[0]


def test_sqlite_says_no_space_when_the_filesystem_is_full() -> None:
    with small_filesystem("16M") as mount:
        engine = create_sqlite_engine(mount / "metadata.db")
        try:
            migrate(engine)
            repo = SqliteRepository(engine)
            fill(mount)
            with pytest.raises(NoSpace) as raised:
                for number in range(100):  # a few MB of rows: the database must grow
                    repo.add_job(Job(id=f"job{number}", kind="prepare", status=JobStatus.QUEUED,
                                     request={"pad": "x" * 200_000}, created_at=datetime.now(UTC)))
            assert raised.value.message == f"the state directory's filesystem is full ({mount})"
            assert raised.value.exit_code == 1 and f"df -h {mount}" in (raised.value.hint or "")
        finally:
            engine.dispose()


def test_every_command_on_a_full_state_dir_fails_in_one_clear_line() -> None:
    with native_on_a_small_filesystem() as (sq, mount):
        sq.prepare("-c", "CREATE TABLE t (i int); INSERT INTO t VALUES (1)", name="full")
        assert sq.run("run:psql", "--instance", "full", "--", "-c", "SELECT 1").returncode == 0
        filler = fill(mount)

        # the engine runs: the prepare is refused in one line (the store's free space or the
        # metadata that cannot be written), never an internal error
        one_clear_error(sq.run("prepare:psql", *sq.runtime_flags(), "--", "-c", "SELECT 42", timeout=120),
                        "full", "free")
        # run:psql keeps psql's own exit code, whatever the engine can or cannot record after it
        counted = sq.run("run:psql", "--instance", "full", "--", "-At", "-c", "SELECT count(*) FROM t")
        assert counted.returncode == 0 and counted.stdout == "1\n", counted.stderr
        assert "sqlite" not in counted.stderr and "internal" not in counted.stderr
        failing = sq.run("run:psql", "--instance", "full", "--", "-c", "SELECT * FROM nope")
        assert failing.returncode == 1 and 'relation "nope" does not exist' in failing.stderr
        assert sq.run("ls").returncode == 0 and sq.run("status").returncode == 0

        # an engine cannot start on it (it cannot even write why): the CLI says what is wrong
        assert sq.run("engine", "stop").returncode == 0
        error = one_clear_error(sq.run("prepare:psql", *sq.runtime_flags(), "--", "-c", "SELECT 42"), "full")
        assert error == f"sqlrs: error: the state directory's filesystem is full ({sq.state_dir})"

        # room again: everything works, nothing was lost
        filler.unlink()
        assert json.loads(sq.run("ls", "-o", "json").stdout)[0]["name"] == "full"
        dsn = sq.prepare("-c", "SELECT 42")
        assert dsn.startswith("postgresql://")


def test_a_small_filesystem_takes_three_small_prepares() -> None:
    """Issue 26.1's repro: on a 300 MB state dir the third small prepare failed "no space" after its
    state was saved (the check counted the build's scratch, removed right after). Each one gives
    its DSN now."""
    with native_on_a_small_filesystem() as (sq, _):
        for sql in ("create table t(i int)", "create table u(i int)", "select 42"):
            result = sq.run("prepare:psql", *sq.runtime_flags(), "--", "-c", sql, timeout=300)
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith("postgresql://"), result.stdout
        assert len(json.loads(sq.run("ls", "--instances", "-o", "json").stdout)) == 3
