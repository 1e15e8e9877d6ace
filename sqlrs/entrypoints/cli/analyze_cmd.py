"""Questions only cached states answer cheaply: `sqlrs compare`, `check:alembic --downgrades`,
`check:django --backwards`, `bisect:KIND`. The work is sqlrs.engine_client's (prefixes, reversals,
bisect); this module parses, reports progress on stderr and prints the results on stdout."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sqlrs.engine_client.errors import EXIT_FAILED
from sqlrs.entrypoints.cli.options import (
    PASSTHROUGH,
    Decorator,
    alembic_options,
    django_options,
    output_option,
    runtime_options,
)
from sqlrs.entrypoints.cli.output import Ctx, echo, emit_json, short

if TYPE_CHECKING:
    from sqlrs.engine_client.prefixes import Chain
    from sqlrs.engine_client.reversals import Undo

DATA_CHOICE = click.Choice(["content", "rows", "none"])

COMPARE_HELP = """Compare two databases: their schemas, and the data in their tables.

\b
A and B are states (id or unique prefix: `sqlrs ls --states`, a plan's state
ids) or instances (id, prefix or name). A state is read through an instance made
for the comparison and removed afterwards; an instance is read as it is now.
Lists the schema objects B has and A has not (+), A has and B has not (-), and
both have but differently (~), described as you would write them; then per
table whether the rows differ (row counts and digests computed in the servers:
no data leaves them) and sequences whose position moved.
Exit 0: equal; 1: different. -o json: `equal`, `schema` {added, removed,
changed}, `tables` [{name, rows_a, rows_b, data_changed}], `sequences`.

\b
Examples:
  sqlrs compare 3f2a1b9c dev                  # a state against an instance
  sqlrs plan:psql -o json -- -f a.sql -f b.sql   # state ids of a chain, then:
  sqlrs compare STATE_1 STATE_2               # what step 2 did
  sqlrs compare --data rows before after -o json
"""


def render_comparison(result: dict[str, Any]) -> list[str]:
    """A comparison as lines for people: the differences, then the verdict."""
    from sqlrs.domain.compare import table_change

    lines = []
    schema = result["schema"]
    marks = (("+", schema["added"]), ("-", schema["removed"]), ("~", schema["changed"]))
    counts = [f"{len(items)} {word}" for word, (_, items) in zip(("added", "removed", "changed"), marks, strict=True)
              if items]
    if counts:
        lines.append(f"schema: {', '.join(counts)}")
        lines += [f"  {mark} {text}" for mark, items in marks for text in items]
    changed = [table for table in result["tables"] if table["data_changed"]]
    if changed or result.get("sequences"):
        lines.append(f"data: {len(changed)} of {len(result['tables'])} tables differ")
        lines += [f"  ~ {table_change(table)}" for table in changed]
        lines += [f"  ~ sequence {s['name']} at {s['value_a']} → {s['value_b']}" for s in result.get("sequences", [])]
    if result["equal"]:
        rows = sum(table["rows_a"] or 0 for table in result["tables"])
        what = {"content": f"the data of {len(result['tables'])} tables ({rows} rows)",
                "rows": f"the row counts of {len(result['tables'])} tables", "none": ""}[result.get("data", "content")]
        lines.append("equal: the schema" + (f" and {what}" if what else ""))
    else:
        lines.append("different")
    return lines


def _side(side: dict[str, Any]) -> str:
    if side["kind"] == "instance":
        return f"instance {side['id']}" + (f" ({side['name']})" if side.get("name") else "")
    return f"state {short(side['id'])} ({side.get('source', '')})"


@click.command("compare", help=COMPARE_HELP)
@click.argument("a")
@click.argument("b")
@click.option("--data", type=DATA_CHOICE, default="content", show_default=True,
              help="content: row counts, row digests, sequence positions; rows: row counts only; none: schema only.")
@click.option("--ignore", multiple=True, metavar="TABLE",
              help="Leave this table out, with all that belongs to it (repeatable; schema.table or table).")
@click.option("--image", help="The image the states were built with (container runtimes; default: found).")
@output_option
@click.pass_obj
def compare_command(ctx: Ctx, a: str, b: str, data: str, ignore: tuple[str, ...], image: str | None,
                    output: str) -> None:
    from sqlrs.engine_client.prefixes import compare

    result = compare(ctx.client(), a, b, data=data, ignore=list(ignore), image=image)
    if output == "json":
        emit_json(result)
    else:
        ctx.note(f"A: {_side(result['a'])}\nB: {_side(result['b'])}")
        for line in render_comparison(result):
            echo(line)
    sys.exit(0 if result["equal"] else EXIT_FAILED)


# -- check:alembic --downgrades --------------------------------------------------------------------
CHECK_ALEMBIC_HELP = """Check that every Alembic revision's downgrade restores the database it upgraded.

\b
For each revision, base to head (or --to REV) in Alembic's order: an instance of
the revision's cached state (its parent's state, upgraded), your Alembic's
downgrade of that one revision against it, then a comparison with the parent's
state: schema (tables, columns, types, defaults, indexes, constraints, functions,
triggers, views, sequences, extensions, enums...) and, with --data rows (the
default), each table's row count; --data content compares the rows themselves
and sequence positions too. The alembic_version table is left out.
One line per revision on stdout; exit 1 when a downgrade does not restore.
-o json: `revisions` [{revision, parent, restores, differences}], `restores`.

\b
Examples:
  sqlrs check:alembic --downgrades
  sqlrs check:alembic --downgrades -c db/alembic.ini --to 3f2a1b --data content
"""


def _chain(ctx: Ctx, body: dict[str, Any]) -> Chain:
    from sqlrs.engine_client.prefixes import BuildNotes, Chain

    return Chain(ctx.client(), body, lambda: BuildNotes(ctx.note))


def _alembic_body(config: str, to: str | None, image: str | None, runtime: str | None) -> dict[str, Any]:
    from sqlrs.engine_client import jobs
    from sqlrs.engine_client.hostinputs import alembic_steps

    return jobs.job_body({"steps": alembic_steps(config, to, Path.cwd())}, runtime=runtime, image=image)


def _check_undos(ctx: Ctx, body: dict[str, Any], undo: Undo, data: str, output: str, verdict: str) -> None:
    """Check every step's undo, one line each as it comes (or JSON at the end); exit 1 when any
    does not restore."""
    from sqlrs.engine_client.reversals import check_steps, result_line, step_name

    def show(result: dict[str, Any]) -> None:
        if output != "json":
            echo(result_line(result))

    with _chain(ctx, body) as chain:
        results = check_steps(chain, undo, data=data, note=ctx.note, on_result=show)
    restores = all(result["restores"] for result in results)
    if output == "json":
        emit_json({f"{undo.noun}s": results, "restores": restores})
    failed = [step_name(result) for result in results if not result["restores"]]
    verb = "does" if len(failed) == 1 else "do"
    ctx.note(f"{len(results)} {undo.noun}s: " + (f"{len(failed)} {verb} not restore ({', '.join(failed)})"
                                                 if failed else verdict))
    sys.exit(0 if restores else EXIT_FAILED)


def _check_options(inputs: Decorator) -> Decorator:
    """The options of a check:KIND command after its flag: the chain's (`inputs`), --data, the
    runtime's, -o."""
    data = click.option("--data", type=DATA_CHOICE, default="rows", show_default=True,
                        help="What of the data must be restored: rows (counts), content (rows and sequences), none.")

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        return inputs(data(runtime_options(output_option(click.pass_obj(func)))))

    return wrap


@click.command("check:alembic", help=CHECK_ALEMBIC_HELP)
@click.option("--downgrades", is_flag=True, help="Check that each downgrade restores its parent's state.")
@_check_options(alembic_options)
def check_alembic(ctx: Ctx, downgrades: bool, config: str, to: str | None, data: str, image: str | None,
                  runtime: str | None, output: str) -> None:
    from sqlrs.engine_client.errors import usage
    from sqlrs.engine_client.reversals import AlembicUndo

    if not downgrades:
        raise usage("check:alembic checks downgrades: give --downgrades", hint="sqlrs check:alembic --downgrades")
    _check_undos(ctx, _alembic_body(config, to, image, runtime), AlembicUndo(), data, output,
                 "every downgrade restores")


# -- check:django --backwards ----------------------------------------------------------------------
CHECK_DJANGO_HELP = """Check that unapplying each Django migration restores the database it migrated.

\b
For each migration, in the order `manage.py migrate` applies them to an empty
database (or up to --to APP.MIGRATION): an instance of the migration's cached
state (the state before it, migrated), your Django's `migrate APP PREVIOUS`
(`migrate APP zero` for an app's first migration) against it, which unapplies
exactly that migration, then a comparison with the state before it: schema
(tables, columns, types, defaults, indexes, constraints, functions, triggers,
views, sequences, extensions, enums...) and, with --data rows (the default),
each table's row count; --data content compares the rows themselves and
sequence positions too. django_migrations is left out; the content types and
permissions Django keeps for the models a migration removes are deleted first,
as remove_stale_contenttypes would.
One line per migration on stdout; exit 1 when one does not restore.
-o json: `migrations` [{migration, parent, restores, differences}], `restores`.

\b
Examples:
  sqlrs check:django --backwards
  sqlrs check:django --backwards --settings mysite.settings_ci --to polls.0003
  sqlrs check:django --backwards --manage src/manage.py -o json
"""


@click.command("check:django", help=CHECK_DJANGO_HELP)
@click.option("--backwards", is_flag=True, help="Check that unapplying each migration restores its parent's state.")
@_check_options(django_options)
def check_django(ctx: Ctx, backwards: bool, settings: str | None, manage: str | None, to: str | None, data: str,
                 image: str | None, runtime: str | None, output: str) -> None:
    from sqlrs.engine_client import jobs
    from sqlrs.engine_client.django import django_steps
    from sqlrs.engine_client.errors import usage
    from sqlrs.engine_client.reversals import DjangoUndo

    if not backwards:
        raise usage("check:django checks unapplying migrations: give --backwards",
                    hint="sqlrs check:django --backwards")
    body = jobs.job_body({"steps": django_steps(manage, settings, to, Path.cwd())}, runtime=runtime, image=image)
    _check_undos(ctx, body, DjangoUndo(), data, output, "every migration restores when unapplied")


# -- bisect:KIND --check FILE ----------------------------------------------------------------------
BISECT_HELP = """Find the first {what} after which a psql check script fails.

\b
FILE runs with psql -X -v ON_ERROR_STOP=1 against instances of the chain's states:
it passes when it runs to its end, fails when a statement fails (use it to
assert: `SELECT 1/(count(*) = 0)::int FROM ...`, a DO block that RAISEs, or a
query that must work). The states are searched by halving, as git bisect does,
over the cache: a probe builds only the steps up to it. At most ceil(log2(N))+2
states are checked. A check that fails on the base already, or passes on the
last state, is reported as such. Progress on stderr; the answer on stdout.
Exit 0: found; 1: no such step (fails on the base, or passes on the last).
-o json: `first_bad` {{index, source, state_id, error}}, `tested`, `verdict`.

\b
Examples:
{examples}
"""


def _bisect(ctx: Ctx, check: str, body: dict[str, Any], allow_outside: bool, output: str) -> None:
    from sqlrs.engine_client.bisect import FAILS_ON_BASE, FOUND, PsqlCheck, bisect, check_args
    from sqlrs.engine_client.errors import usage
    from sqlrs.engine_client.psqlargs import Workspace, parse_run_args

    parsed = parse_run_args(check_args(check), Workspace.detect(allow_outside), "psql")
    if not body["steps"]:
        raise usage("nothing to bisect: the chain has no steps")
    with _chain(ctx, body) as chain:
        result = bisect(chain, PsqlCheck(ctx.client(), parsed), note=ctx.note)
    ctx.note(f"{result['tested']} of {result['steps'] + 1} states checked")
    if output == "json":
        emit_json(result)
    else:
        first = result["first_bad"]
        if result["verdict"] == FOUND:
            echo(f"first bad step: {first['index']} {first['source']} (state {short(first['state_id'])})")
            echo(f"  {first['error']}")
        elif result["verdict"] == FAILS_ON_BASE:
            echo(f"the check fails on the base already (state {short(first['state_id'])}): {first['error']}")
        else:
            echo(f"the check passes on the last step ({result['steps']}): no step makes it fail")
    sys.exit(0 if result["verdict"] == FOUND else EXIT_FAILED)


CHECK_OPTION = click.option("--check", "check", required=True, metavar="FILE",
                            help="psql script that passes on a good state and fails on a bad one.")


@click.command("bisect:psql", context_settings=PASSTHROUGH, help=BISECT_HELP.format(
    what="step (-f FILE or -c SQL)",
    examples="  sqlrs bisect:psql --check invariants.sql -- -f 001.sql -f 002.sql ...\n"
             "  sqlrs bisect:psql --check q.sql -o json -- $(for f in db/*.sql; do echo -f $f; done)"))
@CHECK_OPTION
@runtime_options
@click.option("--allow-outside", is_flag=True, help="Allow reading files outside the workspace root.")
@click.option("--from", "from_state", metavar="STATE", help="Start the chain from this state instead of the base.")
@output_option
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def bisect_psql(ctx: Ctx, check: str, image: str | None, runtime: str | None, allow_outside: bool,
                from_state: str | None, output: str, psql_args: tuple[str, ...]) -> None:
    from sqlrs.entrypoints.cli.preparing import psql_body

    # (plan_only: an empty chain is refused below, with bisect's words)
    body = psql_body(psql_args, image, runtime, None, allow_outside, plan_only=True, from_state=from_state)
    _bisect(ctx, check, body, allow_outside, output)


@click.command("bisect:alembic", help=BISECT_HELP.format(
    what="Alembic revision", examples="  sqlrs bisect:alembic --check orders_have_items.sql\n"
                                      "  sqlrs bisect:alembic --check q.sql -c db/alembic.ini --to 3f2a1b"))
@CHECK_OPTION
@alembic_options
@runtime_options
@output_option
@click.pass_obj
def bisect_alembic(ctx: Ctx, check: str, config: str, to: str | None, image: str | None, runtime: str | None,
                   output: str) -> None:
    _bisect(ctx, check, _alembic_body(config, to, image, runtime), False, output)


@click.command("bisect:lb", context_settings=PASSTHROUGH, help=BISECT_HELP.format(
    what="Liquibase changeset", examples="  sqlrs bisect:lb --check q.sql -- update --changelog-file=master.xml"))
@CHECK_OPTION
@runtime_options
@click.option("--allow-outside", is_flag=True, help="Allow reading files outside the workspace root.")
@output_option
@click.argument("lb_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def bisect_lb(ctx: Ctx, check: str, image: str | None, runtime: str | None, allow_outside: bool, output: str,
              lb_args: tuple[str, ...]) -> None:
    from sqlrs.entrypoints.cli.lb_cmd import lb_body

    _bisect(ctx, check, lb_body(ctx, lb_args, image, runtime, allow_outside), allow_outside, output)


def add_analyze_commands(group: click.Group) -> None:
    """Register compare, check:* and bisect:* on the `sqlrs` group."""
    for command in (compare_command, check_alembic, check_django, bisect_psql, bisect_alembic, bisect_lb):
        group.add_command(command)
