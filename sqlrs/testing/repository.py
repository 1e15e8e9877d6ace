"""The repository ports (sqlrs/ports/repository.py) as suites another package runs on its adapter.

One suite per port (`StateRepositoryContract`, `InstanceRepositoryContract`, `JobLogContract`)
and `RepositoryContract`, all three for an adapter of the whole `Repository`. Subclass one
(pytest collects only the subclass) and give it a `repo` fixture: an empty repository. sqlrs runs
`RepositoryContract` on its SQLite adapter and on the in-memory fake its service tests use
(tests/unit/test_repository_contract.py), so the fake cannot drift from the real one::

    class TestMyRepository(RepositoryContract):
        @pytest.fixture
        def repo(self, tmp_path):
            yield MyRepository(tmp_path / "metadata")
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs

from sqlrs.domain.model import (
    Instance,
    InstanceKind,
    InstanceStatus,
    Job,
    JobStatus,
    NameBinding,
    State,
    StateKind,
    Task,
    TaskStatus,
    UnkeptState,
)
from sqlrs.ports.repository import JobLog, Repository, StateRepository

T0 = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)


def state(state_id: str, parent: str | None = None, minutes: int = 0) -> State:
    return State(id=state_id, parent_id=parent, base_id=parent or state_id, step_hash=None, kind=StateKind.PSQL,
                 runtime="native", source="-c", data_path=f"states/{state_id}", size_bytes=10, build_seconds=0.5,
                 created_at=T0 + timedelta(minutes=minutes), last_used_at=T0)


def instance(instance_id: str, state_id: str, minutes: int = 0) -> Instance:
    return Instance(id=instance_id, state_id=state_id, runtime="native", runtime_ref="123", image=None,
                    host="127.0.0.1", port=5433, user="sqlrs", password="pw", dbname="postgres",
                    data_path=f"instances/{instance_id}", run_path=f"/run/{instance_id}",
                    status=InstanceStatus.RUNNING, created_at=T0 + timedelta(minutes=minutes), last_used_at=T0)


def job(job_id: str, minutes: int = 0, status: JobStatus = JobStatus.QUEUED) -> Job:
    return Job(id=job_id, kind="prepare", status=status, request={"steps": [1, "two"]},
               created_at=T0 + timedelta(minutes=minutes))


def unkept(state_id: str, parent: str, kept: str, position: int, minutes: int = 0) -> UnkeptState:
    return UnkeptState(id=state_id, parent_id=parent, step_hash="h" + state_id, kind=StateKind.PSQL,
                       source=f"{state_id}.sql", build_seconds=0.25, kept_id=kept, position=position,
                       created_at=T0 + timedelta(minutes=minutes))



class StateRepositoryContract:
    """The StateRepository port's promises."""

    def test_unkept_states_live_and_go_with_the_kept_state_recorded_after_them(self, repo: StateRepository) -> None:
        repo.add_state(state("base"))
        span = [unkept("u1", "base", "k3", 0), unkept("u2", "u1", "k3", 1)]
        repo.add_state(state("k3", parent="base", minutes=1), span)
        assert repo.span_of("k3") == span
        assert repo.span_of("base") == []
        assert repo.unkept_states(["u2", "u1", "k3", "nope"]) == {"u1": span[0], "u2": span[1]}
        # another chain passed u1 again and kept another state: two records of u1, the oldest answers
        repo.add_state(state("k9", parent="base", minutes=2), [unkept("u1", "base", "k9", 0, minutes=5)])
        assert repo.unkept_states(["u1"])["u1"].kept_id == "k3"
        repo.delete_state("k3")
        assert repo.span_of("k3") == []
        assert repo.unkept_states(["u1", "u2"]) == {"u1": unkept("u1", "base", "k9", 0, minutes=5)}
        # a second insert of a kept state does not record its span twice
        repo.add_state(state("k9", parent="base", minutes=3), [unkept("u7", "base", "k9", 0)])
        assert [u.id for u in repo.span_of("k9")] == ["u1"]

    def test_unkept_states_by_id_prefix(self, repo: StateRepository) -> None:
        repo.add_state(state("base"))
        repo.add_state(state("k3", parent="base", minutes=1),
                       [unkept("ua1", "base", "k3", 0), unkept("ua2", "ua1", "k3", 1)])
        repo.add_state(state("k9", parent="base", minutes=2), [unkept("ua1", "base", "k9", 0, minutes=5)])
        assert sorted((u.id, u.kept_id) for u in repo.find_unkept("ua")) == [("ua1", "k3"), ("ua2", "k3")]
        assert [u.id for u in repo.find_unkept("ua2")] == ["ua2"]
        assert repo.find_unkept("k3") == [] and repo.find_unkept("u%") == []  # kept ones are not; % is no wildcard

    def test_states_by_id_prefix_parent_and_order(self, repo: StateRepository) -> None:
        repo.add_state(state("bb01", minutes=1))
        repo.add_state(state("aa01", minutes=0))
        repo.add_state(state("bb02", parent="bb01", minutes=2))
        repo.add_state(state("bb01", minutes=9))  # a second insert of an id is ignored
        assert repo.get_state("bb01") == state("bb01", minutes=1)
        assert repo.get_state("nope") is None
        assert sorted(s.id for s in repo.find_states("bb")) == ["bb01", "bb02"]
        assert repo.find_states("b_") == [] and repo.find_states("%") == []  # LIKE's wildcards are literal
        assert [s.id for s in repo.list_states()] == ["aa01", "bb01", "bb02"]
        assert [s.id for s in repo.child_states("bb01")] == ["bb02"]
        later = T0 + timedelta(hours=1)
        repo.touch_state("bb01", later, hit=True)
        repo.touch_state("bb01", later + timedelta(hours=1), hit=False)
        touched = repo.get_state("bb01")
        assert touched is not None and touched.hits == 1 and touched.last_used_at == later + timedelta(hours=1)
        repo.delete_state("bb02")
        assert repo.get_state("bb02") is None and repo.child_states("bb01") == []


class InstanceRepositoryContract:
    """The InstanceRepository port's promises (on a whole Repository: an instance is of a state)."""

    def test_instances_and_their_names(self, repo: Repository) -> None:
        repo.add_state(state("s1"))
        repo.add_state(state("s2"))
        repo.add_instance(instance("i1", "s1", minutes=1))
        repo.add_instance(instance("i2", "s2", minutes=0))
        repo.add_instance(instance("j3", "s1", minutes=2))
        assert [i.id for i in repo.list_instances()] == ["i2", "i1", "j3"]
        assert [i.id for i in repo.list_instances("s1")] == ["i1", "j3"]
        assert sorted(i.id for i in repo.find_instances("i")) == ["i1", "i2"]
        repo.bind_name(NameBinding("dev", "i1", T0))
        assert repo.get_instance("i1") == attrs.evolve(instance("i1", "s1", minutes=1), name="dev")
        repo.bind_name(NameBinding("dev", "i2", T0))  # rebinding moves the name
        assert repo.get_instance("i1").name is None  # type: ignore[union-attr]
        repo.bind_name(NameBinding("main", "i2", T0))  # an instance has one name
        assert [(n.name, n.instance_id) for n in repo.list_names()] == [("main", "i2")]
        assert repo.get_name("dev") is None
        changed = repo.get_instance("i2")
        assert changed is not None
        changed.status, changed.port, changed.kind, changed.host_id = (InstanceStatus.MISSING, 6000,
                                                                       InstanceKind.DATABASE, "i1")
        changed.owner_pid, changed.owner_started, changed.ttl_seconds = 42, 7, 60
        repo.update_instance(changed)
        assert repo.get_instance("i2") == changed
        repo.delete_instance("i2")
        assert repo.get_instance("i2") is None and repo.get_name("main") is None and repo.list_names() == []


class JobLogContract:
    """The JobLog port's promises."""

    def test_jobs_tasks_and_events(self, repo: JobLog) -> None:
        repo.add_job(job("ab12"))
        repo.add_job(job("ab34", minutes=1))
        assert sorted(j.id for j in repo.find_jobs("ab")) == ["ab12", "ab34"]
        running = repo.get_job("ab12")
        assert running is not None and running.request == {"steps": [1, "two"]}
        running.status, running.started_at, running.result = JobStatus.SUCCEEDED, T0, {"dsn": "postgresql://x"}
        running.error = {"code": "x", "message": "y"}
        repo.update_job(running)
        assert repo.get_job("ab12") == running
        tasks = [Task("ab12", 0, "base", "s0", "initdb", TaskStatus.CACHED),
                 Task("ab12", 1, "step", "s1", "-c", TaskStatus.PENDING)]
        repo.set_tasks("ab12", tasks)
        tasks[1].status, tasks[1].seconds, tasks[1].finished_at = TaskStatus.DONE, 1.5, T0
        repo.update_task(tasks[1])
        assert repo.list_tasks("ab12") == tasks
        repo.set_tasks("ab12", tasks[:1])  # replaces the list
        assert repo.list_tasks("ab12") == tasks[:1]
        first = repo.append_event("ab12", "status", {"status": "running"}, T0)
        second = repo.append_event("ab12", "log", {"text": "ünïcode"}, T0 + timedelta(seconds=1))
        other = repo.append_event("ab34", "status", {"status": "queued"}, T0)
        assert (first.seq, second.seq, other.seq) == (1, 2, 1)
        assert repo.events_after("ab12", 0) == [first, second]
        assert repo.events_after("ab12", 1) == [second]
        assert repo.events_after("ab12", 0, limit=1) == [first]
        # a task's change and its event, together
        tasks[0].status, tasks[0].seconds = TaskStatus.DONE, 0.25
        third = repo.append_event("ab12", "task", {"index": 0, "status": "done"}, T0, task=tasks[0])
        assert third.seq == 3 and repo.events_after("ab12", 2) == [third]
        assert repo.list_tasks("ab12") == tasks[:1] and repo.list_tasks("ab12")[0].seconds == 0.25

    def test_pruning_keeps_the_newest_finished_jobs_and_every_unfinished_one(self, repo: JobLog) -> None:
        for minute in range(5):
            repo.add_job(job(f"done{minute}", minutes=minute, status=JobStatus.SUCCEEDED))
            repo.append_event(f"done{minute}", "status", {}, T0)
            repo.set_tasks(f"done{minute}", [Task(f"done{minute}", 0, "base", "s0", "initdb", TaskStatus.CACHED)])
        repo.add_job(job("running", minutes=-1, status=JobStatus.RUNNING))
        finished = [status.value for status in JobStatus if status.terminal]
        assert repo.prune_jobs(2, finished) == 3
        assert sorted(j.id for j in repo.list_jobs()) == ["done3", "done4", "running"]
        assert repo.events_after("done0", 0) == [] and repo.list_tasks("done0") == []
        assert repo.prune_jobs(2, finished) == 0


class RepositoryContract(StateRepositoryContract, InstanceRepositoryContract, JobLogContract):
    """The promises of all three, for an adapter of the whole Repository port."""
