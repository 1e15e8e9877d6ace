"""`sqlrs snapshot INSTANCE [--name NAME]`: save a running instance's data as a new state."""

from __future__ import annotations

import json
from typing import Any

import click

SNAPSHOT_HELP = """Save a running instance's current data as a new state.

\b
The instance keeps running and its clients stay connected (the copy is made
online, like a base backup). The new state is a child of the instance's state,
of kind `snapshot`; the last stdout line is its id (-o json: the state's JSON).
Start new instances from it, or build more steps on it:
  sqlrs prepare:psql --from STATE
  sqlrs prepare:psql --from STATE -- -f more.sql
Snapshots are never evicted from the cache (they cannot be rebuilt); remove
them with `sqlrs rm STATE`.

\b
Examples:
  sqlrs snapshot dev --name before-migration
  STATE=$(sqlrs snapshot dev) && sqlrs prepare:psql --from "$STATE"
"""


@click.command("snapshot", help=SNAPSHOT_HELP)
@click.argument("instance")
@click.option("--name", help="A label kept with the state (its source: 'snapshot of ID (NAME)').")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def snapshot_command(ctx: Any, instance: str, name: str | None, output: str) -> None:
    ctx.note(f"saving instance {instance} as a new state...")
    body: dict[str, Any] = {"instance": instance}
    if name is not None:
        body["name"] = name
    state = ctx.client().call("POST", "/v1/snapshots", body, timeout=None)
    if output == "json":
        click.echo(json.dumps(state, indent=2, default=str))
        return
    ctx.note(f"saved: {state['source']}, {state['size_bytes']} bytes, in {state['build_seconds']}s")
    click.echo(state["id"])
