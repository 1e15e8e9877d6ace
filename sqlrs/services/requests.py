"""Requests the engine accepts, structured and validated from JSON with cattrs."""

from __future__ import annotations

import re
from typing import Any

import attrs
import cattrs

from sqlrs.domain.errors import Ambiguous, NotFound, UsageError
from sqlrs.domain.roles import check_superuser
from sqlrs.domain.steps import PsqlOptions, Step

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
ID_RE = re.compile(r"^[0-9a-f]{1,64}$")
MAX_STEPS = 1000


def check_name(name: str) -> str:
    if not NAME_RE.match(name) or ".." in name:
        raise UsageError(
            f"invalid name {name!r}", hint="names: letters, digits, '.', '_', '-'; up to 63 characters"
        )
    return name


def check_id(value: str, what: str = "id") -> str:
    if not ID_RE.match(value):
        raise UsageError(f"invalid {what} {value!r}", hint="ids are lowercase hex, or a name")
    return value


def one_match(matches: list[Any], what: str, ref: str) -> Any:
    """The one state, instance or job (`what`) a reference's id prefix matched; NotFound or
    Ambiguous (with the candidates) otherwise."""
    if not matches:
        raise NotFound(f"no {what} matches {ref!r}", hint=f"list them with: sqlrs ls --{what}s")
    if len(matches) > 1:
        raise Ambiguous(
            f"{ref!r} matches {len(matches)} {what}s", details={"candidates": sorted(m.id for m in matches)},
            hint="give more characters of the id",
        )
    return matches[0]


@attrs.frozen
class PrepareRequest:
    steps: tuple[Step, ...]
    options: PsqlOptions = attrs.field(factory=PsqlOptions)
    runtime: str | None = None  # "auto" or a runtime's name: the route checks it against the engine's runtimes
    image: str | None = None
    name: str | None = None
    plan_only: bool = False
    ephemeral: bool = False
    # what to do when `name` is already bound: "error", "reuse" (keep the instance if its state
    # matches, else replace it) or "fresh" (always replace it)
    on_name: str = "error"
    # idle TTL of the new instance in seconds (0: none; None: config instance.ttl_seconds)
    ttl_seconds: int | None = None
    # build (or find) the chain's states and start no instance; the result carries the state id
    build_only: bool = False
    # "server": a server of its own; "database": a database in the state's shared server
    instance_kind: str = "server"
    # False: a one-off instance (check:*, bisect:*): no warm instance or copy ahead of its state follows
    spares: bool = True
    # start the chain from this existing state (id or unique prefix; e.g. a snapshot) instead of
    # the base: state_k = H(from_state, step_k); no steps: an instance of that state
    from_state: str | None = None
    # the PostgreSQL major to run ("16"): native binaries of that major, the image postgres:N;
    # None: the runtime's default (config runtime.native.pg_bin, dbms.image)
    postgres_version: str | None = None
    # the cluster's bootstrap superuser: postgres (None) or sqlrs (sqlrs.domain.roles)
    superuser: str | None = None
    # with plan_only: say for every step why it is cached or not (services/states/explain.py)
    explain: bool = False


@attrs.frozen
class RunRequest:
    instance: str
    tool: str
    args: tuple[str, ...] = ()
    files: tuple[Step, ...] = ()  # scripts referenced from args as "@sqlrs-file:N"


_converter = cattrs.Converter(forbid_extra_keys=True)


def _strict(kind: type[Any]) -> Any:
    def structure(value: Any, _: Any) -> Any:
        # cattrs would coerce (str(5), bool("no")); a request with wrong types is a client error
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return structure


for _kind in (str, int, bool):
    _converter.register_structure_hook(_kind, _strict(_kind))


def _structure(data: Any, cls: type[Any]) -> Any:
    if not isinstance(data, dict):
        raise UsageError("the request body must be a JSON object")
    try:
        return _converter.structure(data, cls)
    except cattrs.BaseValidationError as exc:
        messages = cattrs.transform_error(exc)
        raise UsageError("invalid request: " + "; ".join(messages[:5])) from None
    except (TypeError, ValueError) as exc:
        raise UsageError(f"invalid request: {exc}") from None


def parse_prepare(data: Any) -> PrepareRequest:
    request: PrepareRequest = _structure(data, PrepareRequest)
    request = attrs.evolve(request, steps=tuple(step.with_printable_labels() for step in request.steps))
    if not request.steps and not request.plan_only and request.from_state is None:
        raise UsageError("nothing to prepare", hint="give at least one -f FILE or -c SQL")
    if request.from_state is not None:
        check_id(request.from_state, "state id")
    if len(request.steps) > MAX_STEPS:
        raise UsageError(f"too many steps ({len(request.steps)} > {MAX_STEPS})")
    for step in request.steps:
        step.validate()
    for variable, _ in request.options.variables:
        if not variable or "=" in variable:
            raise UsageError(f"invalid psql variable name {variable!r}")
    if request.name is not None:
        check_name(request.name)
    if request.on_name not in ("error", "reuse", "fresh"):
        raise UsageError(f"on_name must be error, reuse or fresh, not {request.on_name!r}")
    if request.ttl_seconds is not None and request.ttl_seconds < 0:
        raise UsageError("ttl_seconds must not be negative")
    if request.build_only and request.name is not None:
        raise UsageError("build_only starts no instance: it takes no name")
    check_instance_kind(request.instance_kind)
    check_postgres_version(request.postgres_version)
    check_superuser(request.superuser)
    if request.explain and not request.plan_only:
        raise UsageError("explain goes with plan_only: it builds nothing")
    return request


def check_postgres_version(version: str | None) -> str | None:
    if version is not None and (not version.isdigit() or not 9 < int(version) < 100):
        raise UsageError(f"postgres_version {version!r} is not a PostgreSQL major version", hint="e.g. 16")
    return version


def check_instance_kind(kind: str) -> str:
    if kind not in ("server", "database"):
        raise UsageError(f"unknown instance kind {kind!r}", hint="server or database")
    return kind


def parse_run(data: Any) -> RunRequest:
    request: RunRequest = _structure(data, RunRequest)
    request = attrs.evolve(request, files=tuple(step.with_printable_labels() for step in request.files))
    if request.tool not in ("psql", "pgbench"):
        raise UsageError(f"unknown tool {request.tool!r}", hint="psql or pgbench")
    for step in request.files:
        step.validate()
    return request


@attrs.frozen
class Owner:
    """The client process a resource belongs to: its pid and its start time (field 22 of
    /proc/PID/stat). The engine removes what an owner held once that process is gone."""

    pid: int
    started: int


@attrs.frozen
class InstanceRequest:
    """POST /v1/instances: an instance of a cached state, from its warm pool when `pool`."""

    state_id: str
    image: str | None = None
    pool: bool = False
    ttl_seconds: int | None = None  # None: config instance.ttl_seconds
    name: str | None = None
    # "server": a server of its own; "database": a database in the state's shared server
    kind: str = "server"
    owner: Owner | None = None  # the instance is removed when this process is gone
    spares: bool = True  # False: a one-off instance; no warm instance or copy ahead of its state follows


@attrs.frozen
class PoolRequest:
    """PUT /v1/pools/{state_id}: keep `size` started spares of the state ready."""

    size: int
    image: str | None = None
    holder: str | None = None  # who uses the pool; it is drained when its last holder leaves
    wait_ready: float = 0.0  # seconds to wait until `size` spares are ready before answering
    owner: Owner | None = None  # the holder leaves the pool when this process is gone


def _check_owner(owner: Owner | None) -> None:
    if owner is not None and (owner.pid <= 0 or owner.started < 0):
        raise UsageError("owner takes a positive pid and its start time (/proc/PID/stat field 22)")


def parse_instance(data: Any) -> InstanceRequest:
    request: InstanceRequest = _structure(data, InstanceRequest)
    check_id(request.state_id, "state id")
    if request.ttl_seconds is not None and request.ttl_seconds < 0:
        raise UsageError("ttl_seconds must not be negative")
    if request.name is not None:
        check_name(request.name)
    check_instance_kind(request.kind)
    if request.kind == "database" and request.pool:
        raise UsageError("warm pools hold server instances", hint="database instances are copied ahead anyway")
    _check_owner(request.owner)
    return request


def parse_pool(data: Any) -> PoolRequest:
    request: PoolRequest = _structure(data, PoolRequest)
    if request.size < 0:
        raise UsageError("size must not be negative")
    if not 0 <= request.wait_ready <= 600:
        raise UsageError("wait_ready takes 0 to 600 seconds")
    if request.holder is not None and not 0 < len(request.holder) <= 200:
        raise UsageError("holder takes 1 to 200 characters")
    if request.owner is not None and request.holder is None:
        raise UsageError("an owner needs a holder (the owner's hold on the pool)")
    _check_owner(request.owner)
    return request


@attrs.frozen
class SessionRequest:
    """PUT /v1/sessions/{session}: a run of claims on a state begins (a test session)."""

    state_id: str
    owner: Owner | None = None  # the session ends when this process is gone


def parse_session(data: Any) -> SessionRequest:
    request: SessionRequest = _structure(data, SessionRequest)
    if not request.state_id:
        raise UsageError("state_id is required")
    _check_owner(request.owner)
    return request


@attrs.frozen
class SnapshotRequest:
    """POST /v1/snapshots: save a running instance's data as a new state."""

    instance: str  # id, unique id prefix or name
    name: str | None = None  # kept in the state's source: "snapshot of ID (NAME)"


def parse_snapshot(data: Any) -> SnapshotRequest:
    request: SnapshotRequest = _structure(data, SnapshotRequest)
    if not request.instance:
        raise UsageError("instance is required")
    if request.name is not None:
        check_name(request.name)
    return request


@attrs.frozen
class CompareRequest:
    """POST /v1/compare: the differences from A to B (states, instances or names)."""

    a: str
    b: str
    data: str = "content"  # content (row counts and digests, sequence positions), rows, or none
    ignore: tuple[str, ...] = ()  # relations left out, e.g. a migration tool's own version table
    image: str | None = None  # the image states of a container runtime were built with, when not the default


def parse_compare(data: Any) -> CompareRequest:
    request: CompareRequest = _structure(data, CompareRequest)
    if not request.a or not request.b:
        raise UsageError("compare takes two non-empty references, a and b")
    if request.data not in ("content", "rows", "none"):
        raise UsageError(f"data must be content, rows or none, not {request.data!r}")
    return request


def parse_transfer(body: Any, required: str) -> dict[str, Any]:
    """A push or pull request body: `required` (a string) and optional runtime, image, target."""
    if not isinstance(body, dict):
        raise UsageError("the request body must be a JSON object")
    allowed = {required, "target", "runtime", "image"}
    extra = set(body) - allowed
    if extra:
        raise UsageError(f"unknown fields: {', '.join(sorted(extra))}", hint=f"fields: {', '.join(sorted(allowed))}")
    if not isinstance(body.get(required), str) or not body[required]:
        raise UsageError(f"{required} is required (a string)")
    for key in ("target", "runtime", "image"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise UsageError(f"{key} must be a string")
    return body
