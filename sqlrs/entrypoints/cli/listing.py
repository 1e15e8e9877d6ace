"""The bodies of `sqlrs status`, `ls` and `rm`: standard library only (the fast path runs them
too; Click's commands in inventory_cmd.py call them with every option)."""

from __future__ import annotations

import sys

from sqlrs.engine_client.errors import EXIT_NOT_FOUND, EXIT_USAGE, ClientError, usage
from sqlrs.entrypoints.cli.output import echo, emit_json, human_bytes, short, table

TYPE_CHECKING = False  # typing is not imported on the CLI's hot path (sqlrs/entrypoints/cli/fast.py)
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from sqlrs.engine_client.connection import EngineClient
    from sqlrs.entrypoints.cli.output import Ctx


# -- status --------------------------------------------------------------------------------------
def status(ctx: Ctx, cache: bool, output: str, as_json: bool) -> None:
    """Engine, runtime, snapshot backend, cache usage, warm instances and warnings."""
    data = ctx.client().call("GET", "/v1/status" + ("?cache=true" if cache else ""))
    if as_json or output == "json":
        emit_json(data)
        return
    engine, runtime, snap, cache_info = data["engine"], data["runtime"], data["snapshot"], data["cache"]
    echo(f"engine:    {engine['version']} pid {engine['pid']}, up {engine['uptime_seconds']}s, "
         f"{engine['running_jobs']} running job(s); state dir {engine['state_dir']}")
    echo(f"runtime:   {runtime.get('name') or 'none'} — {runtime.get('reason')}")
    for probe in data["runtimes"]:
        mark = "ok " if probe["available"] else "no "
        echo(f"           {mark}{probe['name']}: {probe['reason']}")
    echo(f"snapshots: {snap['backend']} at {snap['root']} ({human_bytes(snap['free_bytes'])} free)")
    cap = cache_info.get("max_bytes") or 0
    source = " (the default cap)" if cache_info.get("max_bytes_source") == "default" else ""
    echo(f"cache:     {cache_info['states']} states, {human_bytes(cache_info['size_bytes'])}"
         + (f" of {human_bytes(cap)}{source}" if cap else " (no cap)") + f"; {data['instances']} instance(s)")
    footprint_status(data.get("footprint"), data.get("demand"))
    warm_status(data.get("warm"))
    remote = data.get("remote")
    if remote:
        echo(f"remote:    {remote['repository']} (prepare pulls cached states"
             + ("; pushes every state it builds" if remote["push"] else "") + ")")
    for warning in data.get("warnings", []):
        echo(f"WARNING:   {warning}", err=True)
    if cache:
        table([[short(s["id"]), s["source"], human_bytes(s["size_bytes"]), f"{s['build_seconds']}s",
                str(s.get("hits", 0)), s["last_used_at"][:19]] for s in data["cache"].get("states_detail", [])],
              ["STATE", "SOURCE", "SIZE", "BUILD", "HITS", "LAST USED"])


def footprint_status(footprint: dict[str, Any] | None, demand: dict[str, Any] | None) -> None:
    """The `servers:` and `disk:` lines of `sqlrs status`: what the engine costs the machine now."""
    if not footprint:
        return
    servers, memory, disk = footprint["servers"], footprint.get("memory"), footprint.get("disk")
    used = ""
    if memory:
        pss = f"PSS {human_bytes(memory['pss_bytes'])}, " if memory.get("pss_bytes") is not None else ""
        used = f", {pss}RSS {human_bytes(memory['rss_bytes'])} in {memory['processes']} processes"
    sessions = f"; {demand['sessions']} test session(s) open" if demand and demand.get("sessions") else ""
    echo(f"servers:   {servers['total']} up ({servers['warm']} warm, {servers['shared']} shared, "
         f"{servers['user']} yours){used}; {footprint['copies_ready']} database copies ready{sessions}")
    if disk:
        echo(f"disk:      {human_bytes(disk['total_bytes'])}: states {human_bytes(disk['states_bytes'])}, "
             f"instances {human_bytes(disk['instances_bytes'])}, shared servers and their databases "
             f"{human_bytes(disk['shared_bytes'])} (measured {disk['measured_seconds_ago']:.0f}s ago)")


def warm_status(warm: dict[str, Any] | None) -> None:
    """The `warm:` lines of `sqlrs status`: started instances kept ready, per state."""
    if not warm:
        return
    if not warm["enabled"]:
        echo("warm:      off (sqlrs config set warm.enabled true)")
        return
    echo(f"warm:      {warm['instances']} instance(s) ready, {warm['starting']} starting, for "
         f"{len(warm['states'])} state(s) (at most {warm['per_state']} per state, {warm['max_states']} "
         f"states, {warm['max_instances']} in all)")
    for item in warm["states"]:
        pool = f", pool of {item['pool_size']}" if item["pool_size"] else ""
        echo(f"           {short(item['state_id'])}: {item['ready']} ready{pool} "
             f"({', '.join(item['instance_ids']) or '-'})")


# -- ls ------------------------------------------------------------------------------------------
def ls(ctx: Ctx, what: str | None, tree: bool, output: str, as_json: bool) -> None:
    """Instances (default), states, names or jobs; or states and instances as a lineage tree."""
    client = ctx.client()
    json_out = as_json or output == "json"
    if tree:
        states = client.call("GET", "/v1/states")
        instances = client.call("GET", "/v1/instances")
        if json_out:
            emit_json({"states": states, "instances": instances})
        else:
            draw_tree(states, instances)
        return
    what = what or "instances"
    data = client.call("GET", f"/v1/{'prepare-jobs' if what == 'jobs' else what}")
    if json_out:
        emit_json(data)
        return
    if what == "instances":
        table([[i["id"], i.get("name") or "-", short(i["state_id"]), i["runtime"], i["status"], expires(i), i["dsn"]]
               for i in data], ["ID", "NAME", "STATE", "RUNTIME", "STATUS", "EXPIRES", "DSN"])
    elif what == "states":
        table([[short(s["id"]), short(s.get("parent_id")), s["kind"], s["source"], human_bytes(s["size_bytes"]),
                f"{s['build_seconds']}s", str(s.get("hits", 0)), str(s["instances"]), s["last_used_at"][:19]]
               for s in data], ["ID", "PARENT", "KIND", "SOURCE", "SIZE", "BUILD", "HITS", "INSTANCES", "LAST USED"])
    elif what == "names":
        table([[n["name"], n["instance_id"], n["created_at"][:19]] for n in data], ["NAME", "INSTANCE", "CREATED"])
    else:
        table([[j["id"], j["kind"], j["status"], j["created_at"][:19], (j.get("finished_at") or "-")[:19],
                ((j.get("error") or {}).get("message") or "")[:60]] for j in data],
              ["ID", "KIND", "STATUS", "CREATED", "FINISHED", "ERROR"])
    if not data:
        ctx.note(f"no {what}")


def expires(instance: dict[str, Any]) -> str:
    """The EXPIRES column: time left of an idle TTL, 'in use' while clients are connected."""
    if instance.get("pooled"):
        return "pool spare"
    left = instance.get("expires_in_seconds")
    if left is None:
        return "-"
    if instance.get("connections"):
        return f"in use (ttl {int(instance.get('ttl_seconds') or 0)}s)"
    seconds = int(left)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def draw_tree(states: list[dict[str, Any]], instances: list[dict[str, Any]]) -> None:
    children: dict[str | None, list[dict[str, Any]]] = {}
    for state in states:
        children.setdefault(state.get("parent_id"), []).append(state)
    by_state: dict[str, list[dict[str, Any]]] = {}
    for instance in instances:
        by_state.setdefault(instance["state_id"], []).append(instance)

    def walk(state: dict[str, Any], prefix: str, last: bool, root: bool) -> None:
        branch = "" if root else ("└── " if last else "├── ")
        echo(f"{prefix}{branch}{short(state['id'])} {state['source']} ({human_bytes(state['size_bytes'])})")
        inner = prefix + ("" if root else ("    " if last else "│   "))
        kids = children.get(state["id"], [])
        leaves = by_state.get(state["id"], [])
        for index, instance in enumerate(leaves):
            is_last = index == len(leaves) - 1 and not kids
            label = f"{instance['id']}" + (f" [{instance['name']}]" if instance.get("name") else "")
            echo(f"{inner}{'└── ' if is_last else '├── '}● {label} {instance['status']} :{instance['port']}")
        for index, kid in enumerate(kids):
            walk(kid, inner, index == len(kids) - 1, False)

    for root in children.get(None, []):
        walk(root, "", True, True)


# -- rm ------------------------------------------------------------------------------------------
def rm(ctx: Ctx, ref: str, recurse: bool, force: bool, dry_run: bool, output: str) -> None:
    """Remove an instance (by id, prefix or name) or a state. Idempotent."""
    client = ctx.client()
    instance = lookup(client, f"/v1/instances/{ref}")
    state = lookup(client, f"/v1/states/{ref}") if all(c in "0123456789abcdef" for c in ref) else None
    if instance and state:
        raise usage(f"{ref!r} matches both instance {instance['id']} and state {short(state['id'])}",
                    hint="give more characters")
    if instance:
        flags = "&".join(f"{k}=true" for k, v in (("force", force), ("dry_run", dry_run)) if v)
        try:
            result = client.call("DELETE", f"/v1/instances/{instance['id']}" + (f"?{flags}" if flags else ""))
        except ClientError as error:
            if error.code == "in_use":
                refuse_in_use(error)
            raise
    elif state:
        flags = "&".join(f"{k}=true" for k, v in (("recurse", recurse), ("force", force), ("dry_run", dry_run)) if v)
        result = client.call("DELETE", f"/v1/states/{state['id']}" + (f"?{flags}" if flags else ""))
    else:
        result = {"dry_run": dry_run, "removed": [], "not_found": True}
    if output == "json":
        emit_json(result)
        return
    if result.get("not_found"):
        ctx.note(f"nothing to remove: no instance, name or state matches {ref!r}")
        return
    verb = "would remove" if dry_run else "removed"
    for item in result["removed"]:
        label = item["id"] if item["kind"] == "instance" else short(item["id"])
        echo(f"{verb} {item['kind']} {label}" + (f" ({item['name']})" if item.get("name") else ""))
    for item in result.get("refused", []):
        echo(f"would refuse to remove {item['kind']} {item['id']}" + (f" ({item['name']})" if item.get("name")
             else "") + f": {len(item['clients'])} client(s) connected (--force removes it anyway)")
        for line in client_lines(item["clients"]):
            echo(line)


def client_lines(clients: list[dict[str, Any]]) -> list[str]:
    """Connected clients, one per line: pid, user, application, address, connected since."""
    return [f"  pid {c['pid']}  user {c.get('user') or '-'}  application {c.get('application_name') or '-'}"
            f"  from {c.get('client_addr') or 'local socket'}  since {(c.get('backend_start') or '-')[:19]}"
            for c in clients]


def refuse_in_use(error: ClientError) -> NoReturn:
    """`rm INSTANCE` with clients connected: exit 1, the clients listed under the error line."""
    echo(f"sqlrs: error: {error.message}", err=True)
    for line in client_lines(error.details.get("clients") or []):
        echo(line, err=True)
    if error.hint:
        echo(f"hint: {error.hint}", err=True)
    sys.exit(error.exit_code)


def lookup(client: EngineClient, path: str) -> dict[str, Any] | None:
    """GET an instance or state; None when there is none (or the ref cannot be one)."""
    try:
        data: dict[str, Any] = client.call("GET", path)
        return data
    except ClientError as exc:
        if exc.exit_code == EXIT_NOT_FOUND:
            return None
        if exc.exit_code == EXIT_USAGE and "invalid" in exc.message:
            return None
        raise
