"""Where sqlrs keeps things inside the state directory and the snapshot store."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import attrs

# PostgreSQL's socket path ".../.s.PGSQL.65535" must fit in sun_path (108 bytes).
_MAX_RUN_ROOT = 70


@attrs.frozen
class Layout:
    state_dir: Path
    store_root: Path

    @property
    def metadata_db(self) -> Path:
        return self.state_dir / "metadata.db"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "config.json"

    @property
    def engine_json(self) -> Path:
        return self.state_dir / "engine.json"

    @property
    def engine_socket(self) -> Path:
        return self.state_dir / "engine.sock"

    @property
    def engine_log(self) -> Path:
        return self.state_dir / "engine.log"

    @property
    def binaries_dir(self) -> Path:
        return self.state_dir / "pg"

    @property
    def run_root(self) -> Path:
        root = self.state_dir / "run"
        if len(str(root)) <= _MAX_RUN_ROOT:
            return root
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"sqlrs-run-{digest}"

    def run_dir(self, key: str) -> Path:
        return self.run_root / key

    @property
    def states_dir(self) -> Path:
        return self.store_root / "states"

    @property
    def instances_dir(self) -> Path:
        return self.store_root / "instances"

    @property
    def scratch_dir(self) -> Path:
        return self.store_root / "scratch"

    @property
    def tmp_dir(self) -> Path:
        return self.store_root / "tmp"

    @property
    def standby_dir(self) -> Path:
        return self.store_root / "standby"

    def state_rel(self, state_id: str) -> str:
        return f"states/{state_id}"

    def instance_rel(self, instance_id: str) -> str:
        return f"instances/{instance_id}"

    def abs(self, rel: str) -> Path:
        return self.store_root / rel

    def ensure(self) -> None:
        for path in (self.state_dir, self.store_root, self.states_dir, self.instances_dir, self.scratch_dir,
                     self.tmp_dir, self.standby_dir, self.run_root):
            path.mkdir(parents=True, exist_ok=True)
