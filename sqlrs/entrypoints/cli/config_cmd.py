"""`sqlrs config get|set|unset` and `sqlrs engine start|stop|status`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from sqlrs.engine_client.errors import EXIT_ENGINE, ClientError, raise_engine_error, usage
from sqlrs.entrypoints.cli.options import output_option
from sqlrs.entrypoints.cli.output import Ctx, echo, emit_json, table


@click.group("config")
def config_group() -> None:
    """Read and change engine configuration (see `sqlrs config get` for all keys)."""


@config_group.command("get")
@click.argument("key", required=False)
@output_option
@click.pass_obj
def config_get(ctx: Ctx, key: str | None, output: str) -> None:
    """Print one key's value, or every key with its value and source.

    With `-o json`, both print {KEY: {"value": ..., "source": ...}}.
    """
    data = ctx.client().call("GET", "/v1/config")
    if key is not None:
        if key not in data:
            raise usage(f"unknown config key {key!r}", hint="keys: " + ", ".join(sorted(data)))
        if output != "json":
            echo(str(data[key]["value"]))
            return
        data = {key: data[key]}  # the listing's shape, cut to the one key
    if output == "json":
        emit_json(data)
        return
    table([[k, json.dumps(v["value"]), v["source"]] for k, v in sorted(data.items())], ["KEY", "VALUE", "SOURCE"])


@config_group.command("set")
@click.argument("key")
@click.argument("value")
@click.pass_obj
def config_set(ctx: Ctx, key: str, value: str) -> None:
    """Set KEY to VALUE (sizes like 10G are accepted for byte counts).

    Runtime settings are checked and apply to the next prepare; store and engine settings apply
    when the engine restarts (you are told so).
    """
    _patch_config(ctx, {key: value})


@config_group.command("unset")
@click.argument("key")
@click.pass_obj
def config_unset(ctx: Ctx, key: str) -> None:
    """Return KEY to its default."""
    _patch_config(ctx, {key: None})


def _patch_config(ctx: Ctx, changes: dict[str, Any]) -> None:
    response = ctx.client().request("PATCH", "/v1/config", changes)
    data = response.json()
    if response.status != 200:
        raise_engine_error(response.status, data)
    waiting = response.headers.get("x-sqlrs-restart-needed")
    if waiting:
        ctx.note(f"note: {waiting} takes effect when the engine restarts: sqlrs engine stop "
                 "(running instances keep running)")


@click.group("engine")
def engine_group() -> None:
    """Start, stop or inspect the engine process (it also starts on demand)."""


@engine_group.command("start")
@click.pass_obj
def engine_start(ctx: Ctx) -> None:
    """Start the engine if it is not running; print its endpoint."""
    client = ctx.client()
    client.call("GET", "/v1/health")  # finds or spawns the engine for real
    echo(client.endpoint)


@engine_group.command("stop")
@click.pass_obj
def engine_stop(ctx: Ctx) -> None:
    """Stop the engine (running instances keep running and are re-adopted later)."""
    from sqlrs.engine_client.connection import ENGINE_STOP_TIMEOUT, live_engine, shutdown_engine

    info = live_engine(ctx.state_dir)
    if info is None:
        ctx.note("engine is not running")
        return
    pid = int(info.get("pid", 0))
    if not shutdown_engine(ctx.client(spawn=False), pid):
        raise ClientError(f"the engine (pid {pid}) did not exit within {ENGINE_STOP_TIMEOUT:.0f}s",
                       hint=f"see {ctx.state_dir / 'engine.log'}; kill it with `kill {pid}`")
    ctx.note(f"engine (pid {pid}) stopped")


@engine_group.command("status")
@output_option
@click.pass_obj
def engine_status(ctx: Ctx, output: str) -> None:
    """Say whether an engine serves the state directory, without starting one."""
    from sqlrs.engine_client.connection import live_engine

    info = live_engine(ctx.state_dir)
    data = {"running": info is not None, "state_dir": str(ctx.state_dir)}
    if info:
        data.update({k: info[k] for k in ("endpoint", "pid", "version", "instance_id") if k in info})
    if output == "json":
        emit_json(data)
    elif info:
        echo(f"running: pid {info['pid']}, {info['endpoint']}, version {info['version']}")
    else:
        echo("not running")
    if not info:
        sys.exit(EXIT_ENGINE)
