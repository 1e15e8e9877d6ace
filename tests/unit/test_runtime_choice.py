"""Choosing a runtime in `auto`: a daemon that answers but cannot get the image is passed over."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sqlrs.domain.errors import RuntimeUnavailable
from sqlrs.ports.runtime import Probe
from sqlrs.services.instances.runtimes import RuntimeRegistry


class Stub:
    """Just enough of a Runtime for choosing one: a probe and an image store."""

    def __init__(self, name: str, available: bool = True, images: tuple[str, ...] = ("postgres:17",)):
        self.name = name
        self.available = available
        self.images = set(images)
        self.lookups = 0

    def probe(self) -> Probe:
        return Probe(self.name, self.available, f"{self.name} {'answers' if self.available else 'is down'}")

    def has(self, image: str) -> None:
        self.lookups += 1
        if self.name != "native" and image not in self.images:
            raise RuntimeUnavailable(f"image {image} is not available to {self.name} and cannot be pulled")


def registry(*stubs: Stub, configured: str = "auto") -> RuntimeRegistry:
    factories: dict[str, Any] = {stub.name: (lambda stub=stub: stub) for stub in stubs}
    return RuntimeRegistry(factories, lambda: (configured, "default"))


def image_check(image: str) -> tuple[str, Any]:
    return image, lambda runtime: runtime.has(image)


def test_auto_passes_over_a_runtime_that_cannot_get_the_image_and_says_why() -> None:
    docker, podman, native = Stub("docker", images=()), Stub("podman", images=()), Stub("native")
    choice = registry(docker, podman, native).choose(None, image_check("postgres:17"))
    assert choice.runtime is native
    assert [p.name for p in choice.skipped] == ["docker", "podman"]
    assert all("postgres:17 is not available" in p.reason for p in choice.skipped)
    assert "skipped docker: image postgres:17" in choice.reason


def test_auto_takes_the_first_runtime_that_has_the_image() -> None:
    docker, podman = Stub("docker", images=()), Stub("podman")
    choice = registry(docker, podman, Stub("native")).choose(None, image_check("postgres:17"))
    assert choice.runtime is podman
    assert [p.name for p in choice.skipped] == ["docker"]


def test_a_daemon_that_does_not_answer_is_not_counted_as_skipped_for_its_image() -> None:
    choice = registry(Stub("docker", available=False), Stub("native")).choose(None, image_check("postgres:17"))
    assert choice.runtime.name == "native"
    assert choice.skipped == ()


def test_an_explicit_runtime_is_not_checked_for_the_image() -> None:
    docker = Stub("docker", images=())
    choice = registry(docker, Stub("native")).choose("docker", image_check("postgres:17"))
    assert choice.runtime is docker  # using it then fails with the pull hint
    assert docker.lookups == 0


def test_a_missing_image_is_remembered_for_a_while_and_forgotten_after_a_runtime_failure() -> None:
    docker = Stub("docker", images=())
    chooser = registry(docker, Stub("native"))
    chooser.choose(None, image_check("postgres:17"))
    chooser.choose(None, image_check("postgres:17"))
    assert docker.lookups == 1  # no second pull attempt on every prepare
    docker.images.add("postgres:17")
    chooser.forget_probe("docker")
    assert chooser.choose(None, image_check("postgres:17")).runtime is docker


def test_no_usable_runtime_lists_every_reason() -> None:
    with pytest.raises(RuntimeUnavailable) as caught:
        registry(Stub("docker", images=()), Stub("native", available=False)).choose(None, image_check("pg:1"))
    assert "image pg:1 is not available to docker" in caught.value.message
    assert "native is down" in caught.value.message


def test_validate_reports_what_auto_would_skip() -> None:
    answers = registry(Stub("docker", images=()), Stub("native")).validate(image_check("postgres:17"))
    assert [(p.name, p.available) for p in answers] == [("docker", False), ("native", True)]
    assert "daemon answers, but image postgres:17" in answers[0].reason


def test_rebuild_keeps_the_working_adapter_when_the_new_settings_fail(tmp_path: Path) -> None:
    built: list[Stub] = []
    settings = {"ok": True}

    def make() -> Stub:
        stub = Stub("native", available=settings["ok"])
        built.append(stub)
        return stub

    factories: dict[str, Any] = {"native": make}  # a Stub stands in for the Runtime port
    chooser = RuntimeRegistry(factories, lambda: ("auto", "default"))
    first = chooser.get("native")
    settings["ok"] = False
    assert not chooser.rebuild("native").available
    assert chooser.get("native") is first
    settings["ok"] = True
    assert chooser.rebuild("native").available
    assert chooser.get("native") is built[-1] is not first


def test_without_any_registered_runtime_the_answer_says_to_reinstall() -> None:
    with pytest.raises(RuntimeUnavailable, match="no runtime is registered") as caught:
        registry().choose(None)
    assert caught.value.hint is not None and "pip install" in caught.value.hint
