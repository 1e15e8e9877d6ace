"""`run:psql` / `run:pgbench`: a client tool against an instance, output streamed back."""

from __future__ import annotations

import secrets
import shutil
import threading
from collections.abc import Callable

from sqlrs.domain.errors import SqlrsError, UsageError
from sqlrs.ports.runtime import OutputSink
from sqlrs.services.instances.kinds import Instances
from sqlrs.services.instances.scripts import materialize
from sqlrs.services.inventory import Inventory
from sqlrs.services.requests import RunRequest

FILE_TOKEN = "@sqlrs-file:"


class RunService:
    def __init__(self, inventory: Inventory, instances: Instances):
        self.repo = inventory.repo
        self.inventory = inventory
        self.instances = instances
        self.clock = instances.servers.clock

    def run(self, request: RunRequest, on_output: OutputSink, cancel: threading.Event,
            on_warning: Callable[[SqlrsError], None] = lambda error: None) -> int:
        """Run the tool; its exit code. What fails after it ran (recording the instance's use, e.g.
        on a full filesystem) goes to `on_warning`: it must not replace the tool's exit code."""
        instance, _ = self.inventory.find_instance(request.instance)
        instance = self.instances.ensure_running(instance)
        server = self.instances.server_of(instance)
        directory = server.spec.scripts_dir / f"run-{secrets.token_hex(4)}"
        humanizers = []
        try:
            entries = []
            for index, step in enumerate(request.files):
                materialized = materialize(
                    step, directory / str(index), lambda path: server.runtime.tool_path(server.spec, path)
                )
                entries.append(materialized.entry)
                humanizers.append(materialized.humanize)
            args = [self._substitute(arg, entries) for arg in request.args]

            def forward(stream: str, data: bytes) -> None:
                text = data
                if humanizers:
                    decoded = data.decode("utf-8", "surrogateescape")
                    for humanize in humanizers:
                        decoded = humanize(decoded)
                    text = decoded.encode("utf-8", "surrogateescape")
                on_output(stream, text)  # type: ignore[arg-type]

            # the DSN's user and database: a run shows and creates what a client of the DSN would
            code = server.runtime.exec_tool(server.spec, server.ref, request.tool, args,  # type: ignore[arg-type]
                                            forward, cancel, env={"PGUSER": instance.user,
                                                                  "PGDATABASE": instance.dbname})
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        instance.last_used_at = self.clock.now()
        try:
            self.repo.update_instance(instance)
        except SqlrsError as exc:
            on_warning(exc)
        return code

    @staticmethod
    def _substitute(arg: str, entries: list[str]) -> str:
        if FILE_TOKEN not in arg:
            return arg
        head, _, rest = arg.partition(FILE_TOKEN)
        digits = "".join(ch for ch in rest if ch.isdigit())
        if not digits or int(digits) >= len(entries):
            raise UsageError(f"argument {arg!r} refers to a script that was not sent")
        return head + entries[int(digits)] + rest[len(digits):]
