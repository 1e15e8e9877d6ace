"""`prepare:lb` / `plan:lb`: Liquibase changelogs as chains of cached states, one per changeset.

    sqlrs prepare:lb -- update --changelog-file=master.xml [--search-path=DIR] [Liquibase args]

The CLI reads the changelogs itself (sqlrs.domain.liquibase: no JVM, so a plan is instant and
every changeset's digest is known before anything runs) and sends one host step per changeset;
the engine applies each with a real Liquibase (sqlrs.services.steps.liquibase). Connection
arguments are refused: sqlrs connects Liquibase to the build server itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from sqlrs.entrypoints.cli import inputs
from sqlrs.entrypoints.cli.errors import CliError, usage
from sqlrs.entrypoints.cli.main import (
    PASSTHROUGH,
    Ctx,
    cli,
    do_prepare,
    emit_json,
    parse_duration,
    prepare_options,
    short,
    table,
)

# Liquibase options sqlrs sets itself (compared without dashes, underscores and case)
REFUSED = {"url": "--url", "username": "--username", "password": "--password", "driver": "--driver",
           "driverpropertiesfile": "--driver-properties-file", "defaultsfile": "--defaults-file",
           "referenceurl": "--reference-url", "referenceusername": "--reference-username",
           "referencepassword": "--reference-password"}
CHANGELOG_FILE = "changelogfile"
SEARCH_PATH = "searchpath"
# the environment Liquibase gets from the caller: where Java is, locale and time zone
ENV_PASSED = ("PATH", "HOME", "JAVA_HOME", "LANG", "LC_ALL", "TZ")


def _option(token: str) -> tuple[str, str | None] | None:
    """(normalized name, value after '=') of a `--long-option`, else None."""
    if not token.startswith("--") or token == "--":
        return None
    name, eq, value = token[2:].partition("=")
    return name.replace("-", "").replace("_", "").lower(), value if eq else None


class LbArgs:
    def __init__(self, global_args: list[str], command_args: list[str], changelog: str, search_path: str | None):
        self.global_args = global_args
        self.command_args = command_args
        self.changelog = changelog
        self.search_path = search_path


def parse_lb_args(args: list[str]) -> LbArgs:
    """Split Liquibase's arguments: the command (only `update`), the changelog file, the search
    path; the rest passes through (before or after the command, as given)."""
    global_args: list[str] = []
    command_args: list[str] = []
    command: str | None = None
    changelog: str | None = None
    search_path: str | None = None
    tokens = list(args)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        option = _option(token)
        if option is None:
            if token.startswith("-") or command is not None:
                (command_args if command else global_args).append(token)
                continue
            command = token
            if command != "update":
                raise usage(f"prepare:lb runs Liquibase's update, not {command!r}",
                            hint="sqlrs prepare:lb -- update --changelog-file=master.xml [--contexts=...]")
            continue
        name, value = option
        if name in REFUSED:
            raise usage(f"{REFUSED[name]} is refused: sqlrs connects Liquibase to the database it builds",
                        hint="drop the connection arguments; use the DSN prepare:lb prints")
        if name in (CHANGELOG_FILE, SEARCH_PATH):
            if value is None:
                if index >= len(tokens):
                    raise usage(f"{token} needs a value")
                value = tokens[index]
                index += 1
            if name == CHANGELOG_FILE:
                changelog = value
            else:
                search_path = value
            continue
        (command_args if command else global_args).append(token)
    if command is None:
        raise usage("no Liquibase command", hint="sqlrs prepare:lb -- update --changelog-file=master.xml")
    if not changelog:
        raise usage("update needs --changelog-file", hint="sqlrs prepare:lb -- update --changelog-file=master.xml")
    return LbArgs(global_args, command_args, changelog, search_path)


def lb_steps(ctx: Ctx, args: tuple[str, ...], allow_outside: bool) -> list[dict[str, Any]]:
    """One host step per changeset, in Liquibase's order."""
    return liquibase_steps(list(args), Path.cwd(), ctx.state_dir / "config.json", allow_outside)


def liquibase_steps(args: list[str], cwd: Path, config: Path, allow_outside: bool = False) -> list[dict[str, Any]]:
    """The steps of `update ARGS` run in `cwd` (also used by sqlrs.client: `liquibase=`)."""
    from sqlrs.adapters import liquibase as install
    from sqlrs.adapters.config_file import ConfigFile
    from sqlrs.domain import keys
    from sqlrs.domain import liquibase as changelogs
    from sqlrs.domain.errors import UsageError
    from sqlrs.entrypoints.cli.psqlargs import Workspace

    parsed = parse_lb_args(args)
    # psql's workspace rule: files from below the git root of `cwd` (else `cwd`) only
    root_dir = next((c for c in (cwd, *cwd.parents) if (c / ".git").exists()), cwd)
    workspace = Workspace(cwd=cwd, root=root_dir, allow_outside=allow_outside)
    if parsed.search_path and "," in parsed.search_path:
        raise usage("sqlrs takes one --search-path directory", hint="put the changelogs below one directory")
    root = (workspace.cwd / parsed.search_path).resolve() if parsed.search_path else workspace.cwd
    if not root.is_dir():
        raise usage(f"--search-path {parsed.search_path}: no such directory")
    workspace.check(root, parsed.search_path or str(root))
    changelog = Path(parsed.changelog)
    if changelog.is_absolute():
        try:
            changelog = changelog.resolve().relative_to(root)
        except ValueError:
            raise usage(f"--changelog-file {parsed.changelog}: not below the search path {root}") from None
    try:
        if not (root / changelog).is_file():
            raise usage(f"--changelog-file {parsed.changelog}: no such file in {root}",
                        hint="a relative changelog file is found in the search path (default: the current directory)")
        project = changelogs.read_project(changelog.as_posix(), *install.disk_reader(root))
        launcher = install.find_launcher(ConfigFile(config).get("runtime.liquibase.path"))
        version = install.version(launcher)
        install.check_supported(version, launcher)
    except UsageError as exc:
        raise CliError(exc.message, hint=exc.hint, exit_code=exc.exit_code, code=exc.code) from None
    if not project.changesets:
        raise usage(f"{parsed.changelog}: no changesets", hint="a changelog with at least one changeSet")
    if install._java() is None:
        raise CliError("Java is not installed: Liquibase needs it", exit_code=1, code="failed",
                       hint="apt-get install openjdk-17-jre-headless, or set JAVA_HOME")
    global_json, command_json = json.dumps(parsed.global_args), json.dumps(parsed.command_args)
    env = [[name, os.environ[name]] for name in ENV_PASSED if name in os.environ]
    steps = []
    for changeset in project.changesets:
        keyed = [["changeset", changeset.digest], ["liquibase", version],
                 ["global_args", global_json], ["command_args", command_json]]
        params = [["search_path", str(root)], ["changelog", project.root], ["file", changeset.file],
                  ["ordinal", str(changeset.ordinal)], ["id", changeset.id], ["author", changeset.author],
                  ["digest", changeset.digest], ["global_args", global_json], ["command_args", command_json]]
        steps.append({"kind": "liquibase", "source": changeset.source, "keyed": keyed,
                      "digest": keys.digest([[name, value] for name, value in keyed]),
                      "run": {"cwd": str(workspace.cwd), "argv": [str(launcher)], "env": env, "params": params}})
    return steps


def _lb_body(ctx: Ctx, args: tuple[str, ...], image: str | None, runtime: str | None, name: str | None,
             allow_outside: bool, plan_only: bool = False, ephemeral: bool = False, on_name: str = "error",
             ttl_seconds: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"steps": lb_steps(ctx, args, allow_outside), "runtime": runtime, "image": image,
                            "name": name, "plan_only": plan_only, "ephemeral": ephemeral, "on_name": on_name}
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    return body


PREPARE_LB_HELP = """Build (or reuse) the state a Liquibase changelog describes and start an instance of it.

\b
Prints exactly one line on stdout: the instance's DSN. Progress goes to stderr.
LIQUIBASE_ARGS are Liquibase's: update --changelog-file=FILE [--search-path=DIR]
[--contexts=...] [--labels=...] [-Dname=value] ... Every changeset is one cached
state: appending a changeset rebuilds only it. Connection arguments (--url,
--username, --password) are refused: sqlrs connects Liquibase itself.
Liquibase 4.x: config runtime.liquibase.path, env SQLRS_LIQUIBASE, PATH, or
/opt/sqlrs/liquibase (scripts/install.sh).

\b
Examples:
  sqlrs prepare:lb -- update --changelog-file=master.xml
  sqlrs prepare:lb -- update --changelog-file=db/master.yaml --contexts=test
  sqlrs prepare:lb -- update --changelog-file=master.xml run:psql -- -c 'select 1'
"""


def _no_from(from_state: str | None) -> None:
    if from_state:
        raise usage("--from takes psql steps only: prepare:lb starts from the base",
                    hint="prepare the changelog, then add psql steps: sqlrs prepare:psql --from STATE -- ...")


@cli.command("prepare:lb", context_settings=PASSTHROUGH, help=PREPARE_LB_HELP)
@prepare_options
@click.option("--name", help="Bind a name to the new instance (use it wherever an id is accepted).")
@click.option("--reuse", is_flag=True, help="With --name: return the named instance if its state matches, "
              "else replace it.")
@click.option("--fresh", is_flag=True, help="With --name: replace the named instance with a new one.")
@click.option("--watch/--no-watch", default=True, help="Follow the job (default) or print its id and return.")
@click.option("--ttl", "ttl", metavar="DURATION",
              help="Remove the instance after it had no client connected for this long (90s, 15m, 2h; 0: never).")
@click.argument("lb_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def prepare_lb(ctx: Ctx, image: str | None, runtime: str | None, allow_outside: bool, kind: str | None,
               from_state: str | None, name: str | None, reuse: bool, fresh: bool, watch: bool, ttl: str | None,
               lb_args: tuple[str, ...]) -> None:
    _no_from(from_state)
    if reuse and fresh:
        raise usage("--reuse and --fresh exclude each other")
    if (reuse or fresh) and not name:
        raise usage("--reuse and --fresh need --name")
    on_name = "reuse" if reuse else "fresh" if fresh else "error"
    body = _lb_body(ctx, lb_args, image, runtime, name, allow_outside, on_name=on_name,
                    ttl_seconds=parse_duration(ttl) if ttl is not None else None)
    if kind is not None:
        body["instance_kind"] = kind
    if inputs._capture is not None:  # the prepare half of a composite `prepare:lb ... run:psql ...`
        if name:
            raise usage("--name cannot be used with a composite prepare ... run ...: the instance is removed")
        inputs._capture.update(ctx=ctx, body={**body, "ephemeral": True})
        return
    result = do_prepare(ctx, body, watch)
    if result is not None:
        click.echo(result["dsn"])


@cli.command("plan:lb", context_settings=PASSTHROUGH)
@prepare_options
@click.option("-o", "--output", "output", type=click.Choice(["table", "json"]), default="table")
@click.argument("lb_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def plan_lb(ctx: Ctx, image: str | None, runtime: str | None, allow_outside: bool, kind: str | None,
            from_state: str | None, output: str, lb_args: tuple[str, ...]) -> None:
    """Show the chain a Liquibase changelog describes, one row per changeset: state ids, cached or
    to build. Builds nothing, starts no JVM. Same arguments as prepare:lb."""
    _no_from(from_state)
    from sqlrs.entrypoints.cli.main import _submit
    from sqlrs.entrypoints.cli.watching import NoProgress, watch_job

    body = _lb_body(ctx, lb_args, image, runtime, None, allow_outside, plan_only=True)
    submitted, stream = _submit(ctx, body, watch=True)
    result = watch_job(ctx, submitted["job_id"], NoProgress(), stream=stream)
    plan = result.get("plan", [])
    if output == "json":
        emit_json(plan)
        return
    table([[str(s["index"]), s["kind"], s["source"], short(s["state_id"]), "cached" if s["cached"] else "build"]
           for s in plan], ["#", "KIND", "SOURCE", "STATE", "STATUS"])
