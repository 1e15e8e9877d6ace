"""`sqlrs status`, `ls` and `rm` (the bodies are listing.py's, the fast path's too)."""

from __future__ import annotations

import click

from sqlrs.entrypoints.cli import listing
from sqlrs.entrypoints.cli.options import json_flag, output_option
from sqlrs.entrypoints.cli.output import Ctx


@click.command("ls")
@click.option("--states", "what", flag_value="states", help="Cached states.")
@click.option("--instances", "what", flag_value="instances", help="Running copies of states (default).")
@click.option("--names", "what", flag_value="names", help="Names bound to instances.")
@click.option("--jobs", "what", flag_value="jobs", help="Prepare jobs.")
@click.option("--tree", is_flag=True, help="Draw states and their instances as a lineage tree.")
@output_option
@json_flag
@click.pass_obj
def ls(ctx: Ctx, what: str | None, tree: bool, output: str, as_json: bool) -> None:
    """List instances (default), states, names or jobs."""
    listing.ls(ctx, what, tree, output, as_json)


@click.command("rm")
@click.argument("ref")
@click.option("--recurse", is_flag=True, help="Also remove states built on it and their instances.")
@click.option("--force", is_flag=True, help="Remove even when clients are connected (an instance) or a "
              "running job uses it (a state).")
@click.option("--dry-run", is_flag=True, help="Show what would be removed.")
@output_option
@click.pass_obj
def rm(ctx: Ctx, ref: str, recurse: bool, force: bool, dry_run: bool, output: str) -> None:
    """Remove an instance (by id, prefix or name) or a state. Idempotent."""
    listing.rm(ctx, ref, recurse, force, dry_run, output)


@click.command("status")
@click.option("--cache", is_flag=True, help="Include per-state cache details.")
@output_option
@json_flag
@click.pass_obj
def status(ctx: Ctx, cache: bool, output: str, as_json: bool) -> None:
    """Engine, runtime, snapshot backend, cache usage and warnings."""
    listing.status(ctx, cache, output, as_json)
