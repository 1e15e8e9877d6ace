"""Per-instance passwords and their SCRAM-SHA-256 verifiers.

The engine sends PostgreSQL the verifier, never the password, so the password cannot end up in
a server log (RFC 5802/7677, the format `pg_authid.rolpassword` stores).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCRAM_ITERATIONS = 4096


def new_password() -> str:
    """A random password safe to put in a URL without escaping."""
    return secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
