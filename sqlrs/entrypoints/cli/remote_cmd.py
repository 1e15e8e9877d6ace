"""`sqlrs push` and `sqlrs pull`: states shared through an OCI registry (docs/remote-cache.md).

Both are engine jobs: the engine packs, uploads, downloads and verifies; the CLI follows the
job's events (progress on stderr) and prints the result on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from sqlrs.entrypoints.cli.options import runtime_choice


class TransferProgress:
    """The usual progress, plus a line per blob every few seconds: bytes moved of the total."""

    EVERY = 2.0

    def __init__(self, inner: Any, quiet: bool):
        self.inner = inner
        self.quiet = quiet
        self.last: dict[str, float] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        data = event.get("data", {})
        if event.get("type") == "transfer" and not self.quiet:
            key = f"{data.get('direction')}{data.get('digest')}"
            done, total = int(data.get("bytes", 0)), int(data.get("total", 0)) or 1
            now = time.monotonic()
            if done >= total or now - self.last.get(key, 0.0) >= self.EVERY:
                self.last[key] = now
                self.inner.pause()
                sys.stderr.write(f"{data.get('direction')} {str(data.get('state_id'))[:12]}: "
                                 f"{done / 1048576:.1f} of {total / 1048576:.1f} MiB ({100 * done // total}%)\n")
                sys.stderr.flush()
                self.inner.resume()
        self.inner(event)

    def pause(self) -> None:
        self.inner.pause()

    def resume(self) -> None:
        self.inner.resume()

    def close(self) -> None:
        self.inner.close()


def _run(ctx: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    from sqlrs.entrypoints.cli.watching import make_progress, watch_job

    created = ctx.client().call("POST", path, body)
    return watch_job(ctx, created["job_id"], TransferProgress(make_progress(ctx.quiet), ctx.quiet))


@click.command("push")
@click.argument("state")
@click.argument("ref", required=False)
@click.option("--image", help="The image the state was prepared with (docker/podman), when not dbms.image.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_obj
def push_cmd(ctx: Any, state: str, ref: str | None, image: str | None, output: str) -> None:
    """Push a state (id or prefix), or the state of an instance (id or name), to an OCI registry.

    \b
    REF is HOST[:PORT]/REPO[:TAG]; default: config cache.remote, tagged with the state id.
    Every state of the chain goes as its own layer, with a manifest tagged with its id, so a
    state whose parent is already in the registry uploads one layer. Prints the reference.
    Credentials: SQLRS_REGISTRY_USERNAME/SQLRS_REGISTRY_PASSWORD in the engine's environment,
    else ~/.docker/config.json ($DOCKER_CONFIG) as `docker login` writes it.

    \b
    Examples:
      sqlrs push dev                                  # instance 'dev' -> cache.remote
      sqlrs push 3f2a9c 127.0.0.1:5000/team/db:sakila
    """
    result = _run(ctx, "/v1/push-jobs", {"state": state, "target": ref, "image": image})
    if output == "json":
        click.echo(json.dumps(result, indent=2))
        return
    ctx.note(f"pushed state {result['state_id'][:12]}: {len(result['uploaded'])} layer(s) uploaded, "
             f"{len(result['reused'])} already there")
    click.echo(result["reference"])


@click.command("pull")
@click.argument("ref")
@click.option("--runtime", type=runtime_choice(),
              help="The runtime the state is for (default: config container.runtime, else auto).")
@click.option("--image", help="Container image (docker/podman runtimes; default: config dbms.image).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_obj
def pull_cmd(ctx: Any, ref: str, runtime: str | None, image: str | None, output: str) -> None:
    """Pull a state with its chain from an OCI registry into the local cache; prints its id.

    \b
    REF is HOST[:PORT]/REPO:TAG (or @sha256:DIGEST), or a state id of cache.remote. Only a
    state built on the same PostgreSQL (image digest or native build) as this engine's runtime
    is accepted; every blob is verified before the state is committed.

    \b
    Examples:
      sqlrs pull 127.0.0.1:5000/team/db:sakila
      sqlrs prepare:psql -- -f schema.sql            # with cache.remote set, pulls instead of building
    """
    result = _run(ctx, "/v1/pull-jobs", {"ref": ref, "runtime": runtime, "image": image})
    if output == "json":
        click.echo(json.dumps(result, indent=2))
        return
    ctx.note(f"pulled {len(result['pulled'])} state(s) of {result['layers']} from {result['reference']}")
    click.echo(result["state_id"])
