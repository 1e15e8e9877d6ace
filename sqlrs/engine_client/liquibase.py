"""Liquibase changelogs as chains of steps, one per changeset, read on the caller's side.

    update --changelog-file=master.xml [--search-path=DIR] [Liquibase args]

The changelogs are read here (sqlrs.changelogs.liquibase: no JVM, so a plan is instant and every
changeset's digest is known before anything runs); the engine applies each step with a real
Liquibase (sqlrs.services.states.steps.liquibase). Connection arguments are refused: sqlrs connects
Liquibase to the build server itself. Used by `sqlrs prepare:lb` and `Client(...).build(liquibase=...)`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sqlrs.engine_client.errors import ClientError, usage

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


def liquibase_steps(args: list[str], cwd: Path, config: Path, allow_outside: bool = False,
                    launcher: str | None = None) -> list[dict[str, Any]]:
    """The steps of `update ARGS` run in `cwd`. `launcher`: the Liquibase launcher to use (the
    workspace's liquibase.exec), else config runtime.liquibase.path, SQLRS_LIQUIBASE, PATH."""
    from sqlrs.changelogs import liquibase as changelogs
    from sqlrs.changelogs import liquibase_install as install
    from sqlrs.config_file import ConfigFile
    from sqlrs.domain import keys
    from sqlrs.domain.errors import UsageError
    from sqlrs.engine_client.psqlargs import Workspace

    parsed = parse_lb_args(args)
    workspace = Workspace(cwd=cwd, allow_outside=allow_outside)  # psql's rule: below the git root of `cwd`
    if parsed.search_path and "," in parsed.search_path:
        raise usage("sqlrs takes one --search-path directory", hint="put the changelogs below one directory")
    root = (workspace.cwd / parsed.search_path).resolve() if parsed.search_path else workspace.cwd
    if not root.is_dir():
        raise usage(f"--search-path {parsed.search_path}: no such directory")
    workspace.check(root, parsed.search_path or str(root))
    changelog = Path(parsed.changelog)
    if not changelog.is_absolute() and not (root / changelog).is_file() and (workspace.cwd / changelog).is_file():
        # the upstream sqlrs' spelling: `--searchPath app --changelog-file app/db/master.xml`, the
        # changelog given from the current directory, search path prefix included
        changelog = workspace.cwd / changelog
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
        launcher_path = install.find_launcher(launcher or ConfigFile(config).get("runtime.liquibase.path"))
        version = install.version(launcher_path)
        install.check_supported(version, launcher_path)
    except UsageError as exc:
        raise ClientError(exc.message, hint=exc.hint, exit_code=exc.exit_code, code=exc.code) from None
    if not project.changesets:
        raise usage(f"{parsed.changelog}: no changesets", hint="a changelog with at least one changeSet")
    if install.find_java() is None:
        raise ClientError("Java is not installed: Liquibase needs it", exit_code=1, code="failed",
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
                      "run": {"cwd": str(workspace.cwd), "argv": [str(launcher_path)], "env": env, "params": params}})
    return steps
