"""`sqlrs init local`: choose the snapshot backend and, for btrfs/reflink, put the store on a
loopback volume (SPEC 3 and 7); the work is sqlrs.entrypoints.engine.store's (`LocalStore`).

    sqlrs init local --snapshot btrfs [--store-size 20G]   # btrfs image, mounted at the store
    sqlrs init local --snapshot reflink [--store-size 20G] # XFS (mkfs.xfs -m reflink=1) image
    sqlrs init local --snapshot copy|auto                  # only records the backend
    sqlrs init local --runtime native                      # records container.runtime

Kept light: only click at import time; the store's setup is imported inside the command.
"""

from __future__ import annotations

import json
from typing import Any

import click

from sqlrs import extensions
from sqlrs.domain.sizes import DEFAULT_VOLUME_SIZE
from sqlrs.entrypoints.cli.errors import CliError
from sqlrs.entrypoints.cli.options import Registered, runtime_choice


def _cli_error(exc: Any) -> CliError:
    """A SqlrsError from the adapters as the CLI's one-line error with its exit code and hint."""
    return CliError(exc.message, int(getattr(exc, "exit_code", 1)), exc.hint, dict(exc.details))


@click.group("init")
def init_group() -> None:
    """Set up where and how sqlrs stores its states."""


@init_group.command("local")
@click.option("--snapshot", type=Registered(extensions.SNAPSHOT_STORES), default="auto",
              show_default=True,
              help="btrfs/reflink: create and mount a loopback volume for the store (needs root); "
                   "copy/auto: only record the backend.")
@click.option("--runtime", type=runtime_choice(), help="Record the default runtime (config container.runtime).")
@click.option("--store-size", help=f"Size of the loopback volume, e.g. 20G (sparse; default {DEFAULT_VOLUME_SIZE}).")
@click.option("--force", is_flag=True,
              help="Replace a store that holds states or instances (they are removed first), "
                   "even while jobs run.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def init_local(ctx: Any, snapshot: str, runtime: str | None, store_size: str | None, force: bool,
               output: str) -> None:
    """Choose the snapshot backend; for btrfs or reflink, create a loopback volume for the store.

    \b
    Examples:
      sudo sqlrs init local --snapshot btrfs --store-size 50G
      sudo sqlrs init local --snapshot reflink        # XFS with reflink=1
      sqlrs init local --snapshot auto --runtime docker
    """
    from sqlrs.domain.errors import SqlrsError
    from sqlrs.engine_client.connection import usable_state_dir

    usable_state_dir(ctx.state_dir)  # a file or an unwritable dir: exit 2, as for every command
    try:
        from sqlrs.entrypoints.engine.store import LocalStore

        result = LocalStore(ctx.state_dir, force, ctx.note, ctx.client).run(snapshot, runtime, store_size)
    except CliError:
        raise
    except SqlrsError as exc:
        raise _cli_error(exc) from None
    except OSError as exc:  # e.g. a state dir owned by another user
        where = f" {exc.filename}" if exc.filename else ""
        raise CliError(f"cannot set up the store:{where}: {exc.strerror or exc}",
                       hint="run it as the user who owns the state directory, or with sudo") from None
    if output == "json":
        click.echo(json.dumps(result, indent=2))
        return
    backend, effective = result["snapshot"]["backend"], result["snapshot"].get("effective")
    click.echo(f"snapshot backend: {backend}" + (f" (uses {effective} here)" if effective and effective != backend
                                                 else ""))
    click.echo(f"store:            {result['store']['root']}")
    volume = result["store"].get("volume")
    if volume:
        click.echo(f"volume:           {volume['image']} ({volume['fs']}, {volume['size']}, sparse), "
                   f"{'created' if volume['created'] else 'kept'}")
    if result.get("runtime"):
        click.echo(f"runtime:          {result['runtime']}")


