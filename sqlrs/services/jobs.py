"""Asynchronous jobs: each runs in its own thread, reports events, can be cancelled."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import traceback
from collections.abc import Callable
from typing import Any

from sqlrs.domain.errors import Cancelled, Internal, Interrupted, SqlrsError, no_space_for
from sqlrs.domain.model import Event, Job, JobStatus, Task, TaskStatus
from sqlrs.ports.clock import Clock
from sqlrs.ports.repository import JobLog

log = logging.getLogger("sqlrs.jobs")


class Notifier:
    """Wakes async readers (event streams) when a thread appends events for a job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}

    def version(self, key: str) -> int:
        with self._lock:
            return self._versions.get(key, 0)

    def notify(self, key: str) -> None:
        with self._lock:
            self._versions[key] = self._versions.get(key, 0) + 1
            waiters = self._waiters.pop(key, [])
        for loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future)

    def forget(self, key: str) -> None:
        """Drop `key`'s version once nothing more will happen to it (a finished job): one entry
        per job ever run would pile up. A reader that saw a version goes on at once."""
        with self._lock:
            if key not in self._waiters:
                self._versions.pop(key, None)

    async def wait(self, key: str, seen_version: int, timeout: float) -> None:
        """Return when `key` moved past `seen_version`, or after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._versions.get(key, 0) != seen_version:
                return
            self._waiters.setdefault(key, []).append((loop, future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                waiting = self._waiters.get(key, [])
                if (loop, future) in waiting:
                    waiting.remove((loop, future))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class JobContext:
    """What a running job may do: report events and tasks, and notice cancellation."""

    def __init__(self, runner: JobRunner, job: Job):
        self._runner = runner
        self.job = job
        self.cancel = threading.Event()

    def emit(self, type_: str, **data: Any) -> None:
        self._runner.emit(self.job.id, type_, data)

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("cancelled by request")

    def set_tasks(self, tasks: list[Task]) -> None:
        self._runner.repo.set_tasks(self.job.id, tasks)

    def update_task(self, task: Task, status: TaskStatus, **fields: Any) -> None:
        task.status = status
        for key, value in fields.items():
            setattr(task, key, value)
        self._runner.emit(self.job.id, "task", {"index": task.index, "kind": task.kind, "state_id": task.state_id,
                                                "source": task.source, "status": status.value,
                                                "seconds": task.seconds}, task=task)


Handler = Callable[[JobContext], dict[str, Any]]


EVENTS_PAGE = 1000  # events read at a time
UNRECORDED_JOBS = 64  # jobs whose end is held in memory at most (the repository could not record it)


class JobRunner:
    def __init__(self, repo: JobLog, clock: Clock, history_max: Callable[[], int]):
        self.repo = repo
        self.clock = clock
        self.notifier = Notifier()
        self._history_max = history_max
        self._contexts: dict[str, JobContext] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        # what the repository could not record (its filesystem is full): a job's last events and
        # its end, held here so that whoever follows the job still learns how it ended
        self._seq: dict[str, int] = {}  # running jobs: the last event's seq
        self._unrecorded: dict[str, tuple[Job | None, list[Event]]] = {}

    def emit(self, job_id: str, type_: str, data: dict[str, Any], task: Task | None = None) -> None:
        """Record an event (with `task`'s new fields) and wake its followers. An event the
        repository cannot take is held in memory; a task's change it cannot take fails the job."""
        when = self.clock.now()
        try:
            event = self.repo.append_event(job_id, type_, data, when, task=task)
        except SqlrsError as exc:
            if task is not None:
                raise
            log.warning("job %s: cannot record its %s event: %s", job_id, type_, exc.message)
            with self._lock:
                held = self._hold(job_id)[1]
                event = Event(job_id, (held[-1].seq if held else self._seq.get(job_id, 0)) + 1, when, type_, data)
                held.append(event)
        with self._lock:
            if job_id in self._seq:
                self._seq[job_id] = event.seq
        self.notifier.notify(job_id)

    def events_after(self, job_id: str, seq: int) -> list[Event]:
        """The job's events after `seq`: those recorded, then those held in memory."""
        events = self.repo.events_after(job_id, seq, EVENTS_PAGE)
        if len(events) == EVENTS_PAGE:  # more are recorded: the held ones come after them
            return events
        last = events[-1].seq if events else seq
        with self._lock:
            return events + [event for event in self._unrecorded.get(job_id, (None, []))[1] if event.seq > last]

    def get_job(self, job_id: str) -> Job | None:
        """The job as recorded, or as it ended when that could not be recorded."""
        with self._lock:
            ended = self._unrecorded.get(job_id, (None, []))[0]
        return ended or self.repo.get_job(job_id)

    def _record(self, job: Job) -> None:
        try:
            self.repo.update_job(job)
        except SqlrsError as exc:
            if not job.status.terminal:
                raise
            log.warning("job %s: cannot record its end (%s): %s", job.id, job.status.value, exc.message)
            with self._lock:
                self._unrecorded[job.id] = (job, self._hold(job.id)[1])

    def _hold(self, job_id: str) -> tuple[Job | None, list[Event]]:
        """What is held in memory for the job (under the lock), the oldest job's dropped past the bound."""
        held = self._unrecorded.setdefault(job_id, (None, []))
        while len(self._unrecorded) > UNRECORDED_JOBS:
            self._unrecorded.pop(next(iter(self._unrecorded)))
        return held

    def running(self, job_id: str) -> bool:
        """Whether the job runs in this engine now (queued or running: its end is still to come)."""
        with self._lock:
            return job_id in self._contexts

    def active_ids(self) -> set[str]:
        with self._lock:
            return {job_id for job_id, thread in self._threads.items() if thread.is_alive()}

    def running_tasks(self) -> dict[str, list[Task]]:
        """The tasks of every job running now, by job id: the states each uses (StateCatalog.users)."""
        return {job_id: self.repo.list_tasks(job_id) for job_id in self.active_ids()}

    def active(self) -> int:
        with self._lock:
            return sum(1 for thread in self._threads.values() if thread.is_alive())

    def submit(self, kind: str, request: dict[str, Any], handler: Handler) -> Job:
        job = Job(id=secrets.token_hex(6), kind=kind, status=JobStatus.QUEUED, request=request,
                  created_at=self.clock.now())
        self.repo.add_job(job)
        context = JobContext(self, job)
        thread = threading.Thread(target=self._run, args=(context, handler), name=f"job-{job.id}", daemon=True)
        with self._lock:
            self._contexts[job.id] = context
            self._threads[job.id] = thread
            self._seq[job.id] = 0
        self.emit(job.id, "status", {"status": job.status.value})
        thread.start()
        return job

    def _run(self, context: JobContext, handler: Handler) -> None:
        job = context.job
        try:
            job.status = JobStatus.RUNNING
            job.started_at = self.clock.now()
            self.repo.update_job(job)
            self.emit(job.id, "status", {"status": job.status.value})
            job.result = handler(context)
            job.status = JobStatus.SUCCEEDED
        except Cancelled as exc:
            job.status = JobStatus.CANCELLED
            job.error = exc.to_json()
        except SqlrsError as exc:
            job.status = JobStatus.FAILED
            job.error = exc.to_json()
        except Exception as exc:  # a bug (or a full filesystem): keep the engine alive, report without a traceback
            full = no_space_for(exc)
            if full is None:
                log.error("job %s crashed:\n%s", job.id, traceback.format_exc())
            job.status = JobStatus.FAILED
            job.error = (full or Internal(f"internal error: {type(exc).__name__}: {exc}",
                                          hint="see engine.log in the state directory")).to_json()
        job.finished_at = self.clock.now()
        self._record(job)
        if job.error:
            self.emit(job.id, "error", job.error)
        if job.result:
            self.emit(job.id, "result", job.result)
        self.emit(job.id, "status", {"status": job.status.value})
        with self._lock:
            self._contexts.pop(job.id, None)
            self._threads.pop(job.id, None)
            self._seq.pop(job.id, None)
        self.notifier.forget(job.id)
        try:
            self.prune()
        except SqlrsError as exc:
            log.warning("cannot prune old jobs: %s", exc.message)

    def cancel(self, job_id: str) -> bool:
        """Ask a running job to stop; False when it is not running here."""
        with self._lock:
            context = self._contexts.get(job_id)
        if context is None:
            return False
        context.cancel.set()
        self.emit(job_id, "log", {"stream": "engine", "text": "cancel requested"})
        return True

    def cancel_all(self, timeout: float = 30.0) -> None:
        with self._lock:
            contexts = list(self._contexts.values())
            threads = list(self._threads.values())
        for context in contexts:
            context.cancel.set()
        for thread in threads:
            thread.join(timeout)

    def recover(self) -> list[Job]:
        """Mark jobs that a previous engine left running as failed (their work is not resumed)."""
        failed = []
        for job in self.repo.list_jobs():
            if not job.status.terminal:
                job.status = JobStatus.FAILED
                job.finished_at = self.clock.now()
                job.error = Interrupted("the engine stopped while this job ran",
                                        hint="run the prepare again; finished steps are cached").to_json()
                self.repo.update_job(job)
                self.emit(job.id, "error", job.error)
                self.emit(job.id, "status", {"status": job.status.value})
                failed.append(job)
        return failed

    def prune(self) -> None:
        """Keep at most `jobs.history.max` finished jobs."""
        self.repo.prune_jobs(self._history_max(), [status.value for status in JobStatus if status.terminal])
