"""Which runtime serves a prepare: `auto` passes over a daemon that cannot get the image, the
engine checks its runtimes when it starts, and runtime settings are checked when they are set."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _containers import container_runtime_available
from _require import require
from fixtures import native_available
from harness import Sqlrs, short_tmp

ABSENT_IMAGE = "localhost/sqlrs-no-such-image:0"  # never built, never pullable


@pytest.fixture
def sqlrs_auto() -> Iterator[Sqlrs]:
    """A state dir whose default image (`dbms.image` through SQLRS_IMAGE) exists nowhere."""
    for name in ("docker", "native"):
        require(name, *(container_runtime_available(name) if name != "native" else native_available()))
    state_dir = short_tmp()
    sq = Sqlrs(state_dir, runtime="auto", image="")
    sq.env["SQLRS_IMAGE"] = ABSENT_IMAGE
    sq.env.pop("SQLRS_CONTAINER_RUNTIME", None)
    try:
        yield sq
    finally:
        leftovers = sq.close()
        shutil.rmtree(state_dir, ignore_errors=True)
        assert not leftovers, leftovers


def test_auto_skips_a_container_runtime_that_cannot_get_its_image_and_says_why(sqlrs_auto: Sqlrs) -> None:
    result = sqlrs_auto.run("prepare:psql", "--", "-c", "create table t (id int)", "run:psql", "--", "-Atc",
                            "select count(*) from t")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
    assert f"skipped docker: image {ABSENT_IMAGE} is not available to docker" in result.stderr
    # podman, when its service answers, is passed over for the same reason; native serves it
    assert all(i["runtime"] == "native" for i in sqlrs_auto.instances())
    states = sqlrs_auto.states()
    assert states and all(s["kind"] in ("base", "psql") for s in states)


def test_an_explicit_container_runtime_without_its_image_still_fails_with_the_hint(sqlrs_auto: Sqlrs) -> None:
    result = sqlrs_auto.run("prepare:psql", "--runtime", "docker", "--", "-c", "select 1")
    assert result.returncode == 1, result.stderr
    assert f"image {ABSENT_IMAGE} is not available to docker and cannot be pulled" in result.stderr
    assert f"hint: run `docker pull {ABSENT_IMAGE}`" in result.stderr
    assert "Traceback" not in result.stderr


def _log_lines(state_dir: Path, wanted: list[str], timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = (state_dir / "engine.log").read_text(errors="replace")
        if all(line in text for line in wanted):
            return text
        time.sleep(0.2)
    return text


def test_the_engine_checks_its_runtimes_when_it_starts(sqlrs_auto: Sqlrs) -> None:
    started = sqlrs_auto.run("engine", "start")
    assert started.returncode == 0, started.stderr
    wanted = ["runtime native: available: PostgreSQL",
              f"runtime docker: NOT available: daemon answers, but image {ABSENT_IMAGE} is not available",
              "runtime for new states: native: first available in auto order"]
    log = _log_lines(sqlrs_auto.state_dir, wanted)
    assert all(line in log for line in wanted), log[-3000:]
    status = sqlrs_auto.json("status")
    assert status["runtime"]["name"] == "native"
    assert f"skipped docker: image {ABSENT_IMAGE}" in status["runtime"]["reason"]


def test_a_bad_native_binaries_setting_is_refused_and_a_good_one_applies_without_restart(
        sqlrs_auto: Sqlrs) -> None:
    engine = sqlrs_auto.run("engine", "start")
    assert engine.returncode == 0, engine.stderr
    pid = sqlrs_auto.engine_pid()
    bad = sqlrs_auto.run("config", "set", "runtime.native.pg_bin", "/nonexistent/bin")
    assert bad.returncode == 2, bad.stderr
    assert "runtime native does not work with this setting" in bad.stderr
    assert "/nonexistent/bin lacks postgres" in bad.stderr
    assert "hint:" in bad.stderr
    assert sqlrs_auto.run("config", "get", "runtime.native.pg_bin").stdout.strip() == ""

    embedded = sqlrs_auto.run("config", "set", "runtime.native.pg_bin", "embedded:16")
    assert embedded.returncode == 0, embedded.stderr
    run = sqlrs_auto.run("prepare:psql", "--runtime", "native", "--", "-c", "select 1", "run:psql", "--",
                         "-Atc", "show server_version_num")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().startswith("16"), run.stdout
    assert sqlrs_auto.engine_pid() == pid  # the same engine: no restart was needed

    store = sqlrs_auto.run("config", "set", "snapshot.backend", "copy")
    assert store.returncode == 0, store.stderr
    assert "snapshot.backend takes effect when the engine restarts" in store.stderr
