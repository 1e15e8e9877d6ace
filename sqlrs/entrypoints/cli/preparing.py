"""The body of every `prepare:KIND` and `plan:KIND` command, and of the composite
`prepare:KIND ... run:TOOL ...`: standard library only (the fast path runs prepare:psql with it).

A prepare command reads its input into steps (psql's PSQL_ARGS, Liquibase, Alembic, a command)
and hands them to `prepare`, which applies the options every kind shares (--name, --reuse,
--fresh, --ttl, --watch) and either submits the job or, inside a composite, hands the body to
the composite (run_composite in prepare_cmd.py), which prepares an ephemeral instance and runs
the tool on it.
"""

from __future__ import annotations

from sqlrs.engine_client import jobs
from sqlrs.engine_client.errors import usage
from sqlrs.entrypoints.cli.output import echo, emit_json, short, table

TYPE_CHECKING = False  # typing is not imported on the CLI's hot path (sqlrs/entrypoints/cli/fast.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from sqlrs.entrypoints.cli.output import Ctx

    # (on_name, ttl_seconds) -> the job's body
    BuildBody = Callable[[str, int | None], dict[str, Any]]


def parse_duration(text: str, option: str = "--ttl") -> int:
    """'90' / '90s' / '15m' / '2h' / '1d' / '1h30m' -> whole seconds; a usage error otherwise."""
    from sqlrs.domain.durations import parse_duration as seconds

    try:
        return round(seconds(text))
    except ValueError:
        raise usage(f"{option} {text}: expected seconds or a duration like 90s, 15m, 2h") from None


def psql_body(args: tuple[str, ...], image: str | None, runtime: str | None, name: str | None,
              allow_outside: bool, plan_only: bool = False, on_name: str = "error", ttl_seconds: int | None = None,
              kind: str | None = None, from_state: str | None = None) -> dict[str, Any]:
    """prepare:psql's / plan:psql's job: PSQL_ARGS read into steps (files and includes read here)."""
    from sqlrs.engine_client.psqlargs import Workspace, parse_prepare_args

    parsed = parse_prepare_args(list(args), Workspace.detect(allow_outside))
    if not parsed.steps and not plan_only and not from_state:
        raise usage("nothing to prepare",
                    hint="give at least one -f FILE or -c SQL, e.g. sqlrs prepare:psql -- -f schema.sql")
    return jobs.job_body(jobs.psql_chain(parsed), runtime=runtime, image=image, name=name, plan_only=plan_only,
                         on_name=on_name, ttl_seconds=ttl_seconds, instance_kind=kind, from_state=from_state)


class Stage:
    """What a prepare or plan stage may carry beside its input: `--ref` (read the input at a Git
    revision), `--provenance-path` (write a record of the run), the alias it came from."""

    def __init__(self, ref: str | None = None, ref_mode: str | None = None, ref_keep: bool = False,
                 provenance: str | None = None, alias: str | None = None):
        import os

        self.ref = ref
        self.ref_mode = ref_mode
        self.ref_keep = ref_keep
        # from the caller's directory, whatever --ref makes the cwd meanwhile
        self.provenance = os.path.abspath(provenance) if provenance else None
        self.alias = alias

    def source(self, ctx: Ctx) -> Any:
        """The context the input is read in: the Git revision of --ref, else the working tree."""
        if self.ref is None and self.ref_mode is None and not self.ref_keep:
            import contextlib

            return contextlib.nullcontext()
        from sqlrs.entrypoints.cli.gitref import checkout

        return checkout(self.ref, self.ref_mode, self.ref_keep, note=ctx.note)


NO_STAGE = Stage()


class Composite:
    """A command that takes a prepare (or plan) command's job instead of submitting it: the
    prepare half of `prepare ... run ...` (`purpose` "run"), or `cache explain` and `diff`, which
    read what the wrapped command would send. `inspect` sees the job while its input is still
    readable (a --ref checkout is removed afterwards)."""

    def __init__(self, purpose: str = "run", inspect: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.purpose = purpose
        self.inspect = inspect
        self.ctx: Ctx | None = None
        self.body: dict[str, Any] | None = None
        self.command: str | None = None
        self.seen: Any = None

    def check(self, name: str | None, watch: bool, ttl_seconds: int | None, stage: Stage) -> None:
        if self.purpose != "run":
            return
        if stage.ref is not None:
            raise usage("--ref cannot be used with a composite prepare ... run ... yet",
                        hint="prepare with --ref alone, then run:psql --instance against its instance")
        if stage.provenance is not None:
            raise usage("--provenance-path cannot be used with a composite prepare ... run ...")
        if name:
            raise usage("--name cannot be used with a composite prepare ... run ...: the instance is removed")
        if not watch:
            raise usage("--no-watch cannot be used with a composite prepare ... run ...: the run needs the "
                        "prepared instance", hint="submit the job alone (sqlrs prepare:psql --no-watch -- ...), "
                        "then `sqlrs watch JOB_ID` and `sqlrs run:psql --instance ...`")
        if ttl_seconds == 0:
            raise usage("--ttl 0 cannot be used with a composite prepare ... run ...: its instance must expire "
                        "if this command goes away before removing it", hint="give a duration, e.g. --ttl 10m")

    def take(self, ctx: Ctx, body: dict[str, Any]) -> None:
        # the engine gives an ephemeral instance a short idle TTL (or --ttl): it is gone even if
        # this CLI detaches, dies or execs an interactive psql before removing it
        self.ctx, self.body = ctx, ({**body, "ephemeral": True} if self.purpose == "run" else body)
        if self.inspect is not None:
            self.seen = self.inspect(body)


def with_workspace(body: dict[str, Any], settings: Any) -> dict[str, Any]:
    """The job as the workspace configures it: its image (unless the command names one), its
    PostgreSQL major and bootstrap superuser (sqlrs.engine_client.workspace)."""
    fields = settings.request_fields(body.get("image"))
    return {**body, **fields} if fields else body


def prepare(ctx: Ctx, build: BuildBody, *, name: str | None, reuse: bool, fresh: bool, watch: bool,
            ttl: str | None, stage: Stage = NO_STAGE) -> None:
    """A prepare command after its input was parsed: print the DSN (or the job's URLs with
    --no-watch), or hand the job to the composite this command is the first half of."""
    on_name = jobs.name_policy(name, reuse, fresh)
    ttl_seconds = parse_duration(ttl) if ttl is not None else None
    composite: Composite | None = ctx.composite
    if composite is not None:
        composite.check(name, watch, ttl_seconds, stage)
    if stage.ref is not None and not watch:
        raise usage("--ref cannot be used with --no-watch: the revision's files are needed until the job ends")
    result = _stage(ctx, stage, "prepare", lambda: build(on_name, ttl_seconds),
                    lambda body, record: submit(ctx, body, watch, record))
    if result is not None:
        echo(result["dsn"])


def _stage(ctx: Ctx, stage: Stage, mode: str, build: Callable[[], dict[str, Any]],
           run: Callable[[dict[str, Any], Any], dict[str, Any] | None]) -> dict[str, Any] | None:
    """A prepare or plan stage: its job built (at --ref's revision) with the workspace's settings,
    then taken by the composite this command is part of (None), or run, with its provenance
    written whatever the outcome."""
    from sqlrs.engine_client import workspace

    composite: Composite | None = ctx.composite
    settings = workspace.load()  # the live workspace's, also under --ref (its config is local)
    with stage.source(ctx) as source:
        body = with_workspace(build(), settings)
        if composite is not None:
            composite.take(ctx, body)
            return None
        record = None
        if stage.provenance is not None:
            from sqlrs.entrypoints.cli.provenance import Record

            record = Record(stage.provenance, mode, body, source, settings, stage.alias)
        try:
            result = run(body, record)
        except BaseException as exc:
            if record is not None:
                record.finish(error=exc)
            raise
        if record is not None:
            record.finish(result=result)
    return result


def submit(ctx: Ctx, body: dict[str, Any], watch: bool, record: Any = None) -> dict[str, Any] | None:
    """Submit a prepare job: follow it to its result, or (not `watch`) print its id and URLs."""
    if not watch:
        submitted, _ = jobs.submit(ctx.client(), body, watch=False)
        echo(submitted["job_id"])
        echo(submitted["status_url"])
        echo(submitted["events_url"])
        if record is not None:
            record.job_id = submitted["job_id"]
        return None
    from sqlrs.entrypoints.cli.watching import interrupt_handler, make_progress

    def progress() -> Any:
        sink = make_progress(ctx.quiet)
        return record.watching(sink) if record is not None else sink

    return jobs.prepare(ctx.client(), body, progress, interrupt=interrupt_handler(), quiet=ctx.quiet)


def plan_result(ctx: Ctx, body: dict[str, Any], progress: Any = None) -> dict[str, Any]:
    """A plan-only job's result (`plan`, `runtime`, `identity`, and `explain` when asked for)."""
    from sqlrs.entrypoints.cli.watching import watch_job

    submitted, stream = jobs.submit(ctx.client(), {**body, "plan_only": True}, watch=True)
    return {**watch_job(ctx, submitted["job_id"], progress or jobs.NoProgress(), stream=stream),
            "job_id": submitted["job_id"]}


def plan(ctx: Ctx, build: Callable[[], dict[str, Any]], output: str, stage: Stage = NO_STAGE) -> None:
    """A plan command: the chain's states, cached, to pull or to build (a table or -o json)."""
    result = _stage(ctx, stage, "plan", build, lambda body, record: plan_result(
        ctx, body, record.watching(jobs.NoProgress()) if record is not None else None))
    if result is None:
        return
    steps = result.get("plan", [])
    if output == "json":
        emit_json(steps)
        return
    table([[str(s["index"]), s["kind"], s["source"], short(s["state_id"]),
            "cached" if s["cached"] else "pull" if s.get("remote") else "build", keep_column(s)]
           for s in steps], ["#", "KIND", "SOURCE", "STATE", "STATUS", "KEPT"])
    start = max((s["index"] for s in steps if s["cached"]), default=None)
    if start is not None and start < len(steps) - 1 and not any(s.get("remote") for s in steps):
        echo(f"builds from #{start} ({short(steps[start]['state_id'])}), the deepest kept state", err=True)


def keep_column(step: dict[str, Any]) -> str:
    """Whether a row's state is (or will be) kept as a checkpoint, and why: 'yes' when it is here;
    for a row to build, the reason it will be kept, or 'if it pays' (decided by its replay cost)."""
    if step.get("cached"):
        return "yes" if step.get("checkpoint") else "-"
    return str(step["keep"]) if step.get("keep") else "if it pays"
