"""The roles every cluster sqlrs makes has (docs/decisions/0011-bootstrap-superuser.md).

- The *bootstrap superuser* is the role initdb creates (`initdb -U NAME`, oid 10): PostgreSQL
  refuses to drop it, to reassign or drop what it owns, and `CREATE ROLE` of its name fails. It
  is `postgres` (the default, as the official image and distribution packages make it, so dumps
  saying `OWNER TO postgres` restore) or `sqlrs` (as the upstream sqlrs makes it, so scripts that
  create, reassign from and drop a `postgres` role of their own run). A request chooses it
  (workspace config `postgres.superuser`); psql steps run as it.
- `sqlrs` is the role the engine and clients log in as: a superuser with LOGIN in every cluster
  (the bootstrap superuser itself, or created next to it when the base is built). The DSN's
  user, run:psql's, the engine's own sessions.

The choice enters the base state's id through the initdb options: a `postgres` base keeps the id
it always had, a `sqlrs` base adds `-U sqlrs` (initdb takes the last -U it is given).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlrs.domain import keys
from sqlrs.domain.errors import UsageError

ENGINE_ROLE = "sqlrs"
DEFAULT_SUPERUSER = "postgres"
SUPERUSERS = (DEFAULT_SUPERUSER, ENGINE_ROLE)
# initdb options that shape the cluster: they enter the base id (for `postgres`; initdb_options adds -U)
INITDB_OPTIONS = ("-E", "UTF8", "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256",
                  # 1 MiB WAL segments, not 16: every state and every copy of one carries its current
                  # segment, mostly empty in a test database
                  "--wal-segsize=1")


def check_superuser(name: str | None) -> str:
    """The request's bootstrap superuser (the default when None); a usage error for other names."""
    if name is None:
        return DEFAULT_SUPERUSER
    if name not in SUPERUSERS:
        raise UsageError(f"unknown bootstrap superuser {name!r}", hint="postgres (default) or sqlrs")
    return name


def initdb_options(options: Sequence[str], superuser: str) -> tuple[str, ...]:
    """The initdb options that shape a base made for `superuser`."""
    return tuple(options) if superuser == DEFAULT_SUPERUSER else (*options, "-U", superuser)


def base_sql(superuser: str) -> tuple[str, ...]:
    """What the base runs, as its bootstrap superuser, after initdb: the engine's login role."""
    return () if superuser == ENGINE_ROLE else (f"CREATE ROLE {ENGINE_ROLE} SUPERUSER LOGIN",)


def base_id(identity: str, options: Sequence[str], superuser: str) -> str:
    return keys.base_id(identity, initdb_options(options, superuser))


def superuser_of(identity: str, options: Sequence[str], base: str) -> str | None:
    """Which bootstrap superuser a base of this runtime identity was made for; None: neither
    (the base belongs to another runtime identity)."""
    return next((name for name in SUPERUSERS if base_id(identity, options, name) == base), None)
