"""States shared through a real OCI registry (Debian's docker-registry, the CNCF distribution).

Each test starts its own registry on a free 127.0.0.1 port (plain HTTP, as docker speaks to
loopback registries) with its storage in a temporary directory, and drives the CLI of two or
more state directories: what one pushes, another pulls or prepares from.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _registry import Registry
from _require import require
from fixtures import native_available
from harness import DATASETS, Sqlrs, api, golden, ok, psql, short_tmp

SAKILA = DATASETS / "sakila"
SAKILA_FILES = ("-f", "1-postgres-sakila-schema.sql", "-f", "2-postgres-sakila-insert-data-using-copy.sql")
SMALL = ("-c", "CREATE TABLE t AS SELECT generate_series(1, 5000) AS i", "-c", "CREATE INDEX ON t (i)")
ENV_USER, ENV_PASSWORD = "SQLRS_REGISTRY_USERNAME", "SQLRS_REGISTRY_PASSWORD"


@pytest.fixture
def registry() -> Iterator[Registry]:
    root = short_tmp("reg")
    server = Registry(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def auth_registry() -> Iterator[Registry]:
    root = short_tmp("reg")
    server = Registry(root, auth=("ci", "s3cret-pw"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def state_dirs() -> Iterator[Callable[..., Sqlrs]]:
    """Fresh state directories on the native runtime; all closed and checked after the test."""
    available, reason = native_available()
    require("native", available, reason)
    made: list[Sqlrs] = []

    def make(env: dict[str, str] | None = None) -> Sqlrs:
        sq = Sqlrs(short_tmp(), runtime="native")
        sq.env.update(env or {})
        made.append(sq)
        return sq

    try:
        yield make
    finally:
        problems = []
        for sq in made:
            problems += sq.close()
            shutil.rmtree(sq.state_dir, ignore_errors=True)
        assert not problems, f"left behind: {problems}"


def assert_nothing_half_made(sq: Sqlrs) -> None:
    """Every state directory has its metadata row and vice versa; no temporary leftovers."""
    store = sq.state_dir / "store"
    rows = {s["id"] for s in sq.states()}
    assert rows == {p.name for p in (store / "states").iterdir()}
    assert list((store / "tmp").iterdir()) == []


def job_events(sq: Sqlrs, kind: str) -> list[dict[str, Any]]:
    jobs = [job for job in sq.json("ls", "--jobs") if job["kind"] == kind]
    newest = max(jobs, key=lambda job: job["created_at"])
    events: list[dict[str, Any]] = api(sq, f"/v1/prepare-jobs/{newest['id']}/events?follow=0")
    return events


def layer_digests(registry: Registry, repo: str, tag: str) -> list[str]:
    import urllib.request

    request = urllib.request.Request(f"http://{registry.host}/v2/{repo}/manifests/{tag}",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        manifest = json.loads(response.read())
    assert manifest["artifactType"] == "application/vnd.sqlrs.state.v1"
    assert manifest["config"]["mediaType"] == "application/vnd.sqlrs.state.config.v1+json"
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.sqlrs.state.diff.v1.tar+zstd"}
    return [layer["digest"] for layer in manifest["layers"]]


# -- the must-show ---------------------------------------------------------------------------
def test_sakila_pushed_from_a_is_pulled_not_built_in_b(registry: Registry, state_dirs: Callable[..., Sqlrs]) -> None:
    remote = f"{registry.host}/team/states"
    a = state_dirs()
    started = time.monotonic()
    dsn_a = a.prepare(*SAKILA_FILES, cwd=SAKILA)
    cold = time.monotonic() - started
    ok(a.run("config", "set", "cache.remote", remote))
    started = time.monotonic()
    result = json.loads(ok(a.run("push", a.instances()[0]["id"], "-o", "json")))
    push_seconds = time.monotonic() - started
    assert len(result["uploaded"]) == 3 and result["reused"] == []  # base, schema, data
    plan_a = a.plan(*SAKILA_FILES, cwd=SAKILA)
    assert result["state_id"] == plan_a[-1]["state_id"]
    assert layer_digests(registry, "team/states", plan_a[-1]["state_id"]) == result["uploaded"]
    assert golden(dsn_a, "sakila") == ""

    b = state_dirs()
    ok(b.run("config", "set", "cache.remote", remote))
    plan_b = b.plan(*SAKILA_FILES, cwd=SAKILA)
    assert [(p["state_id"], p["cached"], p["remote"]) for p in plan_b] == \
        [(p["state_id"], False, True) for p in plan_a]
    started = time.monotonic()
    dsn_b = b.prepare(*SAKILA_FILES, cwd=SAKILA)
    pulled = time.monotonic() - started
    size = sum(registry.blob_file(digest).stat().st_size for digest in result["uploaded"])
    print(f"\nSakila: cold build {cold:.1f}s in state dir A; push {push_seconds:.1f}s ({size} bytes in 3 layers); "
          f"prepare pulling instead of building {pulled:.1f}s in state dir B")
    events = job_events(b, "prepare")
    assert [e["data"]["state_id"] for e in events if e["type"] == "pull"] == [p["state_id"] for p in plan_a]
    transfers = [e["data"] for e in events if e["type"] == "transfer"]
    assert transfers and all(t["bytes"] <= t["total"] for t in transfers)
    assert any(t["bytes"] == t["total"] for t in transfers)
    steps = [e["data"] for e in events if e["type"] == "task" and e["data"]["kind"] != "instance"]
    assert {s["status"] for s in steps} == {"cached"}  # nothing ran, nothing was built
    assert golden(dsn_b, "sakila") == ""
    assert {s["id"] for s in b.states()} == {p["state_id"] for p in plan_a}
    assert all(p["cached"] and p["remote"] is False for p in b.plan(*SAKILA_FILES, cwd=SAKILA))
    assert_nothing_half_made(b)

    # a second chain sharing the prefix uploads only its own layer
    sessions = registry.upload_sessions()
    extra = (*SAKILA_FILES, "-c", "CREATE TABLE audit AS SELECT rental_id FROM rental WHERE rental_id < 100")
    dsn_extra = a.prepare(*extra, cwd=SAKILA)
    assert psql(dsn_extra, "SELECT count(*) FROM audit") == "99"
    extra_id = a.plan(*extra, cwd=SAKILA)[-1]["state_id"]
    second = json.loads(ok(a.run("push", extra_id, "-o", "json")))
    assert second["reused"] == result["uploaded"] and len(second["uploaded"]) == 1
    assert registry.upload_sessions() - sessions == 2  # its layer and its manifest's config
    assert layer_digests(registry, "team/states", extra_id) == [*result["uploaded"], *second["uploaded"]]
    # B takes just that layer on top of what it has
    state_id = ok(b.run("pull", extra_id)).strip().splitlines()[-1]
    assert state_id == extra_id
    assert json.loads(ok(b.run("pull", extra_id, "-o", "json")))["pulled"] == []  # nothing twice
    assert_nothing_half_made(b)


# -- integrity ---------------------------------------------------------------------------------------
def push_small(a: Sqlrs, registry: Registry, tag: str) -> dict[str, Any]:
    a.prepare(*SMALL)
    state = a.plan(*SMALL)[-1]["state_id"]
    result: dict[str, Any] = json.loads(ok(a.run("push", state, f"{registry.host}/team/small:{tag}", "-o", "json")))
    return result


@pytest.fixture(scope="module")
def small_remote() -> Iterator[tuple[Registry, dict[str, Any]]]:
    """A registry holding the SMALL chain at team/small:v1, pushed once for the module's pulls."""
    available, reason = native_available()
    require("native", available, reason)
    root = short_tmp("reg")
    server = Registry(root)
    a = Sqlrs(short_tmp(), runtime="native")
    try:
        server.start()
        yield server, push_small(a, server, "v1")
    finally:
        problems = a.close()
        shutil.rmtree(a.state_dir, ignore_errors=True)
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not problems, f"left behind: {problems}"


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_or_truncated_blob_is_refused_and_leaves_nothing(
        registry: Registry, state_dirs: Callable[..., Sqlrs], damage: str) -> None:
    a = state_dirs()
    pushed = push_small(a, registry, "v1")
    blob = registry.blob_file(pushed["uploaded"][-1])  # the last state's layer
    data = bytearray(blob.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 2:]
    blob.write_bytes(bytes(data))

    b = state_dirs()
    result = b.run("pull", f"{registry.host}/team/small:v1")
    assert result.returncode == 1, result.stderr
    assert "sqlrs: error: blob sha256:" in result.stderr
    assert ("corrupt" if damage == "flip" else "truncated") in result.stderr
    assert "Traceback" not in result.stderr
    ids = {s["id"] for s in b.states()}
    assert pushed["state_id"] not in ids  # the base and the first step are whole and kept
    assert len(ids) == 2
    assert_nothing_half_made(b)


@pytest.mark.parametrize("point", ["pull:transferring", "pull:downloaded", "pull:applied"])
def test_engine_killed_during_a_pull_leaves_nothing_half_written(
        small_remote: tuple[Registry, dict[str, Any]], state_dirs: Callable[..., Sqlrs], point: str) -> None:
    registry, pushed = small_remote
    b = state_dirs()
    # the CLI spawns an engine with the crash point: it SIGKILLs itself there, mid-pull
    crashed = b.run("pull", f"{registry.host}/team/small:v1", env={"SQLRS_CRASH_AT": point})
    # the engine died under the CLI: the CLI either cannot reach one (3), or finds the engine it
    # starts again, which reports the job it lost as failed (1)
    assert crashed.returncode in (1, 3), crashed.stderr
    assert crashed.returncode == 3 or "the engine stopped while this job ran" in crashed.stderr, crashed.stderr
    # an engine that CLI started again inherited SQLRS_CRASH_AT: the rest of the test needs a plain one
    b.run("engine", "stop")
    assert b.states() == []  # the restarted engine shows nothing of the base it was pulling
    assert_nothing_half_made(b)
    assert ok(b.run("pull", f"{registry.host}/team/small:v1")).strip() == pushed["state_id"]
    dsn = b.prepare(*SMALL)
    assert psql(dsn, "SELECT count(*) FROM t") == "5000"
    assert_nothing_half_made(b)


def test_compatibility_is_identity(small_remote: tuple[Registry, dict[str, Any]],
                                   state_dirs: Callable[..., Sqlrs]) -> None:
    from _containers import container_runtime_available

    registry, _ = small_remote
    available, reason = container_runtime_available("docker")
    require("docker", available, reason)
    b = state_dirs()
    # the test image is PostgreSQL 16; the native states here are built by Debian's PostgreSQL 15
    result = b.run("pull", "--runtime", "docker", "--image", "localhost/sqlrs-test-postgres:16",
                   f"{registry.host}/team/small:v1")
    assert result.returncode == 1, result.stderr
    assert "cannot be pulled here" in result.stderr and "PostgreSQL 15" in result.stderr
    assert "PostgreSQL 16" in result.stderr
    assert b.states() == []
    missing = b.run("pull", f"{registry.host}/team/small:nope")
    assert missing.returncode == 4 and "is not in the registry" in missing.stderr


# -- credentials ---------------------------------------------------------------------------------------
def test_basic_auth_from_environment_and_docker_config(auth_registry: Registry,
                                                       state_dirs: Callable[..., Sqlrs]) -> None:
    ref = f"{auth_registry.host}/team/small:v1"
    a = state_dirs({ENV_USER: "ci", ENV_PASSWORD: "s3cret-pw"})
    a.prepare(*SMALL)
    state = a.plan(*SMALL)[-1]["state_id"]
    assert json.loads(ok(a.run("push", state, ref, "-o", "json")))["state_id"] == state

    wrong = state_dirs({ENV_USER: "ci", ENV_PASSWORD: "wrong"})
    result = wrong.run("pull", ref)
    assert result.returncode == 1
    assert "refused the credentials of user 'ci'" in result.stderr and "hint:" in result.stderr
    none = state_dirs()
    result = none.run("pull", ref)
    assert result.returncode == 1 and "needs credentials" in result.stderr

    docker_config = short_tmp("dc")
    try:
        auth = base64.b64encode(b"ci:s3cret-pw").decode()
        (docker_config / "config.json").write_text(json.dumps({"auths": {auth_registry.host: {"auth": auth}}}))
        c = state_dirs({"DOCKER_CONFIG": str(docker_config)})
        assert ok(c.run("pull", ref)).strip() == state
    finally:
        shutil.rmtree(docker_config, ignore_errors=True)


def test_a_chain_with_unkept_steps_is_pushed_and_pulled_whole(registry: Registry,
                                                             state_dirs: Callable[..., Sqlrs]) -> None:
    """Only kept states travel as layers; the unkept steps between them travel as the layer's
    span, so the ids add up in B, B builds nothing, and B knows the unkept states (branch points)."""
    inserts = [arg for k in range(2, 7) for arg in ("-c", f"INSERT INTO t VALUES ({k})")]
    chain = ("-c", "CREATE TABLE t (i int)", *inserts)
    a = state_dirs()
    a.prepare(*chain)
    plan_a = a.plan(*chain)
    kept = [row["state_id"] for row in plan_a if row["checkpoint"]]
    assert len(kept) < len(plan_a) and kept[-2:] == [row["state_id"] for row in plan_a[-2:]]
    result = json.loads(ok(a.run("push", plan_a[-1]["state_id"], f"{registry.host}/team/unkept", "-o", "json")))
    assert result["layers"] == len(kept)
    b = state_dirs()
    ok(b.run("config", "set", "cache.remote", f"{registry.host}/team/unkept"))
    ok(b.run("pull", f"{registry.host}/team/unkept:{plan_a[-1]['state_id']}"))
    assert {s["id"] for s in b.states()} == set(kept)
    dsn = b.prepare(*chain)
    assert psql(dsn, "SELECT string_agg(i::text, ',' ORDER BY i) FROM t") == "2,3,4,5,6"
    steps = [e["data"] for e in job_events(b, "prepare") if e["type"] == "task" and e["data"]["kind"] != "instance"]
    assert [s for s in steps if s["status"] != "cached"] == []  # nothing ran
    # an edit of the fourth step: B knows the third was passed, and keeps it as the branch point
    edited = (*chain[:6], "-c", "INSERT INTO t VALUES (40)", *chain[8:])
    plan_b = b.plan(*edited)
    assert plan_b[3]["keep"] == "branch point" and not plan_b[3]["cached"]
    dsn = b.prepare(*edited)
    assert psql(dsn, "SELECT string_agg(i::text, ',' ORDER BY i) FROM t") == "2,3,5,6,40"
    assert_nothing_half_made(b)


def test_prepare_pushes_what_it_builds_with_remote_push(registry: Registry,
                                                        state_dirs: Callable[..., Sqlrs]) -> None:
    ci = state_dirs()
    ok(ci.run("config", "set", "cache.remote", f"{registry.host}/team/ci"))
    ok(ci.run("config", "set", "cache.remote_push", "true"))
    assert json.loads(ok(ci.run("status", "-o", "json")))["remote"] == {
        "repository": f"{registry.host}/team/ci", "push": True, "insecure": False}
    assert f"remote:    {registry.host}/team/ci (prepare pulls cached states; pushes every state it builds)" in ok(
        ci.run("status"))
    ci.prepare(*SMALL)
    plan = ci.plan(*SMALL)
    events = job_events(ci, "prepare")
    # one push at the end of the build: the last state with its chain of kept states
    assert [e["data"]["state_id"] for e in events if e["type"] == "push"] == [plan[-1]["state_id"]]
    dev = state_dirs()
    ok(dev.run("config", "set", "cache.remote", f"{registry.host}/team/ci"))
    assert [p["remote"] for p in dev.plan(*SMALL)] == [True, True, True]
    dsn = dev.prepare(*SMALL)
    assert psql(dsn, "SELECT count(*) FROM t") == "5000"
    steps = [e["data"] for e in job_events(dev, "prepare") if e["type"] == "task" and e["data"]["kind"] != "instance"]
    assert steps and {s["status"] for s in steps} == {"cached"}  # pulled, none built


def test_usage_errors(state_dirs: Callable[..., Sqlrs]) -> None:
    sq = state_dirs()
    sq.prepare("-c", "SELECT 1")
    assert json.loads(ok(sq.run("status", "-o", "json")))["remote"] is None
    result = sq.run("push", sq.instances()[0]["id"])
    assert result.returncode == 2 and "no registry to push to" in result.stderr and "hint:" in result.stderr
    result = sq.run("pull", "nohost")
    assert result.returncode == 2 and "no registry host" in result.stderr
    result = sq.run("push", "ffffffffff", "127.0.0.1:1/x/y")
    assert result.returncode == 4
    result = sq.run("push", "no-such-name", "127.0.0.1:1/x/y")
    assert result.returncode == 4 and "no state, instance or name matches" in result.stderr
    unreachable = sq.run("pull", "127.0.0.1:1/team/small:v1")
    assert unreachable.returncode == 1 and "cannot reach registry 127.0.0.1:1" in unreachable.stderr
    # a remote cache that does not answer is a warning: prepare builds as it would without one
    ok(sq.run("config", "set", "cache.remote", "127.0.0.1:1/team/x"))
    plan = sq.run("plan:psql", "--runtime", "native", "-o", "json", "--", "-c", "SELECT 1", "-c", "SELECT 2")
    assert [(p["cached"], p["remote"]) for p in json.loads(ok(plan))] == [(True, False), (True, False),
                                                                            (False, False)]
    assert "WARNING: remote cache 127.0.0.1:1/team/x not used: cannot reach registry" in plan.stderr
    assert sq.prepare("-c", "SELECT 1", "-c", "SELECT 2").startswith("postgresql://")


# -- interrupted transfers resume ----------------------------------------------------------------------
class CuttingProxy:
    """A loopback TCP proxy to the registry that cuts one connection once `budget` bytes went
    through it in the given direction; counts the requests that asked for a byte range."""

    def __init__(self, target_port: int, direction: str, budget: int):
        import socket
        import threading

        self.target_port = target_port
        self.direction = direction  # "up" (client -> registry) or "down"
        self.budget = budget
        self.cut = 0
        self.ranged = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        import socket
        import threading

        while not self.stopping:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            state = {"open": True}
            for source, sink, way in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(target=self._pump, args=(source, sink, way, client, upstream, state),
                                 daemon=True).start()

    def _pump(self, source: Any, sink: Any, way: str, client: Any, upstream: Any, state: dict[str, bool]) -> None:
        import socket

        try:
            while state["open"]:
                data = source.recv(65536)
                if not data:
                    break
                if way == "up" and b"Range: bytes=" in data:
                    self.ranged += 1
                with self.lock:
                    cut_now = self.cut == 0 and way == self.direction and self.budget <= len(data)
                    if self.cut == 0 and way == self.direction:
                        self.budget -= len(data)
                    if cut_now:
                        self.cut = 1
                if cut_now:
                    break
                sink.sendall(data)
        except OSError:
            pass
        state["open"] = False
        for sock in (client, upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.stopping = True
        self.listener.close()


@pytest.mark.parametrize("direction", ["up", "down"])
def test_an_interrupted_transfer_resumes(registry: Registry, direction: str, tmp_path: Path) -> None:
    import hashlib
    import os

    from sqlrs.adapters.oci.registry import CHUNK, OrasRegistry
    from sqlrs.domain.remote import parse_ref

    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(20 * 1024 * 1024))
    digest = "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
    size = blob.stat().st_size
    direct = OrasRegistry(parse_ref(f"{registry.host}/team/resume"), sleep=lambda seconds: None)
    proxy = CuttingProxy(registry.port, direction, 12 * 1024 * 1024)
    try:
        through = OrasRegistry(parse_ref(f"127.0.0.1:{proxy.port}/team/resume"), sleep=lambda seconds: None)
        if direction == "up":
            seen: list[int] = []
            assert through.push_blob(blob, digest, size, lambda done, total: seen.append(done))
            assert proxy.cut == 1 and seen[-1] == size
            # distribution 2.8 forgets an upload session whose PATCH broke mid-body (its stored
            # offset no longer matches the session's state), so the upload starts again at 0
            assert [b for a, b in itertools.pairwise(seen) if b <= a] == [CHUNK]
            direct.fetch_blob(digest, size, tmp_path / "copy", lambda done, total: None)  # verified
            assert (tmp_path / "copy").read_bytes() == blob.read_bytes()
        else:
            assert direct.push_blob(blob, digest, size, lambda done, total: None)
            through.fetch_blob(digest, size, tmp_path / "copy", lambda done, total: None)
            assert proxy.cut == 1 and proxy.ranged >= 1  # picked up with Range: bytes=N-
            assert (tmp_path / "copy").read_bytes() == blob.read_bytes()
    finally:
        proxy.close()
