"""The questions a Client asks over a chain's states: `compare`, `check_downgrades`,
`check_backwards`, `bisect` (sqlrs.engine_client.prefixes, reversals, bisect; `sqlrs compare`,
`check:KIND`, `bisect:KIND`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlrs.entrypoints.library.client_base import ClientBase
from sqlrs.entrypoints.library.client_types import DowngradeReport, Instance, State, StrPath, UsageError, _translated

if TYPE_CHECKING:  # pragma: no cover
    from sqlrs.engine_client.prefixes import Chain
    from sqlrs.engine_client.reversals import Undo


class Questions(ClientBase):
    def compare(self, a: State | Instance | str, b: State | Instance | str, *, data: str = "content",
                ignore: Iterable[str] = ()) -> dict[str, Any]:
        """`sqlrs compare A B`: what B has that A has not (`schema.added`), what A has that B has
        not (`removed`), what both have differently (`changed`), and per table `rows_a`, `rows_b`,
        `data_changed`; `equal` when nothing differs. A and B: states (State, id or prefix) or
        instances (Instance, id, prefix or name). `data`: content (row digests and sequence
        positions, default), rows (row counts) or none (schema only). `ignore`: tables left out."""
        from sqlrs.engine_client.prefixes import compare

        def ref(side: State | Instance | str) -> str:
            return side.id if isinstance(side, State | Instance) else str(side)

        with _translated():
            return compare(self.engine, ref(a), ref(b), data=data, ignore=list(ignore), image=self.image)

    def _chain(self, body: dict[str, Any], on_progress: Callable[[str], None] | None) -> Chain:
        from sqlrs.engine_client.prefixes import BuildNotes, Chain

        note = on_progress or (lambda text: None)
        return Chain(self.engine, body, lambda: BuildNotes(note))

    def check_downgrades(self, alembic: StrPath = "alembic.ini", *, to: str | None = None, data: str = "rows",
                         on_progress: Callable[[str], None] | None = None) -> DowngradeReport:
        """`sqlrs check:alembic --downgrades`: for each revision (base to `to`, default every head),
        its downgrade run by your Alembic on an instance of its state, then compared with the state
        of its parent (schema; `data`: rows (default), content or none). Alembic runs in `base_dir`
        (default: the current directory), with this process's Python, as prepare's does."""
        from sqlrs.engine_client.reversals import AlembicUndo

        return self._check_undos({"alembic": alembic, "to": to}, AlembicUndo(), data, on_progress)

    def check_backwards(self, django: StrPath = "manage.py", *, to: str | None = None, data: str = "rows",
                        on_progress: Callable[[str], None] | None = None) -> DowngradeReport:
        """`sqlrs check:django --backwards`: for each migration, in Django's plan order (up to `to`,
        APP.MIGRATION; default every app's latest), `migrate APP PREVIOUS` (`zero` for an app's first)
        run by your Django on an instance of its state, then compared with the state before it
        (schema; `data`: rows (default), content or none). `django`: manage.py, or the directory
        holding it; the settings module is DJANGO_SETTINGS_MODULE's, else the one manage.py sets.
        Django runs with this process's Python, as `build(django=...)` does. The entries of the
        report are named `migration` (APP.NAME)."""
        from sqlrs.engine_client.reversals import DjangoUndo

        return self._check_undos({"django": django, "to": to}, DjangoUndo(), data, on_progress)

    def _check_undos(self, host: dict[str, Any], undo: Undo, data: str,
                     on_progress: Callable[[str], None] | None) -> DowngradeReport:
        from sqlrs.engine_client.reversals import check_steps

        body = self._body((), (), None, False, (), host)
        note = on_progress or (lambda text: None)
        with _translated(), self._chain(body, on_progress) as chain:
            return DowngradeReport(check_steps(chain, undo, data=data, note=note), undo.noun)

    def bisect(self, check: StrPath, files: Iterable[StrPath] | StrPath = (), *, sql: Iterable[str] | str = (),
               variables: Mapping[str, Any] | None = None, single_transaction: bool = False,
               psql_args: Sequence[str] = (), from_state: State | str | None = None,
               alembic: StrPath | None = None, to: str | None = None, liquibase: Sequence[str] | str | None = None,
               on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """`sqlrs bisect:KIND --check FILE`: the first step of the chain after which the psql script
        `check` fails (ON_ERROR_STOP), searched by halving over the cache. The result: `verdict`
        (found, fails_on_base, passes_on_last), `first_bad` {index, source, state_id, error} (None
        when the last state passes), `tested`, `steps`, `probes`. The chain as in `build()`."""
        from sqlrs.engine_client.bisect import PsqlCheck, bisect, check_args
        from sqlrs.engine_client.psqlargs import parse_run_args

        body = self._body(files, sql, variables, single_transaction, psql_args,
                          {"alembic": alembic, "to": to, "liquibase": liquibase}, from_state)
        with _translated():
            parsed = parse_run_args(check_args(os.fspath(check)), self._origin.workspace(), "psql")
            if not body["steps"]:
                raise UsageError("nothing to bisect: the chain has no steps")
            with self._chain(body, on_progress) as chain:
                return bisect(chain, PsqlCheck(self.engine, parsed), note=on_progress or (lambda text: None))

