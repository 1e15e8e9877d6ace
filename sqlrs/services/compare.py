"""`sqlrs compare A B`: the schema and data differences between two states or instances.

Each side is read where it runs: an instance as it is now, a state through an instance of it made
for the comparison (a warm one when the engine has one ready, else a clone started now) and
removed afterwards. Both sides are read at the same time: their schemas first (to know which
columns both have), then their tables' row counts and digests, computed by each server
(sqlrs.ports.inspector); nothing but those numbers leaves the servers.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlrs.domain import compare as domain
from sqlrs.domain.compare import DataMode, Schema, TableContent
from sqlrs.domain.errors import Ambiguous, NotFound
from sqlrs.domain.model import Instance, State
from sqlrs.ports.inspector import Database, DatabaseInspector
from sqlrs.services.instances.kinds import Instances
from sqlrs.services.inventory import Inventory
from sqlrs.services.requests import ID_RE

log = logging.getLogger("sqlrs.compare")

# the idle TTL of an instance made to read a state: the comparison removes it, and if the engine
# dies first the next one removes it once this has passed
READER_TTL_SECONDS = 60
T = TypeVar("T")
R = TypeVar("R")


class CompareService:
    def __init__(self, inventory: Inventory, instances: Instances, inspector: DatabaseInspector):
        self.inventory = inventory
        self.catalog = inventory.catalog
        self.instances = instances
        self.inspector = inspector

    # -- the sides ---------------------------------------------------------------------------------
    def find(self, ref: str) -> Instance | State:
        """An instance (id, name or unique prefix) or a state (id or unique prefix)."""
        instance: Instance | None = None
        try:
            instance, by_name = self.inventory.find_instance(ref)
            if by_name or instance.id == ref:
                return instance
            if instance.pooled:  # a warm instance is the engine's: a prefix does not mean it
                instance = None
        except NotFound:
            pass
        state: State | None = None
        unkept: NotFound | None = None
        if ID_RE.match(ref):
            try:
                state = self.inventory.find_state(ref)
            except NotFound as exc:
                unkept = exc if exc.details.get("kept_id") else None
        if instance is not None and state is not None:
            raise Ambiguous(f"{ref!r} matches instance {instance.id} and state {state.id[:12]}",
                            details={"candidates": [instance.id, state.id]}, hint="give more characters of the id")
        found = instance or state
        if found is None and unkept is not None:
            raise unkept
        if found is None:
            raise NotFound(f"no state, instance or name matches {ref!r}",
                           hint="list them with: sqlrs ls --states, sqlrs ls --instances")
        return found

    @contextlib.contextmanager
    def _opened(self, side: Instance | State, image: str | None) -> Iterator[Database]:
        """The database to read for one side; an instance made for a state is removed afterwards."""
        if isinstance(side, Instance):
            running = self.instances.ensure_running(side)
            yield Database(Path(running.run_path), running.port, running.dbname)
            return
        if not self.catalog.is_kept(side.id):
            raise NotFound(f"state {side.id[:12]} is not cached (its data is gone)", hint="prepare it again")
        runtime, identity = self.instances.resolve(side, image or self.catalog.image_of(side))
        # a comparison reads a state once: no warm instances of it for later (check:alembic would
        # otherwise keep servers of every revision it walked started for the idle time)
        made = self.instances.create(side, runtime, identity, ephemeral=True, ttl_seconds=READER_TTL_SECONDS,
                                     spares=False)
        try:
            yield Database(Path(made.run_path), made.port, made.dbname)
        finally:
            try:
                self.instances.remove(made)
            except Exception as exc:  # its TTL removes it
                log.warning("cannot remove instance %s made to read state %s: %s", made.id, side.id[:12], exc)

    # -- the comparison ----------------------------------------------------------------------------
    def compare(self, a: str, b: str, data: DataMode = DataMode.CONTENT, ignore: Sequence[str] = (),
                image: str | None = None) -> dict[str, Any]:
        """The differences from A to B (`added`: what B has that A has not), as JSON. `ignore`:
        relations (qualified, or bare names in any schema) left out with all that belongs to them."""
        started = time.monotonic()
        marks: list[tuple[str, float]] = []
        sides = (self.find(a), self.find(b))
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="sqlrs-compare") as pool, \
                contextlib.ExitStack() as stack:

            def both(work: Callable[[T], R], items: tuple[T, T]) -> tuple[R, R]:
                left, right = pool.submit(work, items[0]), pool.submit(work, items[1])
                return left.result(), right.result()

            databases = self._open_both(pool, stack, sides, image)
            marks.append(("open", time.monotonic()))
            described = both(self.inspector.describe, databases)
            marks.append(("describe", time.monotonic()))
            schemas = (described[0].without(ignore), described[1].without(ignore))
            contents: tuple[dict[str, TableContent], dict[str, TableContent]] = ({}, {})
            sequences: tuple[dict[str, int | None], dict[str, int | None]] = ({}, {})
            if data != DataMode.NONE:
                columns = domain.common_columns(*schemas)
                digests = data == DataMode.CONTENT
                contents = both(lambda side: self.inspector.contents(
                    side[0], {name: columns[name] for name in side[1].tables}, digests),
                    ((databases[0], schemas[0]), (databases[1], schemas[1])))
            if data == DataMode.CONTENT:
                values = both(self.inspector.sequences, databases)
                sequences = (_kept(values[0], schemas[0]), _kept(values[1], schemas[1]))
            marks.append(("data", time.monotonic()))
        marks.append(("close", time.monotonic()))
        comparison = domain.compare(schemas[0], schemas[1], contents[0], contents[1], sequences[0], sequences[1],
                                    data)
        previous = started
        timings = {}
        for phase, when in marks:
            timings[phase], previous = round(when - previous, 3), when
        log.info("compare %s %s: %s", a, b, " ".join(f"{phase} {seconds}s" for phase, seconds in timings.items()))
        return {**comparison.to_json(), "a": self._side(a, sides[0]), "b": self._side(b, sides[1]),
                "seconds": round(time.monotonic() - started, 3), "timings": timings}

    def _open_both(self, pool: ThreadPoolExecutor, stack: contextlib.ExitStack, sides: tuple[Instance | State, ...],
                   image: str | None) -> tuple[Database, Database]:
        """Both sides' databases, opened at the same time; whatever was opened is left with `stack`."""
        contexts = [self._opened(side, image) for side in sides]
        futures = [pool.submit(context.__enter__) for context in contexts]
        opened: list[Database] = []
        failure: BaseException | None = None
        for context, future in zip(contexts, futures, strict=True):
            try:
                opened.append(future.result())
            except BaseException as exc:
                failure = failure or exc
                continue
            stack.push(context.__exit__)
        if failure is not None:
            raise failure
        return opened[0], opened[1]

    @staticmethod
    def _side(ref: str, side: Instance | State) -> dict[str, Any]:
        if isinstance(side, Instance):
            return {"ref": ref, "kind": "instance", "id": side.id, "state_id": side.state_id, "name": side.name}
        return {"ref": ref, "kind": "state", "id": side.id, "state_id": side.id, "source": side.source}


def _kept(values: dict[str, int | None], schema: Schema) -> dict[str, int | None]:
    """The positions of the sequences the (filtered) schema still holds."""
    names = {obj.name for obj in schema.objects if obj.kind == "sequence"}
    return {name: value for name, value in values.items() if name in names}
