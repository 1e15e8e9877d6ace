"""Property-based abuse of the HTTP API: always a 4xx with a JSON error, never a 500 or a traceback."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from harness import Sqlrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlrs.entrypoints.cli.client import EngineClient

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
step_like = st.fixed_dictionaries(
    {"kind": st.sampled_from(["file", "command", "bogus"]), "source": st.text(max_size=10)},
    optional={"sql": st.text(max_size=40) | st.integers(), "files": st.lists(json_values, max_size=2)},
)
prepare_like = st.fixed_dictionaries(
    {}, optional={"steps": st.lists(step_like, max_size=3) | json_values, "runtime": json_values,
                  "name": st.text(max_size=70) | json_values, "options": json_values, "image": json_values,
                  "plan_only": json_values, "on_name": json_values, "unknown": json_values},
)
ids = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=80)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def engine() -> Iterator[EngineClient]:
    from fixtures import native_available  # the module-scoped engine needs no PostgreSQL, only an engine
    from harness import short_tmp

    del native_available
    state_dir = short_tmp("sqh")
    harness = Sqlrs(state_dir)
    harness.env["SQLRS_MAX_BODY"] = str(1024 * 1024)
    assert harness.run("engine", "start").returncode == 0
    info = json.loads((state_dir / "engine.json").read_text())
    try:
        yield EngineClient(info["endpoint"], info["token"])
    finally:
        assert not harness.close()
        import shutil

        shutil.rmtree(state_dir, ignore_errors=True)


def http_connection(client: EngineClient) -> http.client.HTTPConnection:
    """A plain http.client connection on the engine's socket (the tests' own HTTP client)."""

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(30)
            self.sock.connect(client.endpoint[len("unix://"):])

    return UnixConnection("engine")


def send(client: EngineClient, method: str, path: str, body: bytes | None) -> tuple[int, Any]:
    conn = http_connection(client)
    headers = {"Authorization": f"Bearer {client.token}", "Content-Type": "application/json"}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    try:
        return response.status, json.loads(raw) if raw else None
    except ValueError:
        return response.status, raw


def assert_clean_error(status: int, body: Any) -> None:
    assert status < 500, (status, body)
    if status >= 400:
        assert isinstance(body, dict) and {"code", "message", "details"} <= set(body), body
        assert "Traceback" not in json.dumps(body)


@SETTINGS
@given(body=prepare_like)
def test_prepare_with_arbitrary_json(engine: EngineClient, body: dict[str, Any]) -> None:
    body["plan_only"] = True  # never build: random steps are only planned
    status, answer = send(engine, "POST", "/v1/prepare-jobs", json.dumps(body).encode())
    assert_clean_error(status, answer)


@SETTINGS
@given(body=json_values)
def test_every_write_endpoint_with_arbitrary_json(engine: EngineClient, body: Any) -> None:
    for method, path in (("POST", "/v1/prepare-jobs"), ("POST", "/v1/runs"), ("PATCH", "/v1/config")):
        status, answer = send(engine, method, path, json.dumps(body).encode())
        assert_clean_error(status, answer)
        if method == "PATCH":
            assert status in (200, 400), answer


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_malformed_bodies(engine: EngineClient, raw: bytes) -> None:
    for method, path in (("POST", "/v1/prepare-jobs"), ("POST", "/v1/runs"), ("PATCH", "/v1/config")):
        status, answer = send(engine, method, path, raw)
        assert_clean_error(status, answer)


@SETTINGS
@given(ref=ids)
def test_arbitrary_ids_and_names(engine: EngineClient, ref: str) -> None:
    from urllib.parse import quote

    quoted = quote(ref, safe="")
    for method, path in (("GET", f"/v1/instances/{quoted}"), ("GET", f"/v1/states/{quoted}"),
                         ("GET", f"/v1/prepare-jobs/{quoted}"), ("GET", f"/v1/names/{quoted}"),
                         ("DELETE", f"/v1/instances/{quoted}?dry_run=true"),
                         ("DELETE", f"/v1/states/{quoted}?dry_run=true"),
                         ("POST", f"/v1/prepare-jobs/{quoted}/cancel"),
                         ("GET", f"/v1/prepare-jobs/{quoted}/events?follow=0")):
        status, answer = send(engine, method, path, None)
        assert_clean_error(status, answer)


def test_huge_bodies_are_refused_with_413(engine: EngineClient) -> None:
    # declared too large: refused from the headers alone, before a byte of the body is read
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(engine.endpoint[len("unix://"):])
    sock.sendall(f"POST /v1/prepare-jobs HTTP/1.1\r\nHost: engine\r\nAuthorization: Bearer {engine.token}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {64 * 1024 * 1024}\r\n\r\n".encode())
    sock.settimeout(10)
    head = ""
    while '"body_too_large"' not in head:
        data = sock.recv(65536)
        if not data:
            break
        head += data.decode()
    sock.close()
    assert head.startswith("HTTP/1.1 413"), head
    assert '"body_too_large"' in head
    # streamed without a length (chunked): refused once the limit is crossed
    conn = http_connection(engine)
    conn.putrequest("POST", "/v1/prepare-jobs")
    conn.putheader("Authorization", f"Bearer {engine.token}")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b"x" * 65536
    try:
        for _ in range(40):
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except BrokenPipeError:
        pass
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["code"] == "body_too_large"
    conn.close()


def test_unknown_fields_and_wrong_types(engine: EngineClient) -> None:
    for body in ({"steps": [], "plan_only": True, "extra": 1},
                 {"steps": [{"kind": "command", "source": "-c", "sql": "select 1", "more": 2}]},
                 {"steps": "nope"}, {"instance": 5, "tool": "psql"}, {"tool": "rm"}):
        status, answer = send(engine, "POST", "/v1/prepare-jobs" if "steps" in body else "/v1/runs",
                              json.dumps(body).encode())
        assert status == 400, (body, answer)
        assert_clean_error(status, answer)
