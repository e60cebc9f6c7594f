"""The orchestrator's bridge to the resource service (services/orchestrator/loading.py), with a
stand-in runner, orchestrator and resource client: no Redis.

Problem 6 of the GPU issue: a cold load counted against the stage timeout from turn start, so
the first turn after an eviction could be dropped mid-load. Each progress report must now mark
the turn alive, and the client must keep seeing LOADING with the ETA."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from services.orchestrator.loading import ResourceBridge
from services.resource import messages as m
from shared import protocol as p


@dataclass
class PlainRunner:
    """The runner's surface the bridge uses, as it was before `note_progress`."""

    sid: str = "s1"
    state: p.State = p.State.THINKING
    events: list[Any] = field(default_factory=list)
    states: list[p.State] = field(default_factory=list)
    alive_marks: int = 0
    errors: list[tuple[Any, str]] = field(default_factory=list)

    def set_state(self, state: p.State) -> None:
        self.state = state
        self.states.append(state)

    def event(self, ev: Any) -> None:
        self.events.append(ev)

    def error(self, code: Any, message: str) -> None:
        self.errors.append((code, message))


@dataclass
class FakeRunner(PlainRunner):
    def note_progress(self) -> None:
        self.alive_marks += 1


class FakeOrch:
    flushes = 0

    async def flush(self) -> None:
        self.flushes += 1


class FakeClient:
    def __init__(self, progress: list[m.ModelProgress]):
        self.progress = progress
        self.calls: list[tuple[list[str], str, str | None]] = []

    async def available(self) -> bool:
        return True

    async def ensure(
        self, models: list[str], priority: str, holder: str | None = None
    ) -> AsyncIterator[m.ModelProgress]:
        self.calls.append((list(models), priority, holder))
        for prog in self.progress:
            yield prog


def bridge(progress: list[m.ModelProgress]) -> tuple[ResourceBridge, FakeClient]:
    b = ResourceBridge.__new__(ResourceBridge)
    b.models = {"stt": "whisper", "llm": "llm", "tts": "chatterbox"}
    b._alive = (True, 1e18)  # fresh: no refresh
    client = FakeClient(progress)
    b.client = client  # type: ignore[assignment]
    return b, client


def loading(model: str, frac: float, eta: float, state: str = "loading") -> m.ModelProgress:
    return m.ModelProgress("r1", model, state, frac, eta, "waiting for health check")


async def test_every_progress_report_marks_the_turn_alive_and_shows_loading_with_its_eta():
    reports = [
        loading("llm", 0.0, 60.0, "queued"),
        *(loading("llm", i / 10, 60.0 - 6 * i) for i in range(10)),
        loading("llm", 1.0, 0.0, "ready"),
    ]
    b, client = bridge(reports)
    runner, orch = FakeRunner(), FakeOrch()
    await b.prepare(orch, runner, ("llm",), "turn", quiet=False)  # type: ignore[arg-type]
    assert runner.alive_marks == len(reports)
    shown = [e for e in runner.events if isinstance(e, p.Loading)]
    assert len(shown) == len(reports)
    assert [e.eta_s for e in shown[1:4]] == [60.0, 54.0, 48.0]
    assert p.State.LOADING in runner.states and runner.state == p.State.THINKING  # back after the load
    assert client.calls == [(["llm"], "turn", "s1")]  # pinned for the session's turn
    assert runner.errors == []


async def test_a_prewarm_marks_alive_too_but_shows_nothing():
    b, _ = bridge([loading("whisper", 0.5, 3.0), loading("whisper", 1.0, 0.0, "ready")])
    runner = FakeRunner(state=p.State.LISTENING)
    await b.prepare(FakeOrch(), runner, ("stt",), "prewarm", quiet=True)  # type: ignore[arg-type]
    assert runner.alive_marks == 2 and runner.events == [] and runner.states == []


async def test_a_runner_without_note_progress_still_loads():
    """A runner without `note_progress` (before the orchestrator's refactor) still loads."""
    b, _ = bridge([loading("llm", 0.5, 3.0), loading("llm", 1.0, 0.0, "ready")])
    runner = PlainRunner()
    await b.prepare(FakeOrch(), runner, ("llm",), "turn", quiet=False)  # type: ignore[arg-type]
    assert len(runner.events) == 2 and runner.errors == []
