"""A minimal HTTP/1.1 client for talking to the engine (docs/decisions/0002-cli-http-client.md).

The CLI starts for every command, and `http.client` costs ~12 ms of imports (email parsing,
ssl) that every `sqlrs status` would pay. The engine is always ours and always local, so one
request per connection, `Content-Length` bodies out, `Content-Length` or chunked bodies back,
is all this needs to speak.
"""

from __future__ import annotations

# `_socket`, the C module under `socket`: socket.py builds its IntEnums by scanning _socket's
# constants at import (plus selectors, array, math), ~2 ms of every command for the four calls
# this module makes (connect, sendall, recv, close), which the C socket object has itself.
import _socket

TYPE_CHECKING = False  # collections.abc/typing are not imported on the CLI's hot path
if TYPE_CHECKING:
    from collections.abc import Iterator


class WireError(OSError):
    """The engine's answer was not HTTP as this client speaks it."""


class Reply:
    """One HTTP response whose body is read lazily from the socket."""

    def __init__(self, sock: _socket.socket, status: int, headers: dict[str, str], buffered: bytes):
        self.status = status
        self.headers = headers
        self._sock = sock
        self._buffer = buffered
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        self._remaining = int(length) if length is not None and not self._chunked else None
        self._chunk_left = 0
        self._done = False

    def _fill(self) -> bool:
        data = self._sock.recv(65536)
        if not data:
            return False
        self._buffer += data
        return True

    def _take_line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            if not self._fill():
                raise WireError("connection closed in the middle of a chunk header")
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def _take(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not self._fill():
                raise WireError("connection closed in the middle of the body")
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def read_some(self) -> bytes:
        """The next piece of the body; b"" at its end."""
        if self._done:
            return b""
        if self._chunked:
            if self._chunk_left == 0:
                size = int(self._take_line().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self._done = True
                    return b""
                self._chunk_left = size
            if not self._buffer and not self._fill():
                raise WireError("connection closed in the middle of a chunk")
            data = self._buffer[: self._chunk_left]
            self._buffer = self._buffer[len(data):]
            self._chunk_left -= len(data)
            if self._chunk_left == 0:
                self._take(2)  # the CRLF after each chunk
            return data
        if self._remaining is None:  # no length: the body runs to the end of the connection
            if not self._buffer and not self._fill():
                self._done = True
                return b""
            data, self._buffer = self._buffer, b""
            return data
        if self._remaining == 0:
            self._done = True
            return b""
        if not self._buffer and not self._fill():
            raise WireError("connection closed before the whole body arrived")
        data = self._buffer[: self._remaining]
        self._buffer = self._buffer[len(data):]
        self._remaining -= len(data)
        return data

    def read(self) -> bytes:
        parts: list[bytes] = []
        while True:
            part = self.read_some()
            if not part:
                return b"".join(parts)
            parts.append(part)

    def iter_lines(self) -> Iterator[bytes]:
        pending = b""
        while True:
            part = self.read_some()
            if not part:
                if pending:
                    yield pending
                return
            pending += part
            *lines, pending = pending.split(b"\n")
            yield from lines

    def close(self) -> None:
        self._sock.close()


def connect(endpoint: str, timeout: float | None) -> _socket.socket:
    """A connected socket to `unix:///path` or `http://host:port`."""
    if endpoint.startswith("unix://"):
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        address: str | tuple[str, int] = endpoint[len("unix://"):]
    else:
        hostport = endpoint.split("://", 1)[-1].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        sock = _socket.socket(_socket.AF_INET6 if ":" in host else _socket.AF_INET, _socket.SOCK_STREAM)
        address = (host, int(port or 80))
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def exchange(sock: _socket.socket, method: str, path: str, headers: dict[str, str], body: bytes | None) -> Reply:
    """Send one request on `sock` and read the status line and headers of its answer."""
    lines = [f"{method} {path} HTTP/1.1", "Host: engine", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
    buffered = b""
    while b"\r\n\r\n" not in buffered:
        data = sock.recv(65536)
        if not data:
            raise WireError("the engine closed the connection without an answer")
        buffered += data
        if len(buffered) > 1 << 20:
            raise WireError("answer headers too long")
    head, _, rest = buffered.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise WireError(f"not an HTTP answer: {status_line[:80]!r}")
    answer_headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    return Reply(sock, int(parts[1]), answer_headers, rest)
