"""The CLI's fast path parses like Click: its option table is checked against main.py's commands,
and argv forms are parsed both ways (sqlrs/entrypoints/cli/fast.py)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

import click
import pytest

from sqlrs.entrypoints.cli import fast
from sqlrs.entrypoints.cli.main import cli
from sqlrs.entrypoints.cli.options import Registered


def click_options(command: click.Command) -> dict[str, click.Option]:
    found: dict[str, click.Option] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for spelling in (*param.opts, *param.secondary_opts):
                found[spelling] = param
    return found


def fast_commands() -> Iterator[tuple[str, click.Command]]:
    for name in fast.OPTIONS:
        command = cli.commands.get(name)
        assert command is not None, f"fast.py handles {name!r}, which the Click CLI does not have"
        yield name, command


def check_spec(command: click.Command, spelling: str, spec: Any, option: click.Option) -> None:
    name, constant, choices = spec
    assert option.name == name, spelling
    assert not option.multiple and not option.count and option.callback is None and not option.is_eager, spelling
    assert option.envvar is None, f"{spelling} reads an environment variable the fast path does not"
    if constant is None:
        assert not option.is_flag and option.nargs == 1, spelling
        if isinstance(option.type, Registered):  # names from the registry, read when needed by both
            assert choices == option.type.group, spelling
        else:
            wanted = tuple(option.type.choices) if isinstance(option.type, click.Choice) else None
            assert choices == wanted, spelling
    else:
        assert option.is_flag, spelling
        given = [spelling] + ["x"] * len(fast.ARGUMENTS.get(str(command.name), ()))
        stored = command.make_context(str(command.name), given, obj=None).params[name]
        assert constant == stored, spelling


def test_the_option_table_matches_the_click_commands() -> None:
    for name, command in fast_commands():
        options = click_options(command)
        for spelling, spec in fast.OPTIONS[name].items():
            assert spelling in options, f"{name} {spelling}: no such Click option"
            check_spec(command, spelling, spec, options[spelling])
        # every parameter is known: an option added in main.py must be added (or left to Click) here
        arguments = [p for p in command.params if isinstance(p, click.Argument)]
        named = {p.name for p in command.params if isinstance(p, click.Option) and p.name != "help"}
        assert named == set(fast.DEFAULTS[name]), name
        if name in fast.PASSTHROUGH:
            assert [(a.name, a.nargs) for a in arguments] == [(fast.PASSTHROUGH[name], -1)]
            assert command.context_settings.get("ignore_unknown_options") is True
            assert command.context_settings.get("allow_interspersed_args") is False
            assert set(command.get_help_option_names(command.make_context(name, [], obj=None))) == {"--help"}
        else:
            assert [(a.name, a.nargs) for a in arguments] == [(n, 1) for n in fast.ARGUMENTS[name]]
            assert not command.context_settings.get("ignore_unknown_options")
        # the defaults: what Click passes when nothing is given
        given = ["x"] * len(fast.ARGUMENTS.get(name, ()))
        context = command.make_context(name, given, obj=None)
        defaults = {k: v for k, v in context.params.items() if k in fast.DEFAULTS[name]}
        assert defaults == fast.DEFAULTS[name], name
    options = click_options(cli)
    for spelling, spec in fast.GLOBAL_OPTIONS.items():
        name, constant, choices = spec
        option = options[spelling]
        assert option.name == name and not option.multiple and choices is None
        assert (constant is None) == (not option.is_flag)
    assert {p.name for p in cli.params if p.name not in ("help", "version")} == set(fast.GLOBAL_DEFAULTS)


# -- argv parsed both ways -------------------------------------------------------------------------
class Captured(Exception):
    pass


def click_parse(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(command, global values, command values) as Click parses argv; raises on a Click error."""
    seen: dict[str, Any] = {}

    def capture(name: str) -> Any:
        def callback(**kwargs: Any) -> None:
            obj = click.get_current_context().obj
            seen.update(command=name, values=kwargs, top={"state_dir": obj._state_dir, "quiet": obj.quiet,
                                                          "workspace": obj.workspace, "timeout": obj.timeout})
            raise Captured

        return callback

    for name, command in fast_commands():
        monkeypatch.setattr(command, "callback", capture(name))
    try:
        cli.main(argv, prog_name="sqlrs", standalone_mode=False)
    except Captured:
        return seen["command"], seen["top"], seen["values"]
    raise AssertionError(f"Click ran no fast command for {argv}")


def fast_parse(argv: list[str]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    command, top, values = fast.parse(argv)
    if top["state_dir"] is not None:
        from pathlib import Path

        top = {**top, "state_dir": Path(str(top["state_dir"])).absolute()}
    return command, top, values


ACCEPTED = [
    ["status"], ["status", "-o", "json"], ["status", "--json"], ["status", "--cache"], ["-q", "status"],
    ["--state-dir", "/tmp/x", "status"], ["--state-dir=rel/dir", "--quiet", "ls"],
    ["--workspace", "/tmp", "--timeout", "15m", "status"], ["--timeout=30s", "ls"],
    ["ls"], ["ls", "--states"], ["ls", "--names", "-o", "json"], ["ls", "--jobs", "--output=table"],
    ["rm", "abc"], ["rm", "-o", "json", "feedc0ffee00"], ["rm", "--", "-odd-"],
    ["run:psql", "--instance", "dev", "--", "-c", "select 1"], ["run:psql", "--instance=dev", "-c", "select 1"],
    ["run:psql", "-X", "--instance", "dev", "-f", "a.sql", "--instance", "y"],
    ["run:psql", "--allow-outside", "--instance", "dev", "-", "--x"],
    ["prepare:psql", "--", "-f", "schema.sql"], ["prepare:psql", "--name", "dev", "--reuse", "--", "-f", "a.sql"],
    ["prepare:psql", "--runtime", "native", "--image", "img:1", "--ttl", "15m", "-f", "a.sql", "-c", "x"],
    ["prepare:psql", "--no-watch", "--allow-outside", "--fresh", "--name=n", "-1", "-f", "a.sql"],
]
FALLBACK = [
    [], ["--help"], ["--version"], ["-h"], ["status", "--help"], ["status", "--bogus"], ["status", "-o", "yaml"],
    ["status", "extra"], ["ls", "--tree"], ["ls", "-ojson"], ["ls", "--json=1"], ["rm"], ["rm", "a", "b"],
    ["rm", "--force", "x"], ["rm", "--dry-run", "x"], ["ls", "--states", "--names"], ["-q", "-q", "ls"],
    ["--state-dir", "", "ls"], ["--state-dir"], ["config", "get"], ["engine", "status"], ["plan:psql", "-f", "a"],
    ["prepare:lb", "--", "x"], ["run:pgbench", "--instance", "x"], ["watch", "abc"],
    ["prepare:psql", "--", "-f", "a.sql", "run:psql", "--", "-c", "select 1"],
    ["prepare:psql", "--runtime", "lxc", "--", "-f", "a.sql"], ["prepare:psql", "--watch", "--no-watch"],
    ["prepare:psql", "--name"], ["prepare:psql", "--name", "--reuse"], ["run:psql", "--instance"],
    ["run:psql", "--allow-outside=yes", "--", "x"], ["status", "--cache", "--cache"],
]


@pytest.mark.parametrize("argv", ACCEPTED, ids=" ".join)
def test_accepted_forms_parse_as_click_parses_them(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SQLRS_STATE_DIR", raising=False)
    monkeypatch.setenv("SQLRS_WORKSPACE", "")  # --workspace exports it: recorded, so restored afterwards
    monkeypatch.delenv("SQLRS_WORKSPACE")
    assert fast_parse(argv) == click_parse(argv, monkeypatch)


@pytest.mark.parametrize("argv", FALLBACK, ids=lambda a: " ".join(a) or "(none)")
def test_other_forms_fall_back_to_click(argv: list[str]) -> None:
    with pytest.raises(fast.Fallback):
        fast.parse(argv)


VOCABULARY = {
    "run:psql": ["--instance", "dev", "--instance=x", "--allow-outside", "--", "-c", "select 1", "-X", "--foo",
                 "-", "-f", "--allow-outside=1", "--help", "-q"],
    "prepare:psql": ["--name", "n", "--reuse", "--fresh", "--no-watch", "--watch", "--ttl", "90s", "--runtime",
                     "native", "docker", "--image=i", "--", "-f", "a.sql", "-c", "--bogus", "x", "run:psql"],
    "ls": ["--states", "--instances", "-o", "json", "--json", "--tree", "--", "x", "-q", "--output=json"],
    "rm": ["x", "-o", "json", "--force", "--", "-y", "--output", "table"],
    "status": ["--cache", "-o", "json", "--json", "x", "--"],
}


@pytest.mark.parametrize("command", sorted(VOCABULARY))
def test_random_argv_either_falls_back_or_parses_like_click(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the fast path accepts, Click parses to the same values."""
    monkeypatch.delenv("SQLRS_STATE_DIR", raising=False)
    words = VOCABULARY[command]
    rng = random.Random(13)
    forms = [list(p) for n in range(3) for p in itertools.product(words, repeat=n)]
    forms += [[rng.choice(words) for _ in range(rng.randint(3, 7))] for _ in range(400)]
    accepted = 0
    for tail in forms:
        for prefix in ([], ["-q"], ["--state-dir", "d"]):
            argv = [*prefix, command, *tail]
            try:
                ours = fast_parse(argv)
            except fast.Fallback:
                continue
            accepted += 1
            try:
                theirs = click_parse(argv, monkeypatch)
            except click.ClickException as exc:
                raise AssertionError(f"{argv}: fast path accepted what Click refuses: {exc}") from None
            assert ours == theirs, argv
    assert accepted > 20


@pytest.mark.parametrize(("argv", "split"), [
    (["--workspace", "w", "--timeout", "15m", "prepare", "chinook", "run:psql", "--", "-c", "x"], 6),
    (["-q", "prepare:psql", "--", "-f", "a.sql", "run:psql"], 5),
    (["--state-dir=/x", "prepare", "app", "run", "smoke"], 3),  # after an alias stage, any `run`
    (["prepare:exec", "--", "./migrate.sh", "run", "up"], None),  # no smoke.run.s9s.yaml: an argument
    (["diff", "--from-ref", "a", "--to-ref", "b", "prepare:psql", "--", "-f", "x", "run:psql"], None),
    (["alias", "create", "x", "prepare:psql", "--", "-f", "a.sql"], None),
])
def test_composites_are_found_where_the_command_is_a_prepare(argv: list[str], split: int | None) -> None:
    assert fast.composite_split(argv) == split
