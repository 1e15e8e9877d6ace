"""Following a job: progress on stderr (rich on a terminal, plain lines otherwise) and the
interactive Ctrl+C prompt (stop / detach / continue)."""

from __future__ import annotations

import os
import sys
import time

from sqlrs.entrypoints.cli.errors import EXIT_ENGINE, CliError

TYPE_CHECKING = False  # typing is not imported on the CLI's hot path (sqlrs/entrypoints/cli/fast.py)
if TYPE_CHECKING:
    from typing import Any, Protocol

    class ProgressSink(Protocol):
        def __call__(self, event: dict[str, Any]) -> None: ...
        def pause(self) -> None: ...
        def resume(self) -> None: ...
        def close(self) -> None: ...


class Detached(Exception):
    """The user chose to leave the job running."""

    def __init__(self, job_id: str):
        super().__init__(job_id)
        self.job_id = job_id


def short(identifier: str | None, n: int = 12) -> str:
    return (identifier or "-")[:n]


class NoProgress:
    def __call__(self, event: dict[str, Any]) -> None:
        pass

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def close(self) -> None:
        pass


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


def on_interrupt(client: Any, job_id: str, progress: ProgressSink, can_prompt: bool) -> None:
    """Ctrl+C during a watch: ask what to do (terminal), or cancel the job (scripts)."""
    progress.pause()
    try:
        if not can_prompt:
            client.call("POST", f"/v1/prepare-jobs/{job_id}/cancel")
            raise KeyboardInterrupt
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
    finally:
        progress.resume()


def watch_job(ctx: Any, job_id: str, progress: ProgressSink, can_prompt: bool | None = None,
              stream: Any = None) -> dict[str, Any]:
    """Follow a job's events to its end; return its result or raise its error.

    `stream` is an already open event stream (from `POST ...?watch=true`). The stream is resumed
    from the last event seen whenever it breaks or the user pressed Ctrl+C and chose to continue,
    so nothing is missed.
    """
    client = ctx.client()
    prompt = interactive() if can_prompt is None else can_prompt
    after = 0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    status = None
    try:
        while status not in ("succeeded", "failed", "cancelled"):
            try:
                if stream is not None:
                    response, stream = stream, None
                else:
                    response = client.request("GET", f"/v1/prepare-jobs/{job_id}/events?after={after}",
                                              timeout=None)
                if response.status not in (200, 201):
                    from sqlrs.entrypoints.cli.client import raise_engine_error

                    raise_engine_error(response.status, response.json())
                for event in response.lines():
                    if event.get("type") in ("heartbeat", "created"):
                        continue
                    after = int(event.get("seq", after))
                    kind, data = event.get("type"), event.get("data", {})
                    if kind == "result":
                        result = data
                    elif kind == "error":
                        error = data
                    elif kind == "status":
                        status = data.get("status")
                    elif kind == "warning" and not getattr(ctx, "quiet", False):
                        progress.pause()  # loud: its own line on stderr, whatever the progress style
                        sys.stderr.write(f"WARNING: {data.get('text', '')}\n")
                        sys.stderr.flush()
                        progress.resume()
                    progress(event)
            except KeyboardInterrupt:
                on_interrupt(client, job_id, progress, prompt)
            except (OSError, ValueError):
                time.sleep(0.2)  # the stream broke: resume from the last event seen
    finally:
        progress.close()
    if error is not None:
        raise CliError.from_engine(error)
    if status != "succeeded" or result is None:
        raise CliError(f"job {job_id} ended as {status}", EXIT_ENGINE)
    return result
