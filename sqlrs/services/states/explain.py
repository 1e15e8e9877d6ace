"""Why each state of a plan is cached or not (`sqlrs cache explain`).

A state is missing for one of few reasons, and the plan plus the metadata tell which:

- the base: no base of this runtime identity (and bootstrap superuser) was ever made here, or
  bases of other identities are (another PostgreSQL build, image or major);
- a step whose parent is missing: the earlier step is the reason;
- a step on a cached parent: nothing was built on that parent yet, or something was (a *sibling*
  state: same parent, other content). The job that built the sibling kept its steps' inputs
  (path and sha256 of every file read, a host step's keyed facts; routes/jobs.summarize_request),
  so the explanation names the inputs that changed, appeared or went; with the same content the
  psql options (-v, -1) differ. When that job left the history, only "the content differs" is
  known.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlrs.domain.model import JobStatus, State, StateKind, TaskStatus
from sqlrs.domain.scripts import step_inputs
from sqlrs.domain.steps import Step
from sqlrs.ports.repository import JobLog, StateRepository
from sqlrs.ports.runtime import RuntimeIdentity
from sqlrs.services.requests import PrepareRequest
from sqlrs.services.states.plan import FROM_KIND, PlanItem


def inputs_of(step: Step) -> list[tuple[str, str]]:
    """A step's inputs as `step_inputs` reads them from the API's JSON."""
    return step_inputs({"kind": step.kind, "sql": step.sql, "keyed": [list(pair) for pair in step.keyed],
                        "files": [{"path": f.path, "content": f.content} for f in step.files] if step.files else None})


def _built_by(log: JobLog) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """state id -> (the summarized step that built it, that job's request), from the job history."""
    found: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for job in sorted(log.list_jobs(), key=lambda j: j.created_at):
        if job.kind != "prepare" or job.status not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            continue
        steps = job.request.get("steps") or []
        for task in log.list_tasks(job.id):
            if task.status == TaskStatus.DONE and task.state_id and 0 < task.index <= len(steps):
                found[task.state_id] = (steps[task.index - 1], job.request)
    return found


def _options(request: dict[str, Any]) -> tuple[Any, Any]:
    options = request.get("options") or {}
    variables = sorted(tuple(pair) for pair in options.get("variables") or [])
    return variables, bool(options.get("single_transaction"))


def _short(digest: str) -> str:
    return digest[:12]


def explain(repo: StateRepository, log: JobLog, identity: RuntimeIdentity, items: Sequence[PlanItem],
            request: PrepareRequest, superuser: str) -> list[dict[str, Any]]:
    """One entry per plan row: `cached`, a `code` and a `reason` for people, and what changed
    (`log`: the job history, where the inputs of the jobs that built the other states are kept)."""
    built_by = _built_by(log)
    states = repo.list_states()
    out: list[dict[str, Any]] = []
    for position, item in enumerate(items):
        entry: dict[str, Any] = {"index": item.index, "kind": item.kind if item.step is None else item.step.kind,
                                 "source": item.source, "state_id": item.state_id, "cached": item.cached}
        if item.step is not None:
            entry["inputs"] = [{"input": name, "sha256": value} for name, value in inputs_of(item.step)]
        if item.cached:
            entry.update(code="cached", reason=f"cached: state {_short(item.state_id)}")
        elif item.kind == "base":
            entry.update(_base(identity, superuser, states))
        elif item.kind == FROM_KIND:
            entry.update(code="removed", reason=f"the state --from names ({_short(item.state_id)}) is gone")
        elif not items[position - 1].cached:
            entry.update(code="parent_not_cached",
                         reason=f"it builds on row {items[position - 1].index}, which is not cached either")
        else:
            entry.update(_step(repo, item, request, built_by))
        out.append(entry)
    return out


def _base(identity: RuntimeIdentity, superuser: str, states: list[State]) -> dict[str, Any]:
    bases = sorted({state.source for state in states if state.kind == StateKind.BASE and state.parent_id is None})
    wanted = f"{identity.description}, bootstrap superuser {superuser}"
    if not bases:
        return {"code": "not_built", "reason": f"no base was made on this engine yet ({wanted})"}
    return {"code": "runtime_changed",
            "reason": f"no base for {wanted}; cached bases here: {'; '.join(bases)}",
            "cached_bases": bases}


def _step(repo: StateRepository, item: PlanItem, request: PrepareRequest,
          built_by: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    assert item.step is not None and item.parent_id is not None
    siblings = [s for s in repo.child_states(item.parent_id) if s.kind != StateKind.SNAPSHOT]
    if not siblings:
        return {"code": "new_step", "reason": "nothing was built on the previous state yet"}
    siblings.sort(key=lambda s: (s.source != item.source, s.id not in built_by, -s.last_used_at.timestamp()))
    sibling = siblings[0]
    about = {"state_id": sibling.id, "source": sibling.source, "created_at": sibling.created_at.isoformat()}
    known = built_by.get(sibling.id)
    digest = item.step.content_digest()
    if known is None or not known[0].get("inputs"):
        if known is not None and known[0].get("digest") == digest:
            return _options_changed(request, known[1], about)
        return {"code": "content_changed", "sibling": about,
                "reason": f"its content differs from state {_short(sibling.id)} ({sibling.source}), built on the "
                          "same parent; the inputs of that build are no longer in the job history"}
    was = {str(name): str(value) for name, value in known[0]["inputs"]}
    now = dict(inputs_of(item.step))
    changed = [{"input": name, "was": was[name], "now": now[name]} for name in now
               if name in was and was[name] != now[name]]
    added = [name for name in now if name not in was]
    removed = [name for name in was if name not in now]
    if not (changed or added or removed):
        return _options_changed(request, known[1], about)
    parts = []
    if changed:
        parts.append(", ".join(c["input"] for c in changed) + " changed")
    if added:
        parts.append(", ".join(added) + " added")
    if removed:
        parts.append(", ".join(removed) + " removed")
    return {"code": "input_changed", "changed": changed, "added": added, "removed": removed, "sibling": about,
            "reason": f"{'; '.join(parts)} since state {_short(sibling.id)} ({sibling.source}) was built"}


def _options_changed(request: PrepareRequest, built: dict[str, Any], about: dict[str, Any]) -> dict[str, Any]:
    theirs = _options(built)
    ours = (sorted(request.options.variables), request.options.single_transaction)
    what = []
    if theirs[0] != ours[0]:
        what.append("-v variables " + (", ".join(f"{n}={v}" for n, v in ours[0]) or "(none)")
                    + " (built with " + (", ".join(f"{n}={v}" for n, v in theirs[0]) or "none") + ")")
    if theirs[1] != ours[1]:
        what.append("-1 " + ("added" if ours[1] else "removed"))
    return {"code": "options_changed", "sibling": about,
            "reason": "same inputs, other psql options: " + ("; ".join(what) or "they enter every step's key")}
