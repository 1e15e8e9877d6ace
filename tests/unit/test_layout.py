from __future__ import annotations

import tempfile
from pathlib import Path

from sqlrs.entrypoints.engine.store import STORE_ENTRIES
from sqlrs.services.layout import Layout


def test_init_local_knows_every_directory_the_engine_makes_in_the_store() -> None:
    # `init local` refuses a store holding entries it does not know: each one the engine makes
    # must be on its list, or the engine's own store would look foreign to it
    with tempfile.TemporaryDirectory(prefix="sq", dir="/tmp") as short:  # run/ stays inside it
        layout = Layout(state_dir=Path(short) / "state", store_root=Path(short) / "store")
        layout.ensure()
        assert layout.run_root.is_relative_to(short)
        assert {entry.name for entry in layout.store_root.iterdir()} == set(STORE_ENTRIES)
