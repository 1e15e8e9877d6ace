"""In-memory and on-tmp-dir fakes of sqlrs's ports, for service tests without PostgreSQL,
docker or podman (tests/unit/test_services_*.py).

- `FakeRepository`: the metadata in dicts, returning copies as the SQLite one does.
- `FakeSnapshotStore`: volumes are directories below a temporary root, clones full copies
  (`cp -a`); space is accounted as a perfectly deduplicating filesystem would (each distinct
  64 KiB block once), so clones share and copy-on-write grows by what was written, and the free
  space is a fixed capacity minus that. It passes the snapshot-store contract suite
  (sqlrs.testing.snapshots, in tests/integration/test_snapshot_contract.py).
- `FakeRuntime`: "servers" are records. It follows the Runtime port's conventions that the
  services observe (it passes the port-level runtime contract suite, sqlrs.testing.runtime
  `RuntimeContract`, in tests/integration/test_runtime_contract.py): `start` writes a
  `postmaster.pid` saying `ready`, a clean `stop` removes it, servers outlive the adapter (the
  records are shared with a new adapter given the same `servers`);
  `psql` appends the script it is given to `applied.sql` in the data directory, writes N random
  bytes for each `PAD N` in it, and fails (exit 3, an `ERROR:` line) on a script containing `FAIL`.
- `FakeAdmin`: records the SQL it is asked to run; client connections are set per port.
- `FakeInspector`: a database's schema and data are what the fake psql appended to its
  `applied.sql`: `OBJECT kind|name|body|parent` lines (a later one replaces an earlier),
  `DROP kind|name`, `ROWS table count digest`, `SEQUENCE name value`.
- `FakeClock`: wall clock and monotonic clock that move only when told (`advance`).

`fake_adapters(root)` bundles them for `bootstrap(state_dir, adapters=...)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import attrs

from sqlrs.config_file import ConfigFile
from sqlrs.domain.compare import DbObject, Schema, TableContent
from sqlrs.domain.errors import NoSpace, RuntimeFailure, RuntimeUnavailable, StoreFailure
from sqlrs.domain.model import Event, Instance, Job, JobStatus, NameBinding, State, Task, UnkeptState
from sqlrs.domain.remote import RemoteRef
from sqlrs.domain.steps import Step
from sqlrs.entrypoints.engine.bootstrap import Adapters, Services, bootstrap
from sqlrs.ports.admin import ClientSession
from sqlrs.ports.backup import BackupResult
from sqlrs.ports.inspector import Database
from sqlrs.ports.registry import StateRegistry
from sqlrs.ports.runtime import InstanceSpec, OutputSink, Probe, RuntimeIdentity
from sqlrs.ports.snapshots import EarlierClone
from sqlrs.services.jobs import JobContext
from sqlrs.services.requests import PrepareRequest

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self, now: datetime = START) -> None:
        self._now = now
        self._monotonic = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds


class FakeRepository:
    """The Repository port in dicts; every read returns a copy, like rows read from SQLite."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.states: dict[str, State] = {}
        self.instances: dict[str, Instance] = {}
        self.names: dict[str, NameBinding] = {}
        self.jobs: dict[str, Job] = {}
        self.tasks: dict[str, list[Task]] = {}
        self.events: dict[str, list[Event]] = {}
        self.spans: dict[str, list[UnkeptState]] = {}

    # states
    def add_state(self, state: State, span: Sequence[UnkeptState] = ()) -> None:
        with self._lock:
            if state.id not in self.states:
                self.states[state.id] = attrs.evolve(state)
                if span:
                    self.spans[state.id] = [attrs.evolve(unkept) for unkept in span]

    def unkept_states(self, state_ids: Sequence[str]) -> dict[str, UnkeptState]:
        wanted = set(state_ids)
        found: dict[str, UnkeptState] = {}
        with self._lock:
            for unkept in sorted((u for span in self.spans.values() for u in span), key=lambda u: u.created_at):
                if unkept.id in wanted:
                    found.setdefault(unkept.id, attrs.evolve(unkept))
        return found

    def find_unkept(self, prefix: str) -> list[UnkeptState]:
        found: dict[str, UnkeptState] = {}
        with self._lock:
            for unkept in sorted((u for span in self.spans.values() for u in span), key=lambda u: u.created_at):
                if unkept.id.startswith(prefix):
                    found.setdefault(unkept.id, attrs.evolve(unkept))
        return list(found.values())

    def span_of(self, state_id: str) -> list[UnkeptState]:
        with self._lock:
            return [attrs.evolve(unkept) for unkept in self.spans.get(state_id, [])]

    def get_state(self, state_id: str) -> State | None:
        state = self.states.get(state_id)
        return attrs.evolve(state) if state is not None else None

    def find_states(self, prefix: str) -> list[State]:
        return [attrs.evolve(s) for s in self.list_states() if s.id.startswith(prefix)]

    def list_states(self) -> list[State]:
        with self._lock:
            return [attrs.evolve(s) for s in sorted(self.states.values(), key=lambda s: s.created_at)]

    def child_states(self, state_id: str) -> list[State]:
        return [s for s in self.list_states() if s.parent_id == state_id]

    def touch_state(self, state_id: str, when: datetime, hit: bool) -> None:
        with self._lock:
            state = self.states.get(state_id)
            if state is not None:
                state.last_used_at = when
                state.hits += 1 if hit else 0

    def set_state_size(self, state_id: str, size_bytes: int) -> None:
        with self._lock:
            if state_id in self.states:
                self.states[state_id].size_bytes = size_bytes

    def delete_state(self, state_id: str) -> None:
        with self._lock:
            self.states.pop(state_id, None)
            self.spans.pop(state_id, None)

    # instances
    def _named(self, instance: Instance) -> Instance:
        name = next((b.name for b in self.names.values() if b.instance_id == instance.id), None)
        return attrs.evolve(instance, name=name)

    def add_instance(self, instance: Instance) -> None:
        with self._lock:
            if instance.id in self.instances:
                raise ValueError(f"instance {instance.id} exists")
            self.instances[instance.id] = attrs.evolve(instance, name=None)

    def get_instance(self, instance_id: str) -> Instance | None:
        with self._lock:
            instance = self.instances.get(instance_id)
            return self._named(instance) if instance is not None else None

    def find_instances(self, prefix: str) -> list[Instance]:
        return [i for i in self.list_instances() if i.id.startswith(prefix)]

    def list_instances(self, state_id: str | None = None) -> list[Instance]:
        with self._lock:
            return [self._named(i) for i in sorted(self.instances.values(), key=lambda i: i.created_at)
                    if state_id is None or i.state_id == state_id]

    def update_instance(self, instance: Instance) -> None:
        with self._lock:
            if instance.id in self.instances:
                self.instances[instance.id] = attrs.evolve(instance, name=None)

    def delete_instance(self, instance_id: str) -> None:
        with self._lock:
            self.instances.pop(instance_id, None)
            for name in [n for n, b in self.names.items() if b.instance_id == instance_id]:
                del self.names[name]

    # names
    def bind_name(self, binding: NameBinding) -> None:
        with self._lock:
            for name in [n for n, b in self.names.items() if b.instance_id == binding.instance_id]:
                del self.names[name]
            self.names[binding.name] = attrs.evolve(binding)

    def get_name(self, name: str) -> NameBinding | None:
        binding = self.names.get(name)
        return attrs.evolve(binding) if binding is not None else None

    def list_names(self) -> list[NameBinding]:
        with self._lock:
            return [attrs.evolve(b) for _, b in sorted(self.names.items())]

    def unbind_name(self, name: str) -> None:
        with self._lock:
            self.names.pop(name, None)

    # jobs, tasks and events
    def add_job(self, job: Job) -> None:
        with self._lock:
            self.jobs[job.id] = attrs.evolve(job)

    def get_job(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        return attrs.evolve(job) if job is not None else None

    def find_jobs(self, prefix: str) -> list[Job]:
        return [j for j in self.list_jobs() if j.id.startswith(prefix)]

    def list_jobs(self) -> list[Job]:
        with self._lock:
            return [attrs.evolve(j) for j in sorted(self.jobs.values(), key=lambda j: j.created_at)]

    def update_job(self, job: Job) -> None:
        with self._lock:
            if job.id in self.jobs:
                self.jobs[job.id] = attrs.evolve(job)

    def delete_job(self, job_id: str) -> None:
        with self._lock:
            self.jobs.pop(job_id, None)
            self.tasks.pop(job_id, None)
            self.events.pop(job_id, None)

    def prune_jobs(self, keep: int, finished_statuses: Sequence[str]) -> int:
        with self._lock:
            finished = [j for j in sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=True)
                        if j.status in finished_statuses]
            for job in finished[keep:]:
                self.delete_job(job.id)
            return len(finished[keep:])

    def set_tasks(self, job_id: str, tasks: Sequence[Task]) -> None:
        with self._lock:
            self.tasks[job_id] = [attrs.evolve(t) for t in tasks]

    def update_task(self, task: Task) -> None:
        with self._lock:
            tasks = self.tasks.get(task.job_id, [])
            for position, existing in enumerate(tasks):
                if existing.index == task.index:
                    tasks[position] = attrs.evolve(task)

    def list_tasks(self, job_id: str) -> list[Task]:
        with self._lock:
            return [attrs.evolve(t) for t in sorted(self.tasks.get(job_id, []), key=lambda t: t.index)]

    def append_event(self, job_id: str, type_: str, data: dict[str, Any], when: datetime,
                     task: Task | None = None) -> Event:
        if task is not None:
            self.update_task(task)  # (one lock: the fake has no transaction to share)
        with self._lock:
            events = self.events.setdefault(job_id, [])
            event = Event(job_id=job_id, seq=len(events) + 1, ts=when, type=type_, data=dict(data))
            events.append(event)
            return event

    def events_after(self, job_id: str, seq: int, limit: int = 1000) -> list[Event]:
        with self._lock:
            return [e for e in self.events.get(job_id, []) if e.seq > seq][:limit]


BLOCK = 64 * 1024


def _mounts_below(path: Path) -> list[str]:
    """Mount points at or below `path` (a bind mount of the same filesystem included)."""
    try:
        table = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return []
    top = str(path)
    points = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
              for line in table.splitlines() if len(line.split()) > 4]
    return [point for point in points if point == top or point.startswith(top + "/")]


class FakeSnapshotStore:
    """The SnapshotStore port on a plain directory, without copy-on-write (see the module doc)."""

    backend = "fake"
    copy_on_write = False  # its clones are full copies (`cp -a`, `clone_seconds` each), however it counts space

    def __init__(self, root: Path, capacity: int = 4 << 30) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.capacity = capacity
        self.synced: list[Path] = []
        self.clock: FakeClock | None = None  # moved by `clone_seconds` per clone (what keeping a state costs)
        self.clone_seconds = 0.0
        self.clones: list[tuple[Path, Path]] = []  # (source, target) of each clone
        self.full_clones = 0  # the next N clones fail as on a full filesystem (ENOSPC)

    def _below_root(self, path: Path, verb: str) -> Path:
        resolved = Path(os.path.abspath(path))
        root = Path(os.path.abspath(self.root))
        if resolved == root or root not in resolved.parents:
            raise StoreFailure(f"cannot {verb} {path}: not below the store root {self.root}")
        return resolved

    def create(self, path: Path) -> None:
        path = self._below_root(path, "create")
        if os.path.lexists(path):
            raise StoreFailure(f"cannot create {path}: it exists")
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # whatever the umask

    def clone(self, source: Path, target: Path, earlier: EarlierClone | None = None) -> None:
        target = self._below_root(target, "clone to")
        if os.path.lexists(target):
            raise StoreFailure(f"cannot clone to {target}: it exists")
        if not os.path.isdir(source):
            raise StoreFailure(f"cannot clone {source}: no such volume")
        if self.full_clones > 0:
            self.full_clones -= 1
            raise NoSpace(f"cannot clone {source} to {target}: No space left on device")
        target.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["cp", "-a", "--reflink=never", str(source), str(target)], capture_output=True,
                                text=True, check=False)
        if result.returncode != 0:
            self._remove(target)
            raise StoreFailure(f"cannot clone {source}: {result.stderr.strip()}")
        self.clones.append((Path(source), target))
        if self.clock is not None:
            self.clock.advance(self.clone_seconds)

    def delete(self, path: Path) -> None:
        path = self._below_root(path, "delete")
        if not os.path.lexists(path):
            return
        busy = _mounts_below(path)
        if busy:
            raise StoreFailure(f"cannot delete {path}: something is mounted at {busy[0]}")
        self._remove(path)

    @staticmethod
    def _remove(path: Path) -> None:
        if not os.path.lexists(path):
            return
        if not path.is_dir() or path.is_symlink():
            path.unlink()
            return
        for dirpath, _dirs, _files in os.walk(path):
            os.chmod(dirpath, 0o700)
        shutil.rmtree(path)

    def allocated_bytes(self, paths: Sequence[Path]) -> int:
        """Each distinct 64 KiB block once: what a deduplicating filesystem would hold."""
        blocks: set[bytes] = set()
        total = 0
        seen: set[tuple[int, int]] = set()
        for top in {os.path.abspath(p) for p in paths}:
            for dirpath, _dirs, files in os.walk(top):
                for name in files:
                    full = os.path.join(dirpath, name)
                    st = os.lstat(full)
                    if not os.path.isfile(full) or os.path.islink(full) or (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                    with open(full, "rb") as handle:
                        while chunk := handle.read(BLOCK):
                            digest = hashlib.sha1(chunk).digest()
                            if digest not in blocks:
                                blocks.add(digest)
                                total += len(chunk)
        return total

    def free_bytes(self) -> int:
        # a filesystem's own metadata takes some room, as on a real one: total > free when empty
        return max(0, self.capacity - (1 << 20) - self.allocated_bytes([self.root]))

    def total_bytes(self) -> int:
        return self.capacity

    def settle(self, timeout: float = 60.0) -> None:
        pass  # nothing is freed late here

    def sync(self, path: Path) -> None:
        self.synced.append(Path(path))


@attrs.define
class FakeServer:
    spec: InstanceSpec
    ref: str
    running: bool = True
    scripts: list[str] = attrs.field(factory=list)


# initdb's options (PostgreSQL 15-18): any other is refused, as initdb refuses it
INITDB_FLAGS = frozenset({
    "-A", "-D", "-E", "-g", "-k", "-L", "-n", "-N", "-s", "-S", "-T", "-U", "-W", "-X", "-c", "-d",
    "--allow-group-access", "--auth", "--auth-host", "--auth-local", "--data-checksums", "--debug",
    "--discard-caches", "--encoding", "--icu-locale", "--icu-rules", "--lc-collate", "--lc-ctype", "--lc-messages",
    "--lc-monetary", "--lc-numeric", "--lc-time", "--locale", "--locale-provider", "--no-clean", "--no-instructions",
    "--no-locale", "--no-sync", "--pgdata", "--pwfile", "--pwprompt", "--set", "--show", "--sync-only",
    "--sync-method", "--text-search-config", "--username", "--wal-segsize", "--waldir", "--no-data-checksums"})


class FakeRuntime:
    """The Runtime port without PostgreSQL: a server is a record plus its postmaster.pid."""

    needs_image = False

    def __init__(self, name: str = "native", version: str = "16.4",
                 servers: dict[str, FakeServer] | None = None) -> None:
        self.name = name
        self.version = version
        self.available = True
        self.servers: dict[str, FakeServer] = {} if servers is None else servers  # ref -> server, like the OS's
        self.started: list[str] = []  # instance ids (scratch keys), in start order
        self.fail_start = 0  # the next N starts fail as a server dying at start-up would
        self.clock: FakeClock | None = None  # a script saying "TAKES 2.5" moves it by that many seconds
        self._refs = itertools.count(1)
        self._lock = threading.Lock()

    def probe(self) -> Probe:
        return Probe(self.name, self.available, f"{self.name}: fake PostgreSQL {self.version}")

    def resolve(self, image: str | None, major: str | None = None) -> RuntimeIdentity:
        if major is not None and major != self.version.split(".")[0]:
            raise RuntimeUnavailable(f"PostgreSQL {major} is not installed here")
        return RuntimeIdentity(runtime=self.name, identity=f"fake-postgres-{self.version}",
                               version=f"PostgreSQL {self.version}", description=f"fake PostgreSQL {self.version}",
                               image=image, server_uid=self.server_ids[0], server_gid=self.server_ids[1])

    @property
    def server_ids(self) -> tuple[int, int]:
        """Who "runs" the servers: as PostgreSQL, never root (a root engine's: nobody)."""
        return (65534, 65534) if os.geteuid() == 0 else (os.geteuid(), os.getegid())

    def prepare_run_dir(self, identity: RuntimeIdentity, run_dir: Path) -> None:
        (run_dir / "scripts").mkdir(parents=True, exist_ok=True)
        for path in (run_dir, run_dir / "scripts"):
            os.chown(path, *self.server_ids)

    def initdb(self, identity: RuntimeIdentity, data_dir: Path, options: Sequence[str]) -> None:
        unknown = [option for option in options if option.startswith("-") and option.split("=")[0] not in INITDB_FLAGS]
        if unknown:
            raise RuntimeFailure("initdb failed", details={"log": f"initdb: unrecognized option '{unknown[0]}'"})
        os.chmod(data_dir, 0o700)
        (data_dir / "PG_VERSION").write_text(self.version.split(".")[0] + "\n")
        (data_dir / "applied.sql").write_text("")
        (data_dir / "global").mkdir()
        (data_dir / "global" / "pg_control").write_bytes(b"fake control file")  # what a checkpoint rewrites
        for path in (data_dir, *data_dir.rglob("*")):
            os.chown(path, *self.server_ids)

    def start(self, spec: InstanceSpec) -> str:
        with self._lock:
            if self.fail_start > 0:
                self.fail_start -= 1
                raise RuntimeFailure("PostgreSQL exited during start-up", details={"log": "FATAL: fake"})
            taken = [s for s in self.servers.values() if s.running and s.spec.data_dir == spec.data_dir]
            if taken:
                raise RuntimeFailure(f"fake server {taken[0].ref} already runs a server on {spec.data_dir}")
            ref = f"fake-{next(self._refs)}-{secrets.token_hex(3)}"  # unique among adapters sharing `servers`
            self.servers[ref] = FakeServer(spec, ref)
            self.started.append(spec.instance_id)
        # line 1 pid, 3 start time, 8 status: what ports.postmaster reads
        lines = [str(os.getpid()), str(spec.data_dir), str(int(time.time())), str(spec.port), str(spec.run_dir),
                 "127.0.0.1", "0 0", "ready"]
        (spec.data_dir / "postmaster.pid").write_text("\n".join(lines) + "\n")
        return ref

    def is_running(self, spec: InstanceSpec, ref: str) -> bool:
        server = self.servers.get(ref)
        return server is not None and server.running

    def stop(self, spec: InstanceSpec, ref: str, timeout: float = 60.0) -> None:
        server = self.servers.get(ref)
        if server is not None and server.running:
            server.running = False
            (server.spec.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def discard(self, spec: InstanceSpec, ref: str) -> None:
        server = self.servers.pop(ref, None)
        if server is not None and server.running:
            (server.spec.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def running(self) -> list[FakeServer]:
        return [server for server in self.servers.values() if server.running]

    def exec_tool(self, spec: InstanceSpec, ref: str, tool: Literal["psql", "pgbench"], args: Sequence[str],
                  on_output: OutputSink, cancel: threading.Event | None = None,
                  env: Mapping[str, str] | None = None) -> int:
        server = self.servers.get(ref)
        if server is None or not server.running:
            on_output("stderr", b"psql: error: connection refused\n")
            return 2
        script = ""
        for flag, value in itertools.pairwise(args):
            if flag == "-c":
                script = value
            elif flag == "-f":
                script = Path(value).read_text()
        if "FAIL" in script:
            on_output("stderr", b"psql:<stdin>:1: ERROR:  fake failure\n")
            return 3
        server.scripts.append(script)
        with open(spec.data_dir / "applied.sql", "a") as handle:
            handle.write(script + "\n")
        for seconds in re.findall(r"TAKES ([\d.]+)", script):
            if self.clock is not None:
                self.clock.advance(float(seconds))
        for size in re.findall(r"PAD (\d+)", script):  # a table of that many bytes
            (spec.data_dir / f"pad-{len(server.scripts)}-{size}").write_bytes(os.urandom(int(size)))
        return 0

    def tool_path(self, spec: InstanceSpec, host_path: Path) -> str:
        return str(host_path)


class FakeAdmin:
    """The ServerAdmin port: records statements; `connections[port]` clients are connected."""

    def __init__(self) -> None:
        self.statements: list[tuple[int, str]] = []
        self.passwords: dict[int, str] = {}
        self.connections: dict[int, int] = {}

    def execute(self, socket_dir: Path, port: int, statements: Sequence[str], timeout: float = 30.0,
                dbname: str = "postgres", user: str = "sqlrs") -> None:
        self.statements += [(port, statement) for statement in statements]

    def query(self, socket_dir: Path, port: int, sql: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        return []

    def set_password(self, socket_dir: Path, port: int, role: str, verifier: str) -> None:
        self.passwords[port] = verifier

    def client_connections(self, socket_dir: Path, port: int, timeout: float = 5.0,
                           database: str | None = None) -> int:
        return self.connections.get(port, 0)

    def client_sessions(self, socket_dir: Path, port: int, timeout: float = 5.0,
                        database: str | None = None) -> list[ClientSession]:
        return []


class FakeInspector:
    """The DatabaseInspector port over the fake runtime's "databases" (see the module docstring)."""

    def __init__(self, repo: FakeRepository, store_root: Path) -> None:
        self.repo = repo
        self.store_root = store_root
        self.reads: list[Database] = []

    def _lines(self, database: Database) -> list[str]:
        self.reads.append(database)
        for instance in self.repo.list_instances():
            if Path(instance.run_path) == database.socket_dir and instance.port == database.port \
                    and instance.dbname == database.dbname:
                applied = self.store_root / instance.data_path / "applied.sql"
                return applied.read_text().splitlines() if applied.exists() else []
        raise RuntimeFailure(f"no fake server on port {database.port}")

    def describe(self, database: Database) -> Schema:
        objects: dict[tuple[str, str], DbObject] = {}
        for line in self._lines(database):
            verb, _, rest = line.partition(" ")
            fields = rest.split("|")
            if verb == "OBJECT":
                kind, name, body, parent = [*fields, "", "", ""][:4]
                objects[(kind, name)] = DbObject(kind, name, body, parent=parent or None)
            elif verb == "DROP":
                objects.pop((fields[0], fields[1]), None)
        tables = {obj.name: tuple(sorted(o.name.rsplit(".", 1)[-1] for o in objects.values()
                                         if o.parent == obj.label and o.kind == "column"))
                  for obj in objects.values() if obj.kind == "table"}
        return Schema(tuple(objects.values()), tables)

    def contents(self, database: Database, tables: Mapping[str, Sequence[str]],
                 digests: bool = True) -> dict[str, TableContent]:
        found = {name: TableContent(0, "empty" if digests else None) for name in tables}
        for line in self._lines(database):
            verb, *fields = line.split()
            if verb == "ROWS" and fields[0] in tables:
                found[fields[0]] = TableContent(int(fields[1]), fields[2] if digests else None)
        return found

    def sequences(self, database: Database) -> dict[str, int | None]:
        values: dict[str, int | None] = {}
        for line in self._lines(database):
            verb, *fields = line.split()
            if verb == "SEQUENCE":
                values[fields[0]] = int(fields[1])
        return values


class NoBackup:
    def backup(self, socket_dir: Path, port: int, label: str, copy: Callable[[], None],
               timeout: float = 60.0) -> BackupResult:
        raise RuntimeFailure("the fake runtime cannot take online backups")


class NoLayers:
    def write_layer(self, state_dir: Path, parent_dir: Path | None, out: Path) -> tuple[str, int, int]:
        raise AssertionError("no registry in service tests")

    def apply_layer(self, blob: Path, target: Path, uid: int | None, gid: int | None) -> int:
        raise AssertionError("no registry in service tests")


def no_registry(ref: RemoteRef) -> StateRegistry:
    raise AssertionError("no registry in service tests")


@attrs.define
class Fakes:
    """The fakes behind one wired set of services, for tests to look at and steer."""

    repo: FakeRepository
    store: FakeSnapshotStore
    runtime: FakeRuntime
    admin: FakeAdmin
    clock: FakeClock
    owners_alive: set[tuple[int, int]]
    inspector: FakeInspector

    def adapters(self) -> Adapters:
        return Adapters(store=self.store, repo=self.repo, runtimes={self.runtime.name: lambda: self.runtime},
                        admin=self.admin, inspector=self.inspector, backup=NoBackup(), clock=self.clock,
                        open_registry=no_registry,
                        layers=NoLayers(), pid_alive=lambda pid: pid == os.getpid(),
                        owner_alive=lambda pid, started: (pid, started) in self.owners_alive,
                        kill_leftover_server=lambda path: None)


def make_fakes(root: Path, capacity: int = 4 << 30) -> Fakes:
    repo = FakeRepository()
    fakes = Fakes(repo=repo, store=FakeSnapshotStore(root / "store", capacity), runtime=FakeRuntime(),
                  admin=FakeAdmin(), clock=FakeClock(), owners_alive=set(),
                  inspector=FakeInspector(repo, root / "store"))
    fakes.runtime.clock = fakes.store.clock = fakes.clock
    return fakes


@contextlib.contextmanager
def wired(settings: Mapping[str, Any] | None = None) -> Iterator[tuple[Services, Fakes]]:
    """The engine's services wired by the composition root on fakes, in a short temporary state
    dir (PostgreSQL's socket path limit keeps run dirs below it), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="sqfake", dir="/tmp"))
    try:
        fakes = make_fakes(root)
        config = ConfigFile(root / "config.json", environ={})
        if settings:
            config.update(dict(settings))
        services = bootstrap(root, fakes.adapters(), config=config)
        try:
            yield services, fakes
        finally:
            services.pool.close()
            services.lifetime.stop()
            assert not Path(tempfile.gettempdir(), f"sqlrs-run-{root.name}").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def job_context(services: Services, kind: str = "prepare") -> JobContext:
    """A context for calling a job's handler directly, in the test's thread."""
    job = Job(id=secrets.token_hex(6), kind=kind, status=JobStatus.RUNNING, request={},
              created_at=services.clock.now())
    services.repo.add_job(job)
    return JobContext(services.jobs, job)


def command(sql: str) -> Step:
    return Step(kind="command", source="-c", sql=sql)


def prepare(services: Services, *sql: str, **request: Any) -> dict[str, Any]:
    """Run a prepare job of `-c` steps in the test's thread; the job's result."""
    ctx = job_context(services)
    request.setdefault("ttl_seconds", 0)
    return services.prepare.run(ctx, PrepareRequest(steps=tuple(command(text) for text in sql), **request))
