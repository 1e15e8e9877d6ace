"""A deliberately tiny migration tool: applies migrations/*.sql in name order, each once.

It stands for whatever your project uses (a shell script, yoyo, sqitch, a framework's
`migrate` command): sqlrs runs it with `prepare:exec` and hands it the database in
DATABASE_URL (and the libpq variables PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE).

    sqlrs prepare:exec --input migrate.py --input 'migrations/*.sql' -- python migrate.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def main() -> int:
    url = os.environ.get("DATABASE_URL")
    if not url:
        print("migrate.py: DATABASE_URL is not set", file=sys.stderr)
        return 2
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        applied = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
        for path in sorted(MIGRATIONS.glob("*.sql")):
            if path.name in applied:
                continue
            print(f"applying {path.name}")
            try:
                with conn.transaction():
                    conn.execute(path.read_text())  # simple query protocol: several statements at once
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.name,))
            except psycopg.Error as exc:
                print(f"migrate.py: {path.name} failed: {exc}".strip(), file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
