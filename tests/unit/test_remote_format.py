"""The pure parts of remote states: references, manifests, and the layer format round trip."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from sqlrs.adapters.oci.layers import LayerError, apply_layer, write_layer
from sqlrs.domain import keys
from sqlrs.domain.errors import UsageError
from sqlrs.domain.remote import (
    ARTIFACT_TYPE,
    LayerInfo,
    RegistryError,
    RuntimeNotes,
    build_manifest,
    parse_ref,
    postgres_major,
    read_manifest,
)


def test_parse_ref() -> None:
    ref = parse_ref("127.0.0.1:5000/team/states:sakila")
    assert (ref.host, ref.repository, ref.tag, ref.digest) == ("127.0.0.1:5000", "team/states", "sakila", None)
    assert ref.loopback and str(ref) == "127.0.0.1:5000/team/states:sakila"
    digest = "sha256:" + "a" * 64
    ref = parse_ref(f"registry.example.com/db@{digest}")
    assert ref.reference == digest and not ref.loopback
    assert parse_ref("localhost/x").loopback and parse_ref("[::1]:5000/x").loopback
    assert parse_ref("ghcr.io/org/x").reference == "latest"
    for bad in ("nohost", "host/UPPER", "host/x:bad tag", "host/x@sha256:12", "/x"):
        with pytest.raises(UsageError):
            parse_ref(bad)


def test_postgres_major() -> None:
    assert postgres_major("PostgreSQL 15.18 (Debian 15.18-0+deb12u1)") == "15"
    assert postgres_major("PostgreSQL 16.4") == "16"


def _chain() -> list[LayerInfo]:
    base = keys.base_id("identity", ("-E", "UTF8"))
    step = "b" * 64
    child = keys.state_id(base, step)
    return [LayerInfo(base, None, base, "base", None, "initdb", 10, 1.5, "sha256:" + "1" * 64, 100),
            LayerInfo(child, base, base, "psql", step, "schema.sql", 20, 2.5, "sha256:" + "2" * 64, 50)]


def test_manifest_round_trip() -> None:
    chain = _chain()
    notes = RuntimeNotes("native", "identity", "/usr/lib/postgresql/15/bin", "PostgreSQL 15.18")
    config = {"mediaType": "application/vnd.sqlrs.state.config.v1+json", "digest": "sha256:" + "3" * 64, "size": 2}
    manifest = build_manifest(chain, notes, config, "2026-01-01T00:00:00Z")
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["annotations"]["dev.sqlrs.postgres.major"] == "15"
    again, notes_again = read_manifest(manifest, "x")
    assert again == chain and notes_again == notes
    broken = {**manifest, "layers": list(reversed(manifest["layers"]))}
    with pytest.raises(RegistryError):
        read_manifest(broken, "x")
    with pytest.raises(RegistryError):
        read_manifest({**manifest, "artifactType": "other", "config": {"mediaType": "other"}}, "x")


def test_layers_reproduce_the_state_and_its_deletions(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    (parent / "base" / "1").mkdir(parents=True)
    (parent / "base" / "1" / "16384").write_bytes(os.urandom(300_000))
    (parent / "gone").mkdir()
    (parent / "gone" / "x").write_text("x")
    (parent / "deleted").write_text("d")
    (parent / "same").write_text("same")
    (parent / "empty").mkdir()
    child = tmp_path / "child"
    shutil.copytree(parent, child)  # keeps mtimes, as every snapshot backend does
    time.sleep(0.01)
    (child / "base" / "1" / "16384").write_bytes(os.urandom(300_000))
    shutil.rmtree(child / "gone")
    (child / "deleted").unlink()
    (child / "new").mkdir()
    (child / "new" / "file").write_text("n")

    whole = write_layer(parent, None, tmp_path / "parent.tar.zst")
    diff = write_layer(child, parent, tmp_path / "child.tar.zst")
    # the changed file, whiteouts for "gone" and "deleted", the new directory and its file; "same" stays out
    assert whole[0].startswith("sha256:") and diff[2] == 5
    target = tmp_path / "target"
    target.mkdir()
    apply_layer(tmp_path / "parent.tar.zst", target, None, None)
    assert subprocess.run(["diff", "-r", str(parent), str(target)], check=False).returncode == 0
    apply_layer(tmp_path / "child.tar.zst", target, None, None)
    assert subprocess.run(["diff", "-r", str(child), str(target)], check=False).returncode == 0

    garbage = tmp_path / "garbage"
    garbage.write_bytes(os.urandom(1000))
    with pytest.raises(LayerError):
        apply_layer(garbage, target, None, None)


def test_plain_http_only_on_loopback_unless_insecure() -> None:
    from sqlrs.adapters.oci.registry import OrasRegistry

    assert OrasRegistry(parse_ref("registry.example.com/team/x")).prefix == "https"
    assert OrasRegistry(parse_ref("registry.example.com/team/x"), insecure=True).prefix == "http"
    for host in ("127.0.0.1:5000", "localhost:5000", "localhost", "[::1]:5000"):
        assert OrasRegistry(parse_ref(f"{host}/team/x")).prefix == "http", host
