"""Where sqlrs finds its runtimes and snapshot stores: entry points (SPEC section 12).

A package adds a runtime by naming a `sqlrs.ports.runtime.RuntimePlugin` in the entry point group
`sqlrs.runtimes`, and a snapshot store by naming a `sqlrs.ports.snapshots.SnapshotStorePlugin` in
`sqlrs.snapshot_stores`; sqlrs registers its own (docker, podman, native; btrfs, reflink, copy) the
same way in its pyproject.toml (docs/extending.md). Every list of runtime or store names (CLI
choices, config schema, the library, the pytest plugin, the engine's registry) comes from here.

Standard library only, and `importlib.metadata` (about as costly to import as the CLI's whole
fast path) only when names are asked for: `cached_names` answers the CLI's fast path from a
small file while the distributions on sys.path are unchanged since it was written.
"""

from __future__ import annotations

import json
import os
import sys

TYPE_CHECKING = False  # typing is one of the imports the CLI's fast path avoids
if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

RUNTIMES = "sqlrs.runtimes"
SNAPSHOT_STORES = "sqlrs.snapshot_stores"
GROUPS = (RUNTIMES, SNAPSHOT_STORES)
OWN_DISTRIBUTION = "sqlrs"

_scanned: dict[str, list[EntryPoint]] | None = None


def _entry_points() -> dict[str, list[EntryPoint]]:
    """The entry points of GROUPS, read once per process."""
    global _scanned
    if _scanned is None:
        from importlib.metadata import entry_points

        _scanned = {group: sorted(entry_points(group=group), key=lambda ep: ep.name) for group in GROUPS}
    return _scanned


def names(group: str, *, own: bool = False) -> tuple[str, ...]:
    """The names registered in `group`, sorted (`own`: only those sqlrs itself registers)."""
    found = {ep.name for ep in _entry_points()[group]
             if not own or (ep.dist is not None and ep.dist.name == OWN_DISTRIBUTION)}
    return tuple(sorted(found))


def load(group: str, kind: type) -> list[tuple[str, object]]:
    """(name, the `kind` object its entry point names, or the exception that kept it from loading)
    for every entry point of `group`, sorted by name. A name registered twice, an object of another
    type or with another name than its entry point's is an error (a `TypeError`), not a plugin."""
    loaded: list[tuple[str, object]] = []
    seen: dict[str, str] = {}
    for ep in _entry_points()[group]:
        where = ep.dist.name if ep.dist is not None else ep.value
        if ep.name in seen:
            loaded.append((ep.name, TypeError(f"{group} {ep.name!r} is registered twice ({seen[ep.name]} "
                                              f"and {where})")))
            continue
        seen[ep.name] = where
        try:
            value = ep.load()
        except Exception as exc:  # a broken plugin must not keep the engine from starting
            loaded.append((ep.name, exc))
            continue
        if not isinstance(value, kind) or getattr(value, "name", None) != ep.name:
            value = TypeError(f"{group} {ep.name!r} ({ep.value}, from {where}) is not a {kind.__name__} "
                              f"named {ep.name!r}")
        loaded.append((ep.name, value))
    return loaded


# -- the CLI's fast path -------------------------------------------------------------------------
def cache_dir() -> str:
    """sqlrs' cache files (what a new scan rebuilds: these entry points, Alembic's revision
    orders): `$XDG_CACHE_HOME/sqlrs`, else ~/.cache/sqlrs."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sqlrs")


def _cache_file(key: list[list[object]]) -> str:
    """One file per interpreter and set of metadata folders: two environments of one interpreter
    (another PYTHONPATH, a plugin on it) each keep theirs instead of rewriting one file in turn,
    which made every command of both read the entry points again."""
    import binascii

    folders = "\0".join([sys.prefix, *(str(folder) for folder, _ in key)])
    return os.path.join(cache_dir(), f"entry-points-{binascii.crc32(folders.encode()):08x}.json")


def _fingerprint() -> list[list[object]]:
    """The distributions Python can see: the metadata directories (`*.dist-info`, `*.egg-info`) in
    the sys.path entries that have any, with their modification times. Installing, upgrading or
    removing one (pip writes a fresh metadata directory) changes it; other files do not, nor does
    the current directory that `python -m` puts on sys.path, unless it holds a distribution."""
    found: list[list[object]] = []
    for entry in sys.path:
        folder = os.path.abspath(entry or ".")
        try:
            metadata = sorted(name for name in os.listdir(folder) if name.endswith((".dist-info", ".egg-info")))
            if metadata:
                found.append([folder, [[name, os.stat(os.path.join(folder, name)).st_mtime_ns] for name in metadata]])
        except OSError:
            continue  # not a directory (a zip that does not exist...): no metadata to read there
    return found


def cached_names(group: str) -> tuple[str, ...]:
    """`names(group)`, read from a cache file when the distributions on sys.path are those it was
    written for."""
    key = _fingerprint()
    path = _cache_file(key)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if data["key"] == key:
            return tuple(data["names"][group])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    found = {name: list(names(name)) for name in GROUPS}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.{os.getpid()}"
        with open(partial, "w", encoding="utf-8") as handle:
            json.dump({"key": key, "names": found}, handle)
        os.replace(partial, path)
    except OSError:
        pass  # a read-only home: the next call reads the entry points again
    return tuple(found[group])
