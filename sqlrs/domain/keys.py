"""Content-addressed identities of bases, steps and states.

    base_id  = H("base", runtime identity, initdb options, format version)
    state_1  = H(base_id, step_hash_1);  state_k = H(state_{k-1}, step_hash_k)
    step_hash = H(step kind, sha256(normalized content), psql options that change the result)
    host kinds (alembic, exec, ...): step_hash = H(step kind, digest of the step's keyed facts)
    (Python files among those facts are keyed by their syntax tree: sqlrs.domain.pysource, whose
    PYTHON_KEY_VERSION versions that canonical form)

`H` is `digest` (sqlrs.domain.digests). The sqlrs version is deliberately not hashed; FORMAT_VERSION is.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlrs.domain.digests import Field, digest
from sqlrs.domain.steps import PSQL_KINDS, PsqlOptions, Step

__all__ = ["FORMAT_VERSION", "Field", "base_id", "chain", "digest", "snapshot_id", "state_id", "step_hash"]

FORMAT_VERSION = 1

def base_id(runtime_identity: str, initdb_options: Sequence[str]) -> str:
    return digest("base", runtime_identity, list(initdb_options), FORMAT_VERSION)


def step_hash(step: Step, options: PsqlOptions) -> str:
    if step.kind not in PSQL_KINDS:
        # a host tool applies it: psql's -v and -1 change nothing it does
        return digest("step", step.kind, step.content_digest())
    variables = [[name, value] for name, value in options.variables]
    return digest("step", step.kind, step.content_digest(), variables, options.single_transaction)


def state_id(parent_id: str, step_digest: str) -> str:
    return digest(parent_id, step_digest)


def snapshot_id(parent_id: str, nonce: str) -> str:
    """A snapshot's id: unique (a random `nonce`), as its content depends on what clients did."""
    return digest(parent_id, "snapshot", nonce, FORMAT_VERSION)


def chain(base: str, steps: Sequence[Step], options: PsqlOptions) -> list[str]:
    """State ids after each step, in order (the base itself is not included)."""
    ids: list[str] = []
    parent = base
    for step in steps:
        parent = state_id(parent, step_hash(step, options))
        ids.append(parent)
    return ids
