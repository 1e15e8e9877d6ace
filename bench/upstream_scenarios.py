"""The upstream sqlrs' release scenarios, run against this sqlrs as the upstream runs them.

The upstream (github.com/kimak-irmagi/taidon, Apache-2.0) gates its releases on end-to-end
scenarios: `test/e2e/release/scenarios.json` lists them, `scripts/e2e-release/run-scenario.mjs`
stages a workspace from `examples/` and runs

    sqlrs --timeout 15m --workspace W prepare ALIAS run:psql -- -At -f .e2e-query.sql

and `normalize-output.mjs` / `compare-golden.mjs` check its stdout against a golden file. This
script takes a copy of that repository (a bare Git mirror: `--upstream`), and:

1. checks out the scenario files from it (a file whose blob the mirror lacks is written empty,
   and listed) and checks the upstream's alias files with `sqlrs alias check`; fetches the
   example data its manifest
   (`scripts/external/manifest.yaml`) lists, each sha256-checked against the manifest, from local
   copies: Git mirrors of the source repositories (`--mirrors`, default /work/.mirror, searched
   through their history for a blob with the manifest's sha256) or files (`--sources`). A file no
   copy has gets a *stand-in* (STAND_INS: what it is and why), recorded as such;
2. for each scenario, stages the workspace and builds the command line with the upstream's own
   code (`stageScenarioWorkspace`, `buildPrepareFlowCommandPrefix` of run-scenario.mjs, run by
   node), runs the flow twice (cold, then cached: the runner's `--flow-runs 2`), and checks each
   stdout with the upstream's own normalize-output.mjs and compare-golden.mjs;
3. runs cache-pressure-chinook as run-cache-pressure-scenario.mjs does, with this sqlrs' status
   fields and config keys (cache.capacity.max_bytes, cache.capacity.reserve_bytes).

In place of the upstream's `sqlrs init local ...` (which records its engine and store in the
workspace's `.sqlrs/config.yaml`), each scenario gets a state directory of its own and a
workspace config with the upstream's bootstrap superuser (`postgres.superuser: sqlrs`,
docs/decisions/0011-bootstrap-superuser.md); `--container-runtime` is the runner's
`config set container.runtime`. Results (per scenario: result.json, the logs, timings) go to
`--out`; a summary table with the cold and cached wall times is printed.

    .venv/bin/python bench/upstream_scenarios.py --upstream /work/.mirror/kimak-irmagi+taidon/repo

Needs git, node (the upstream's scripts) and the runtime's PostgreSQL; `prepare:lb` needs
Liquibase and Java.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
SQLRS = Path(sys.executable).parent / "sqlrs"
SCENARIOS = ("hp-psql-chinook", "hp-psql-sakila", "hp-lb-jhipster", "cache-pressure-chinook")
# the parts of the upstream repository the scenarios use
TREES = ("examples", "test/e2e/release", "scripts/e2e-release", "scripts/external")
# manifest sources no local copy has: (file, what it is)
STAND_INS = {
    "sakila-postgres-data": (
        Path("/work/shared/datasets/sakila/2-postgres-sakila-insert-data-using-copy.sql"),
        "jOOQ/sakila postgres-sakila-insert-data-using-copy.sql (commit e089a5b): the Sakila rows sakiladb's "
        "2-postgres-sakila-insert-data.sql inserts, as COPY ... FROM stdin (sakiladb/postgres derives its files "
        "from jOOQ/sakila; the mirror here lacks that large blob)"),
}
SUPERUSER_CONFIG = "# written by bench/upstream_scenarios.py in place of the upstream's `sqlrs init`\n" \
                   "postgres:\n  superuser: sqlrs\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


# -- the upstream's repository -----------------------------------------------------------------------
def checkout(mirror: Path, target: Path) -> tuple[str, list[str]]:
    """The upstream's HEAD (TREES only) into `target`: its commit, and the files whose blob the
    mirror lacks (large data files). Those are written empty: the tree's shape is the upstream's
    (`alias check` reads only that they exist); the manifest's files are fetched over them."""
    commit = run(["git", "--git-dir", str(mirror), "rev-parse", "HEAD"]).stdout.strip()
    listing = run(["git", "--git-dir", str(mirror), "ls-tree", "-r", "HEAD", "--", *TREES]).stdout.splitlines()
    absent = []
    for line in listing:
        meta, path = line.split("\t", 1)
        _, kind, blob = meta.split()
        if kind != "blob":
            continue
        data = subprocess.run(["git", "--git-dir", str(mirror), "cat-file", "blob", blob], capture_output=True,
                              check=False)
        out = target / path
        out.parent.mkdir(parents=True, exist_ok=True)
        if data.returncode != 0:
            absent.append(path)
        out.write_bytes(data.stdout if data.returncode == 0 else b"")
    return commit, absent


class Fetcher:
    """Manifest sources from local copies, sha256-checked."""

    def __init__(self, mirrors: Path, sources: list[Path]):
        self.mirrors = mirrors
        self.by_sha: dict[str, Path] = {}
        for directory in sources:
            for path in sorted(directory.rglob("*")):
                if path.is_file():
                    self.by_sha.setdefault(sha256(path.read_bytes()), path)

    def from_mirror(self, url: str, wanted: str) -> tuple[bytes, str] | None:
        prefix = "https://raw.githubusercontent.com/"
        if not url.startswith(prefix):
            return None
        owner, repo, _branch, path = url[len(prefix):].split("/", 3)
        git_dir = self.mirrors / f"{owner}+{repo}" / "repo"
        if not git_dir.is_dir():
            return None
        for commit in run(["git", "--git-dir", str(git_dir), "rev-list", "--all", "--", path]).stdout.split():
            blob = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"{commit}:{path}"], capture_output=True,
                                  check=False)
            if blob.returncode == 0 and sha256(blob.stdout) == wanted:
                return blob.stdout, f"mirror {owner}/{repo} commit {commit[:12]}:{path}"
        return None

    def fetch(self, name: str, source: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        wanted = source.get("sha256", "")
        record: dict[str, Any] = {"source": name, "url": source["url"], "sha256": wanted}
        if wanted in self.by_sha:
            path = self.by_sha[wanted]
            return path.read_bytes(), {**record, "origin": f"file {path}", "checked": True}
        found = self.from_mirror(source["url"], wanted)
        if found is not None:
            return found[0], {**record, "origin": found[1], "checked": True}
        if name in STAND_INS:
            path, what = STAND_INS[name]
            data = path.read_bytes()
            return data, {**record, "origin": f"stand-in {path}", "stand_in": what, "checked": False,
                          "stand_in_sha256": sha256(data)}
        raise SystemExit(f"{name}: no local copy of {source['url']} with sha256 {wanted} (give --sources DIR)")


def fetch_examples(copy: Path, fetcher: Fetcher, examples: set[str]) -> list[dict[str, Any]]:
    """Every manifest source a local copy has (as the upstream's `fetch:sql` gets them all); one
    the chosen scenarios need and no copy has stops the run, others are recorded as unavailable."""
    manifest = yaml.safe_load((copy / "scripts/external/manifest.yaml").read_text())
    records = []
    for name, source in manifest["sources"].items():
        out = source.get("out", {}).get("path")
        if not out:  # an archive (flights: a zip from edu.postgrespro.com), used by no scenario
            records.append({"source": name, "url": source["url"], "origin": "unavailable offline", "checked": False})
            continue
        needed = any(out.startswith(f"examples/{example}/") for example in examples)
        try:
            data, record = fetcher.fetch(name, source)
        except SystemExit:
            if needed:
                raise
            records.append({"source": name, "url": source["url"], "path": out, "origin": "unavailable offline",
                            "checked": False})
            continue
        target = copy / out
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        records.append({**record, "path": out})
    return records


# -- the upstream's runner code ----------------------------------------------------------------------
def node(copy: Path, code: str) -> Any:
    """Evaluate `code` with run-scenario.mjs's exports in scope (as `m`); its JSON result."""
    module = (copy / "scripts/e2e-release/run-scenario.mjs").as_uri()
    script = f"const m = await import({json.dumps(module)});\nconst result = await (async () => {{ {code} }})();\n" \
             "console.log(JSON.stringify(result));"
    done = run(["node", "--input-type=module", "-e", script])
    if done.returncode != 0:
        raise SystemExit(f"node: {done.stderr.strip()}")
    return json.loads(done.stdout)


class Sqlrs:
    def __init__(self, state_dir: Path, cwd: Path):
        self.env = {**os.environ, "SQLRS_STATE_DIR": str(state_dir)}
        self.env.pop("SQLRS_WORKSPACE", None)
        self.cwd = cwd

    def __call__(self, argv: list[str], out: Path, name: str) -> tuple[int, float]:
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=self.cwd, env=self.env, capture_output=True, check=False)
        seconds = time.perf_counter() - started
        (out / f"{name}-stdout.log").write_bytes(done.stdout)
        (out / f"{name}-stderr.log").write_bytes(done.stderr)
        (out / f"command-{name}.txt").write_text(" ".join(argv) + "\n")
        return done.returncode, seconds

    def stop(self) -> None:
        """Remove what is left (servers outlive their engine), then stop the engine."""
        listed = subprocess.run([str(SQLRS), "ls", "--instances", "-o", "json"], env=self.env, capture_output=True,
                                text=True, check=False)
        for instance in json.loads(listed.stdout or "[]") if listed.returncode == 0 else []:
            subprocess.run([str(SQLRS), "rm", "--force", instance["id"]], env=self.env, capture_output=True,
                           check=False)
        subprocess.run([str(SQLRS), "engine", "stop"], env=self.env, capture_output=True, check=False)


def stage(copy: Path, scenario_id: str, out: Path, runtime: str | None) -> tuple[dict[str, Any], Path, Sqlrs]:
    shutil.rmtree(out, ignore_errors=True)
    workspace = out / "workspace"
    workspace.mkdir(parents=True)
    scenario = node(copy, f"return m.loadScenario({json.dumps(str(copy / 'test/e2e/release/scenarios.json'))}, "
                          f"{json.dumps(scenario_id)});")
    node(copy, f"return m.stageScenarioWorkspace({{repoRoot: {json.dumps(str(copy))}, "
               f"workspaceDir: {json.dumps(str(workspace))}, scenario: {{...{json.dumps(scenario)}, "
               f"id: {json.dumps(scenario_id)}}}}}).exampleRef;")
    shutil.copyfile(copy / scenario["queryTemplate"], workspace / ".e2e-query.sql")
    (workspace / ".sqlrs").mkdir()
    (workspace / ".sqlrs" / "config.yaml").write_text(SUPERUSER_CONFIG)
    sqlrs = Sqlrs(out / "state", workspace)
    if runtime:
        code, _ = sqlrs([str(SQLRS), "--workspace", str(workspace), "config", "set", "container.runtime", runtime],
                        out, "config")
        if code != 0:
            raise SystemExit(f"{scenario_id}: config set container.runtime {runtime} failed ({out}/config-stderr.log)")
    return scenario, workspace, sqlrs


def prefix(copy: Path, scenario_id: str, scenario: dict[str, Any], workspace: Path) -> list[str]:
    """buildPrepareFlowCommandPrefix of run-scenario.mjs: the upstream's own command line."""
    argv: list[str] = node(copy, f"return m.buildPrepareFlowCommandPrefix({{sqlrsPath: {json.dumps(str(SQLRS))}, "
                                 f"workspaceDir: {json.dumps(str(workspace))}, timeout: '15m', "
                                 f"scenario: {{...{json.dumps(scenario)}, id: {json.dumps(scenario_id)}}}}});")
    return argv


def golden_check(copy: Path, scenario_id: str, scenario: dict[str, Any], out: Path, name: str) -> bool:
    scripts = copy / "scripts/e2e-release"
    normalized, diff = out / f"{name}-normalized.txt", out / f"{name}-diff.txt"
    done = run(["node", str(scripts / "normalize-output.mjs"), "--repo-root", str(copy), "--scenario", scenario_id,
                "--input", str(out / f"{name}-stdout.log"), "--output", str(normalized)])
    if done.returncode != 0:
        return False
    done = run(["node", str(scripts / "compare-golden.mjs"), "--expected", str(copy / scenario["golden"]),
                "--actual", str(normalized), "--diff", str(diff)])
    return done.returncode == 0


def happy_path(copy: Path, scenario_id: str, out: Path, runtime: str | None, flow_runs: int) -> dict[str, Any]:
    scenario, workspace, sqlrs = stage(copy, scenario_id, out, runtime)
    flow = [*prefix(copy, scenario_id, scenario, workspace), "run:psql", "--", *scenario.get("runArgs", [])]
    result: dict[str, Any] = {"scenario": scenario_id, "command": flow, "runs": []}
    try:
        for number in range(1, flow_runs + 1):
            name = "raw" if number == 1 else f"raw-run{number}"
            code, seconds = sqlrs(flow, out, name)
            matched = code == 0 and golden_check(copy, scenario_id, scenario, out, name)
            result["runs"].append({"run": number, "exit_code": code, "seconds": round(seconds, 2), "golden": matched})
            if not matched:
                break
    finally:
        sqlrs.stop()
    result["passed"] = len(result["runs"]) == flow_runs and all(r["golden"] for r in result["runs"])
    return result


def cache_pressure(copy: Path, scenario_id: str, out: Path, runtime: str | None) -> dict[str, Any]:
    """run-cache-pressure-scenario.mjs's steps and checks, with this sqlrs' status and config keys."""
    scenario, workspace, sqlrs = stage(copy, scenario_id, out, runtime)
    prepare = prefix(copy, scenario_id, scenario, workspace)
    ws = ["--workspace", str(workspace)]
    result: dict[str, Any] = {"scenario": scenario_id, "command": prepare, "runs": []}

    def json_of(name: str, argv: list[str]) -> Any:
        code, _ = sqlrs(argv, out, name)
        if code != 0:
            raise RuntimeError(f"{name} exited {code}")
        return json.loads((out / f"{name}-stdout.log").read_text())

    def must(condition: bool, what: str) -> None:
        if not condition:
            raise RuntimeError(what)

    try:
        code, seconds = sqlrs(prepare, out, "raw")
        result["runs"].append({"run": 1, "exit_code": code, "seconds": round(seconds, 2)})
        must(code == 0, "the first prepare failed")
        for index, instance in enumerate(json_of("ls-instances", [str(SQLRS), *ws, "ls", "--instances", "-o", "json"])):
            code, _ = sqlrs([str(SQLRS), *ws, "rm", instance["id"]], out, f"rm-instance-{index + 1}")
            must(code == 0, f"rm {instance['id']} failed")
        before = json_of("status-before", [str(SQLRS), *ws, "status", "--cache", "-o", "json"])["cache"]
        usage = int(before["size_bytes"])
        must(usage > 0, f"the cache must hold something after the first prepare, not {usage} bytes")
        max_bytes = max(math.ceil(usage * 1.25), usage + 1)  # deriveCachePressureMaxBytes
        for key, value in (("cache.capacity.reserve_bytes", "0"), ("cache.capacity.max_bytes", str(max_bytes))):
            code, _ = sqlrs([str(SQLRS), *ws, "config", "set", key, value], out, f"config-{key}")
            must(code == 0, f"config set {key} failed")
        prepare_sql = workspace / scenario["example"] / "prepare.sql"  # appendPrepareVariant
        original = prepare_sql.read_text()
        prepare_sql.write_text(original + ("" if original.endswith("\n") else "\n") + "SELECT 1;\n")
        code, seconds = sqlrs(prepare, out, "raw-run2")
        result["runs"].append({"run": 2, "exit_code": code, "seconds": round(seconds, 2)})
        must(code == 0, "the second prepare failed")
        after = json_of("status-cache", [str(SQLRS), *ws, "status", "--cache", "-o", "json"])["cache"]
        must(int(after["max_bytes"]) == max_bytes, f"max_bytes {after['max_bytes']} != {max_bytes}")
        must(int(after["reserve_bytes"]) == 0, "reserve_bytes must be 0")
        must(int(after["evicted_states"]) >= 1, "no state was evicted")
        must(int(after["evicted_bytes"]) > 0, "eviction freed nothing")
        must(int(after["size_bytes"]) <= max_bytes, f"the cache ({after['size_bytes']}) is over its bound")
        result.update(usage_before=usage, configured_max_bytes=max_bytes, usage_after=after["size_bytes"],
                      evicted_states=after["evicted_states"], evicted_bytes=after["evicted_bytes"], passed=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        result.update(passed=False, error=str(exc))
    finally:
        sqlrs.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", type=Path, default=Path("/work/.mirror/kimak-irmagi+taidon/repo"),
                        help="the upstream's repository (a bare Git mirror)")
    parser.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"),
                        help="Git mirrors of the data sets' repositories (OWNER+REPO/repo)")
    parser.add_argument("--sources", type=Path, action="append", default=None,
                        help="directories with copies of the data files (matched by sha256)")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="run only these (repeatable)")
    parser.add_argument("--container-runtime", default="native", choices=["auto", "docker", "podman", "native"],
                        help="config container.runtime of each scenario's engine (default: native; the images the "
                             "aliases name, postgres:17, need a registry)")
    parser.add_argument("--flow-runs", type=int, default=2, help="flow runs per happy-path scenario (cold, cached)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/sqlrs-upstream-scenarios"))
    parser.add_argument("--keep-state", action="store_true", help="keep each scenario's state directory")
    args = parser.parse_args()
    for tool in ("git", "node"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    chosen = args.scenario or list(SCENARIOS)
    args.out.mkdir(parents=True, exist_ok=True)
    copy = args.out / "upstream"
    shutil.rmtree(copy, ignore_errors=True)
    commit, absent = checkout(args.upstream, copy)
    scenarios = {s["id"]: s for s in json.loads((copy / "test/e2e/release/scenarios.json").read_text())["scenarios"]}
    fetcher = Fetcher(args.mirrors, args.sources or [Path("/work/shared/datasets")])
    fetched = fetch_examples(copy, fetcher, {scenarios[s]["example"] for s in chosen})
    (args.out / "provenance.json").write_text(json.dumps({"upstream": str(args.upstream), "commit": commit,
                                                          "files": fetched, "empty_stand_ins": absent},
                                                         indent=2) + "\n")
    for record in fetched:
        if record["checked"]:
            print(f"{record['path']}: sha256 ok <- {record['origin']}", file=sys.stderr)
        elif "stand_in" in record:
            print(f"{record['path']}: STAND-IN <- {record['origin']} ({record['stand_in']})", file=sys.stderr)
        else:
            print(f"{record.get('path', record['source'])}: unavailable offline (no scenario needs it)",
                  file=sys.stderr)
    # the upstream's own aliases, checked statically (no engine)
    checked = run([str(SQLRS), "--workspace", str(copy), "alias", "check", "-o", "json", "--from", "examples"],
                  cwd=copy)
    report = json.loads(checked.stdout or "{}")
    (args.out / "alias-check.json").write_text(checked.stdout)
    results = []
    for scenario_id in chosen:
        out = args.out / scenario_id
        print(f"== {scenario_id}", file=sys.stderr, flush=True)
        if scenario_id.startswith("cache-pressure"):
            result = cache_pressure(copy, scenario_id, out, args.container_runtime)
        else:
            result = happy_path(copy, scenario_id, out, args.container_runtime, args.flow_runs)
        (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        if not args.keep_state:
            shutil.rmtree(out / "state", ignore_errors=True)
        results.append(result)
    print(f"upstream {commit[:12]}  runtime {args.container_runtime}")
    print(f"alias check examples/: checked={report.get('checked')} valid={report.get('valid')} "
          f"invalid={report.get('invalid')}" + (f" (empty stand-ins for blobs the mirror lacks: {', '.join(absent)})"
                                                 if absent else ""))
    # happy paths: run 1 cold, run 2 cached; cache-pressure: run 2 rebuilds the edited step under the bound
    print(f"{'scenario':26} {'result':7} {'run 1 s':>8} {'run 2 s':>9}  ratio")
    for result in results:
        times = [r["seconds"] for r in result["runs"]]
        cold, cached = [*times, math.nan, math.nan][:2]
        ratio = f"{cold / cached:.1f}x" if not math.isnan(cached) and cached else "-"
        print(f"{result['scenario']:26} {'PASS' if result['passed'] else 'FAIL':7} {cold:8.2f} {cached:9.2f}  {ratio}")
    sys.exit(0 if all(r["passed"] for r in results) and checked.returncode == 0 else 1)


if __name__ == "__main__":
    main()
