"""A full filesystem under the state directory (issue 26.2): a clear `no_space` error instead of an
internal one, a job whose end cannot be recorded still ends for whoever follows it, and a run keeps
the tool's exit code when recording the instance's use fails afterwards."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import Fakes, prepare, wired

from sqlrs.domain.errors import NoSpace, filesystem_full, no_space_for
from sqlrs.domain.model import Instance, Job, JobStatus
from sqlrs.entrypoints.engine.bootstrap import Services
from sqlrs.services.requests import RunRequest

Wired = tuple[Services, Fakes]


@pytest.fixture
def engine() -> Iterator[Wired]:
    with wired() as pair:
        yield pair


def full() -> NoSpace:
    return filesystem_full("/state")


def test_enospc_anywhere_is_no_space_and_anything_else_is_not() -> None:
    error = no_space_for(OSError(errno.ENOSPC, "No space left on device", "/store/x"))
    assert error is not None and error.code == "no_space" and error.exit_code == 1
    assert error.message == "the filesystem is full: cannot write /store/x" and error.hint
    assert no_space_for(OSError(errno.EACCES, "Permission denied")) is None
    assert no_space_for(ValueError("x")) is None
    assert full().message == "the state directory's filesystem is full (/state)"


def test_a_job_whose_end_cannot_be_recorded_still_ends_for_its_followers(engine: Wired,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    services, fakes = engine
    jobs, filled = services.jobs, threading.Event()

    def refuse_when_full(method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if filled.is_set():
                raise full()
            return method(*args, **kwargs)
        return call

    for name in ("append_event", "update_job", "prune_jobs"):
        monkeypatch.setattr(fakes.repo, name, refuse_when_full(getattr(fakes.repo, name)))

    def handler(ctx: Any) -> dict[str, Any]:
        ctx.emit("log", stream="engine", text="working")
        filled.set()  # the filesystem fills up while the job runs
        raise OSError(errno.ENOSPC, "No space left on device", "/state/store/tmp/x")

    job = jobs.submit("prepare", {}, handler)
    deadline = time.monotonic() + 30
    while jobs.active() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not jobs.active()
    events = jobs.events_after(job.id, 0)
    assert [event.type for event in events] == ["status", "status", "log", "error", "status"]
    assert [event.seq for event in events] == [1, 2, 3, 4, 5]  # the held ones continue the recorded ones
    assert events[3].data["code"] == "no_space" and "/state/store/tmp/x" in events[3].data["message"]
    assert events[-1].data == {"status": "failed"}
    assert jobs.events_after(job.id, 4) == events[4:]
    ended = jobs.get_job(job.id)
    assert isinstance(ended, Job) and ended.status == JobStatus.FAILED
    recorded = fakes.repo.get_job(job.id)
    assert recorded is not None and recorded.status == JobStatus.RUNNING  # what the repository still says


def test_a_run_keeps_the_tools_exit_code_when_its_use_cannot_be_recorded(engine: Wired,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    services, fakes = engine
    instance_id = prepare(services, "create table a()")["instance_id"]

    def no_room(instance: Instance) -> None:
        raise full()

    monkeypatch.setattr(fakes.repo, "update_instance", no_room)
    warnings: list[Any] = []
    outputs: list[tuple[str, bytes]] = []
    for sql, code in (("select 1", 0), ("select FAIL", 3)):
        got = services.runs.run(RunRequest(instance=instance_id, tool="psql", args=("-c", sql)),
                                lambda stream, data: outputs.append((stream, data)), threading.Event(),
                                warnings.append)
        assert got == code
    assert [w.message for w in warnings] == [full().message] * 2
