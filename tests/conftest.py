"""Test-wide setup: the end-to-end harness lives in tests/integration and serves every suite."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "integration"))
sys.path.insert(0, str(Path(__file__).parent))  # tests/fakes.py: fakes of the ports for service tests
