"""What a session runner needs from the process that hosts it (`SessionHost`): the outbox,
background tasks, the resource service, worker liveness, the atomic epoch bump, saving and
ending the session, and batched VAD scoring. The orchestrator implements it over Redis; the
unit tests implement it in memory, so the runner's state machine runs without Redis."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from shared import protocol as p

if TYPE_CHECKING:
    from services.orchestrator.session import SessionRunner


class SessionHost(Protocol):
    def put(self, stream: str, msg: Any, maxlen: int | None = None) -> None:
        """Queue an entry; entries leave in order with the next flush."""

    async def flush(self) -> None:
        """Write every queued entry now."""

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` in the background; its failure is logged, never raised."""

    def may_load(self) -> bool:
        """False when no resource service runs, so a turn has nothing to wait for."""

    async def prepare(
        self, runner: SessionRunner, roles: tuple[str, ...], priority: str, quiet: bool = False
    ) -> None:
        """Make the models of `roles` resident (LOADING shown to the client unless quiet)."""

    async def release(self, runner: SessionRunner) -> None:
        """The runner's turn is over: its models may be evicted again."""

    def workers_known(self, kind: str) -> bool:
        """Whether a worker served `jobs:{kind}` when last asked (no round trip)."""

    async def has_workers(self, kind: str) -> bool:
        """Whether any worker serves `jobs:{kind}` now."""

    async def bump_epoch(self, runner: SessionRunner, event: p.Interrupted | None) -> int:
        """Start a new epoch and tell the client (`event`; None: nothing to tell, the jobs
        cancelled made nothing the client saw), atomically; returns the new epoch."""

    async def save(self, runner: SessionRunner) -> None:
        """Write the session file."""

    async def end_session(self, runner: SessionRunner, quiet: bool = False) -> None:
        """The client stopped: save, let the session go."""

    def score_vad(self, runner: SessionRunner, windows: np.ndarray, ts: float) -> None:
        """Queue VAD windows for the next batched call; each result comes back as
        `runner.on_vad(prob, ts)`, in order."""
