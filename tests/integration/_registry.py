"""A real OCI registry for the tests: Debian's docker-registry (the CNCF distribution).

Started on a free 127.0.0.1 port with its storage in a temporary directory, optionally behind
htpasswd basic auth; its log (one line per request) lets tests count blob uploads.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

BINARY = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd line (the only hash the registry accepts)."""
    if shutil.which("htpasswd"):
        out = subprocess.run(["htpasswd", "-nbB", user, password], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    import bcrypt

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()}"


class Registry:
    def __init__(self, root: Path, auth: tuple[str, str] | None = None):
        self.root = root
        self.storage = root / "storage"
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log_path = root / "registry.log"
        self.auth = auth
        lines = ["version: 0.1", "log:", "  level: info", "  formatter: text", "storage:",
                 "  filesystem:", f"    rootdirectory: {self.storage}", "  delete:", "    enabled: true",
                 "http:", f"  addr: 127.0.0.1:{self.port}"]
        if auth:
            (root / "htpasswd").write_text(htpasswd_line(*auth) + "\n")
            lines += ["auth:", "  htpasswd:", "    realm: sqlrs-test", f"    path: {root / 'htpasswd'}"]
        (root / "config.yml").write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([BINARY, "serve", str(self.root / "config.yml")], stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2)
                return
            except urllib.error.HTTPError:
                return  # 401: up, wants credentials
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"docker-registry exited: {self.log_path.read_text()[-2000:]}") from None
                time.sleep(0.1)
        raise RuntimeError("docker-registry did not answer within 60 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(20)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def upload_sessions(self) -> int:
        """Blob uploads started (POST .../blobs/uploads/) so far."""
        return sum(1 for line in self.log().splitlines()
                   if "http.request.method=POST" in line and "/blobs/uploads/" in line and "response completed" in line)

    def blob_file(self, digest: str) -> Path:
        hexdigest = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
