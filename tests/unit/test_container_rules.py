"""The pure parts of the container runtimes: image references, content digests, the container
layout and the image facts. No daemon: these are values in, values out."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlrs.adapters.containers import layout
from sqlrs.adapters.containers.imagecache import parse_facts
from sqlrs.adapters.containers.images import (
    ImageInfo,
    content_digest,
    identity_digest,
    image_identity,
    local_candidates,
    normalize_repository,
    qualified,
)
from sqlrs.domain.errors import RuntimeFailure, RuntimeUnavailable
from sqlrs.ports.runtime import InstanceSpec, RuntimeIdentity

A, B, C, D, E = ("sha256:" + ch * 64 for ch in "abcde")


def test_normalize_repository() -> None:
    assert normalize_repository("postgres:17") == "docker.io/library/postgres"
    assert normalize_repository("postgres") == "docker.io/library/postgres"
    assert normalize_repository("bitnami/postgresql:16") == "docker.io/bitnami/postgresql"
    assert normalize_repository("index.docker.io/library/postgres") == "docker.io/library/postgres"
    assert normalize_repository("localhost/x:1") == "localhost/x"
    assert normalize_repository("localhost:5000/a/b@sha256:00") == "localhost:5000/a/b"
    assert normalize_repository("ghcr.io/o/pg:16") == "ghcr.io/o/pg"


def test_qualified_names_a_tag_or_digest() -> None:
    assert qualified("postgres:17") == "docker.io/library/postgres:17"
    assert qualified("postgres") == "docker.io/library/postgres:latest"
    assert qualified("localhost:5000/pg") == "localhost:5000/pg:latest"
    assert qualified(f"postgres@{A}") == f"docker.io/library/postgres@{A}"


def test_content_digest_rules() -> None:
    local = ImageInfo(id=A, repo_digests=(f"localhost/x@{B}",))
    assert content_digest("localhost/x:1", local) == A  # podman's own localhost digests do not count
    pulled = ImageInfo(
        id=A,
        repo_digests=(f"docker.io/library/postgres@{C}", f"docker.io/library/postgres@{D}"),
        manifest_digest=C,
    )
    assert content_digest("postgres:17", pulled) == D  # the list digest, not the platform manifest's
    assert content_digest(f"postgres@{E}", pulled) == E  # a reference by digest is that digest
    other = ImageInfo(id=A, repo_digests=(f"ghcr.io/o/pg@{C}", f"docker.io/library/postgres@{B}"))
    assert content_digest("postgres:17", other) == B  # the requested repository first
    assert content_digest("mirror.local/pg:17", other) == B  # then any registry's, sorted
    assert content_digest("x", ImageInfo(id="f" * 64)) == "sha256:" + "f" * 64


def test_identity_round_trip_and_local_candidates() -> None:
    assert identity_digest(image_identity(A)) == A
    assert local_candidates(image_identity(A), None) == [A]
    assert local_candidates(image_identity(A), "postgres:17") == [A, f"docker.io/library/postgres@{A}"]


def _spec(**settings: str) -> InstanceSpec:
    identity = RuntimeIdentity(runtime="docker", identity=image_identity(A), version="PostgreSQL 16.4",
                               description="", image="postgres:16", server_uid=999, server_gid=999)
    return InstanceSpec(instance_id="i/1 x", data_dir=Path("/s/d"), run_dir=Path("/s/r"), port=6543,
                        identity=identity, settings=settings)


def test_server_container_layout() -> None:
    config = layout.server_config(_spec(fsync="off", port="1", listen_addresses="0"), "img", {"sqlrs.state_dir": "/s"})
    assert config.name == "sqlrs-i-1-x"
    assert config.image == "img" and config.user == "postgres" and config.stop_signal == "SIGINT"
    assert config.labels == {
        "sqlrs.state_dir": "/s", "sqlrs.role": "server", "sqlrs.instance": "i/1 x", "sqlrs.data_dir": "/s/d",
        "sqlrs.run_dir": "/s/r", "sqlrs.port": "6543",
    }
    # the caller's settings, except those the layout needs
    assert config.command == ("-D", layout.PGDATA, "-p", "6543", "-c", "fsync=off", "-c", "listen_addresses=*",
                              "-c", f"unix_socket_directories={layout.RUN_DIR}")
    assert [(m.source, m.target, m.read_only) for m in config.mounts] == [
        ("/s/d", layout.PGDATA, False), ("/s/r", layout.RUN_DIR, False), ("/s/r/scripts", layout.SCRIPTS_DIR, True),
    ]
    assert config.ports == {6543: ("127.0.0.1", 6543)}
    kwargs = config.create_kwargs()
    assert kwargs["ports"] == {"6543/tcp": ("127.0.0.1", 6543)} and kwargs["name"] == "sqlrs-i-1-x"
    assert "network_mode" not in kwargs


def test_one_shot_containers_have_no_network_and_a_role() -> None:
    for config in (layout.initdb_config("img", {}, Path("/s/d"), ["-E", "UTF8"]),
                   layout.chown_config("img", {}, Path("/s/d")), layout.facts_config("img", {})):
        assert config.create_kwargs()["network_mode"] == "none"
        assert config.labels["sqlrs.role"] in ("initdb", "inspect")
    assert layout.initdb_config("img", {}, Path("/s/d"), ["-E", "UTF8"]).command == (
        "-D", layout.PGDATA, "-U", "postgres", "-E", "UTF8")


def test_tool_path_and_environment() -> None:
    spec = _spec()
    assert layout.tool_path(spec, Path("/s/r/scripts/a/b.sql")) == f"{layout.SCRIPTS_DIR}/a/b.sql"
    assert layout.tool_path(spec, Path("/s/r/scripts")) == layout.SCRIPTS_DIR
    with pytest.raises(RuntimeFailure, match="not under the instance's scripts directory"):
        layout.tool_path(spec, Path("/s/r/other.sql"))
    env = layout.tool_environment(spec, {"PGAPPNAME": "x", "PGUSER": "me"})
    assert env == {"PGHOST": layout.RUN_DIR, "PGPORT": "6543", "PGUSER": "me", "PGDATABASE": "postgres",
                   "PGAPPNAME": "x"}
    assert layout.tool_command("psql", ["-X"], "/tmp/p")[-2:] == ["psql", "-X"]


def test_image_facts() -> None:
    facts = parse_facts(0, "postgres (PostgreSQL) 16.4\n999\n998\n", "", "img")
    assert (facts.version, facts.uid, facts.gid) == ("PostgreSQL 16.4", 999, 998)
    with pytest.raises(RuntimeUnavailable, match="does not look like a PostgreSQL image") as caught:
        parse_facts(127, "", "sh: postgres: not found", "busybox")
    assert "postgres: not found" in caught.value.message and caught.value.hint
