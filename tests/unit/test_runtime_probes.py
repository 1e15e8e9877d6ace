"""Runtime probes for `status`: a stale answer is served at once and refreshed in the background."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlrs.ports.runtime import Probe
from sqlrs.services.instances.runtimes import RuntimeRegistry


class SlowRuntime:
    """A runtime whose probe waits until the test lets it answer."""

    name = "native"

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()
        self.release.set()

    def probe(self) -> Probe:
        self.calls += 1
        assert self.release.wait(60)
        return Probe("native", True, f"answer {self.calls}")


def make() -> tuple[RuntimeRegistry, SlowRuntime]:
    runtime = SlowRuntime()
    factories: dict[str, Any] = {"native": lambda: runtime}
    return RuntimeRegistry(factories, lambda: ("native", "config")), runtime


def age(registry: RuntimeRegistry, name: str) -> None:
    stamp, answer = registry._probes[name]
    registry._probes[name] = (stamp - 3600, answer)


def test_status_gets_the_stale_answer_while_a_background_probe_refreshes_it() -> None:
    registry, runtime = make()
    assert registry.probe_all(wait=False)[0].reason == "answer 1"  # nothing cached yet: it waits
    age(registry, "native")
    runtime.release.clear()  # the next probe hangs until released
    assert [p.reason for p in registry.probe_all(wait=False)] == ["answer 1"]
    choice = registry.choose(None, wait=False)
    assert choice.probes[0].reason == "answer 1" and choice.reason == "native: chosen by config"
    deadline = time.monotonic() + 60
    while runtime.calls < 2 and time.monotonic() < deadline:  # the refresh started, only once
        time.sleep(0.01)
    assert runtime.calls == 2
    runtime.release.set()
    while registry._refreshing and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not registry._refreshing
    assert registry.probe("native", wait=False).reason == "answer 2"
    assert runtime.calls == 2


def test_a_waiting_probe_asks_again_when_stale() -> None:
    registry, runtime = make()
    registry.probe("native")
    age(registry, "native")
    assert registry.probe("native").reason == "answer 2"
    assert runtime.calls == 2



def test_status_trusts_a_recent_yes_of_the_usability_check_and_requests_ask_again() -> None:
    registry, _ = make()
    asked: list[str] = []

    def check(runtime: Any) -> None:
        asked.append(runtime.name)

    assert registry.unusable("native", "img", check) is None
    assert registry.unusable("native", "img", check, wait=False) is None  # status: the yes from just now
    assert asked == ["native"]
    assert registry.unusable("native", "img", check) is None  # a request asks again
    assert asked == ["native", "native"]
    registry.forget_probe("native")
    assert registry.unusable("native", "img", check, wait=False) is None
    assert asked == ["native", "native", "native"]
