"""Following a job in the CLI: progress on stderr (rich on a terminal, plain lines otherwise) and
the interactive Ctrl+C prompt (stop / detach / continue). The following itself is the engine
client's (sqlrs.engine_client.jobs.follow)."""

from __future__ import annotations

import os
import sys
import time

from sqlrs.engine_client.jobs import NoProgress, follow
from sqlrs.entrypoints.cli.output import Detached, short

TYPE_CHECKING = False  # typing is not imported on the CLI's hot path (sqlrs/entrypoints/cli/fast.py)
if TYPE_CHECKING:
    from typing import Any

    from sqlrs.engine_client.connection import EngineClient
    from sqlrs.engine_client.jobs import OnInterrupt, ProgressSink

__all__ = ["Detached", "NoProgress", "PlainProgress", "RichProgress", "interrupt_handler", "make_progress",
           "watch_job"]


class PlainProgress(NoProgress):
    """One line per change, for CI logs and pipes."""

    def __init__(self) -> None:
        self.total = 0
        self.started = time.monotonic()

    def _say(self, text: str) -> None:
        sys.stderr.write(f"{time.monotonic() - self.started:6.1f}s {text}\n")
        sys.stderr.flush()

    def __call__(self, event: dict[str, Any]) -> None:
        kind, data = event.get("type"), event.get("data", {})
        if kind == "runtime":
            self._say(f"runtime {data.get('reason')}")
        elif kind == "plan":
            steps = data.get("steps", [])
            self.total = len(steps) - 1
            cached = sum(1 for s in steps if s.get("cached"))
            self._say(f"plan: {len(steps)} states ({cached} cached, {len(steps) - cached} to build)")
        elif kind == "task":
            status, index, source = data.get("status"), data.get("index"), data.get("source")
            if data.get("kind") == "instance":
                if status == "running":
                    self._say("starting instance")
                return
            label = f"[{index}/{self.total}]"
            if status == "running":
                self._say(f"{label} build  {source} -> {short(data.get('state_id'))}")
            elif status == "done":
                self._say(f"{label} done   {source} ({data.get('seconds')}s)")
            elif status == "cached":
                self._say(f"{label} cached {source} ({short(data.get('state_id'))})")
            elif status in ("failed", "skipped"):
                self._say(f"{label} {status.upper()} {source}")
        elif kind == "log" and data.get("stream") == "engine":
            self._say(str(data.get("text", "")))
        elif kind == "status" and data.get("status") == "cancelled":
            self._say("cancelled")


class RichProgress(NoProgress):
    """A live table of the chain's steps with spinners and timings (terminal only)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.rows: dict[int, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.runtime = ""
        self.started = time.monotonic()
        self.live = Live(self._render(), console=self.console, refresh_per_second=8, transient=False,
                         get_renderable=self._render)
        self.live.start()

    def _render(self) -> Any:
        from rich.spinner import Spinner
        from rich.table import Table

        table = Table.grid(padding=(0, 1))
        total = max((i for i, r in self.rows.items() if r.get("kind") != "instance"), default=0)
        marks = {"cached": "[green]✓ cached[/]", "done": "[green]✓ built[/]", "pending": "[dim]· pending[/]",
                 "failed": "[red]✗ failed[/]", "skipped": "[dim]- skipped[/]"}
        for index in sorted(self.rows):
            row = self.rows[index]
            status = row.get("status", "pending")
            if row.get("kind") == "instance":
                label, source = "", "instance"
            else:
                label, source = f"[{index}/{total}]", str(row.get("source"))
            if status == "running":
                elapsed = time.monotonic() - row.get("since", time.monotonic())
                mark: Any = Spinner("dots", text=f"[yellow]building[/] {elapsed:5.1f}s")
            else:
                mark = marks.get(status, status)
                if row.get("seconds") is not None and status == "done":
                    mark = f"{mark} {row['seconds']}s"
            table.add_row(label, mark, source, f"[dim]{short(row.get('state_id'))}[/]")
        for note in self.notes[-3:]:
            table.add_row("", "", f"[dim]{note}[/]", "")
        return table

    def __call__(self, event: dict[str, Any]) -> None:
        kind, data = event.get("type"), event.get("data", {})
        if kind == "plan":
            for step in data.get("steps", []):
                self.rows[step["index"]] = {"kind": step["kind"], "source": step["source"],
                                            "state_id": step["state_id"],
                                            "status": "cached" if step["cached"] else "pending"}
        elif kind == "task":
            row = self.rows.setdefault(int(data.get("index", 0)), {})
            row.update({"kind": data.get("kind"), "source": data.get("source"), "status": data.get("status"),
                        "state_id": data.get("state_id") or row.get("state_id"), "seconds": data.get("seconds")})
            if data.get("status") == "running":
                row["since"] = time.monotonic()
        elif kind == "log" and data.get("stream") == "engine":
            self.notes.append(str(data.get("text", "")))
        self.live.refresh()

    def pause(self) -> None:
        self.live.stop()

    def resume(self) -> None:
        self.live.start()

    def close(self) -> None:
        self.live.stop()


def make_progress(quiet: bool) -> ProgressSink:
    if quiet:
        return NoProgress()
    if sys.stderr.isatty() and os.environ.get("TERM", "") not in ("", "dumb"):
        return RichProgress()
    return PlainProgress()


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def ask(question: str) -> str:
    sys.stderr.write(question)
    sys.stderr.flush()
    try:
        with open("/dev/tty") as tty:
            return tty.readline().strip().lower()
    except OSError:
        return sys.stdin.readline().strip().lower()


def ask_what_next(client: EngineClient, job_id: str) -> None:
    """Ctrl+C during a watch on a terminal: stop the job, detach from it, or continue watching."""
    while True:
        try:
            answer = ask(f"\njob {job_id}: [s]top, [d]etach or [c]ontinue? ")
        except KeyboardInterrupt:
            answer = "c"
        if answer in ("s", "stop"):
            if ask("stop the job? finished steps stay cached [y/N] ") in ("y", "yes"):
                client.call("POST", f"/v1/prepare-jobs/{job_id}/cancel")
                return
        elif answer in ("d", "detach"):
            raise Detached(job_id)
        elif answer in ("c", "continue", ""):
            return


def interrupt_handler(can_prompt: bool | None = None) -> OnInterrupt | None:
    """What Ctrl+C does while watching: ask on a terminal; else (None) cancel the job and stop."""
    return ask_what_next if (interactive() if can_prompt is None else can_prompt) else None


def watch_job(ctx: Any, job_id: str, progress: ProgressSink, can_prompt: bool | None = None,
              stream: Any = None) -> dict[str, Any]:
    """Follow a job's events to its end (sqlrs.engine_client.jobs.follow); its result."""
    return follow(ctx.client(), job_id, progress, stream=stream, interrupt=interrupt_handler(can_prompt),
                  quiet=getattr(ctx, "quiet", False))
