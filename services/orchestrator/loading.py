"""The orchestrator's side of the resource service: before a turn, make its models resident
(showing LOADING with per-model progress and an ETA), pin them while the turn runs, prewarm on
speech start. With no resource service running every call returns at once.

Every progress report the resource service sends (several a second while a model loads) marks
the runner's turn alive (`SessionRunner.note_progress`), so a cold load that takes longer than
the stage timeout does not drop the turn as long as the load moves; a load that goes silent
still times out."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from shared import protocol as p
from shared.bus import Bus

if TYPE_CHECKING:
    from services.orchestrator.service import Orchestrator
    from services.orchestrator.session import SessionRunner

log = logging.getLogger("jarvis.orchestrator.loading")


class ResourceBridge:
    def __init__(self, bus: Bus, models: dict[str, str]) -> None:
        from services.resource.client import ResourceClient

        self.client = ResourceClient(bus)
        self.models = models  # pipeline role (stt, llm, vlm, tts) -> registry model id
        self._alive: tuple[bool, float] = (False, 0.0)

    async def refresh(self) -> bool:
        alive = await self.client.available()
        self._alive = (alive, time.monotonic())
        return alive

    async def available(self) -> bool:
        """Is a resource service running? Cached (the lease loop refreshes it every second)."""
        alive, checked = self._alive
        if time.monotonic() - checked > 3.0:
            alive = await self.refresh()
        return alive

    def known_absent(self) -> bool:
        """True when a fresh check found no resource service: nothing to wait for."""
        alive, checked = self._alive
        return not alive and time.monotonic() - checked <= 3.0

    def model_ids(self, roles: tuple[str, ...]) -> list[str]:
        return [self.models[r] for r in roles if self.models.get(r)]

    async def prepare(
        self, orch: Orchestrator, runner: SessionRunner, roles: tuple[str, ...], priority: str, quiet: bool
    ) -> None:
        from services.resource.client import ResourceError

        models = self.model_ids(roles)
        if not models or not await self.available():
            return
        holder = runner.sid if priority == "turn" else None
        shown: dict[str, p.ModelLoad] = {}
        before = runner.state
        alive = getattr(runner, "note_progress", None)
        try:
            async for prog in self.client.ensure(models, priority, holder=holder):
                if alive is not None:
                    alive()  # the resource service is working on it: not a stalled stage
                if quiet or prog.state == "ready" and not shown:
                    continue  # already resident: nothing to show
                shown[prog.model] = p.ModelLoad(model=prog.model, state=prog.state, progress=prog.progress)
                runner.set_state(p.State.LOADING)
                runner.event(p.Loading(models=list(shown.values()), eta_s=prog.eta_s))
                await orch.flush()
        except ResourceError as exc:
            if quiet:
                log.info("prewarm failed: %s", exc, extra={"session": runner.sid})
                return
            code = p.ErrorCode.WONT_FIT if exc.code == "wont_fit" else p.ErrorCode.MODEL_ERROR
            runner.error(code, f"could not load {', '.join(models)}: {exc}")
        finally:
            if shown and runner.state == p.State.LOADING:
                runner.set_state(before if before != p.State.LOADING else p.State.LISTENING)
                await orch.flush()

    async def release(self, runner: SessionRunner) -> None:
        if await self.available():
            await self.client.release(runner.sid)
