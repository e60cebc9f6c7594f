"""Housekeeping of the planner's residents: what happens between requests.

Every tick: holds whose holder stopped renewing expire; idle models past their keep-alive
are put to sleep (when they can and host RAM allows) or stopped, and sleeping ones past
another keep-alive are stopped. Every `health_interval_s`: every resident server is probed;
one that died is removed and restarted (when held, sticky or preloaded, at most
`max_restarts` per `restart_window_s`) or reported. At start: servers a previous run of the
service left behind are adopted (or removed), then the registry's `preload` models start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from services.resource.locks import HOUSEKEEPING, TURN
from services.resource.planner import PlanError, Planner, Resident

log = logging.getLogger(__name__)


class Housekeeper:
    def __init__(self, planner: Planner):
        self.planner = planner
        self._restarts: dict[str, list[float]] = {}

    # ---- expiry -------------------------------------------------------------------

    def expire_holders(self) -> list[str]:
        p = self.planner
        gone = p.holds.expire()
        for h in gone:
            log.warning("hold of %s on %s expired (holder gone?)", h.holder, ", ".join(sorted(h.models)))
            p.after_release(h.models)
        return [h.holder for h in gone]

    def _idle_expired(self, r: Resident, now: float) -> bool:
        spec = self.planner.registry.models.get(r.model)
        return (
            r.state in ("ready", "sleeping")
            and spec is not None
            and not spec.sticky
            and self.planner.expired(r, now)
        )

    async def expire_idle(self) -> list[str]:
        """Idle, non-sticky models past their keep-alive: sleep (if they can) or stop; returns the stopped."""
        p = self.planner
        stopped: list[str] = []
        for device in sorted({r.device for r in p.residents.values()}):
            now = p.clock()
            if not any(self._idle_expired(r, now) for r in p.residents.values() if r.device == device):
                continue
            async with p.lock(device).hold(HOUSEKEEPING):
                now = p.clock()
                before = await p.gpu.info(device)
                expect = 0
                budget = await p.host_budget()
                for r in [r for r in p.residents.values() if r.device == device]:
                    if not self._idle_expired(r, now):
                        continue
                    why = f"idle past its keep-alive ({p.keep_alive(r.model):.0f}s)"
                    spec = p.spec(r.model)
                    if r.state == "ready" and spec.sleep is not None and p.host_mib(r.model) <= budget:
                        awake = r.observed_mib
                        held = await p.sleep(r, why)
                        if held is not None:
                            budget -= p.host_mib(r.model)
                            expect += max(0, awake - held)
                            continue
                        stopped.append(r.model)  # sleep failed: it was stopped
                        continue
                    expect += r.observed_mib
                    await p.stop(r, why)
                    stopped.append(r.model)
                # the next plan must see that memory free, not as somebody else's
                await p.wait_released(device, before.free_mib, expect, 1 << 40)
        return stopped

    # ---- health -------------------------------------------------------------------

    async def check_health(self) -> list[str]:
        """Probe every resident model; a dead one is removed and restarted or reported."""
        p = self.planner
        dead: list[str] = []
        for r in list(p.residents.values()):
            if r.state not in ("ready", "sleeping") or r.handle is None:
                continue
            spec = p.registry.models.get(r.model)
            if spec is None:
                continue
            rt = p.runtimes.for_kind(r.handle.kind)
            try:
                ok = await rt.probe(r.handle, spec.runtime)
                alive = ok or await rt.alive(r.handle, spec.runtime)
            except Exception as exc:  # noqa: BLE001 -- a probe that errors counts as failed
                log.warning("probing %s: %s", r.model, exc)
                ok, alive = False, True
            if ok:
                r.health_failures = 0
                continue
            r.health_failures += 1
            if alive and r.health_failures < 3:
                continue
            dead.append(r.model)
            await self._handle_death(r, "exited" if not alive else "stopped answering its health check")
        return dead

    async def _handle_death(self, r: Resident, why: str) -> None:
        p = self.planner
        async with p.lock(r.device).hold(TURN):
            if p.residents.get(r.model) is not r:
                return
            await p.stop(r, why)  # removes leftovers (container, process group)
        spec = p.registry.models.get(r.model)
        held = p.holds.is_held(r.model)
        want = held or bool(spec and (spec.sticky or spec.preload))
        now = time.monotonic()
        recent = [t for t in self._restarts.get(r.model, []) if now - t < p.settings.restart_window_s]
        if want and len(recent) < p.settings.max_restarts:
            recent.append(now)
            self._restarts[r.model] = recent
            await p.event(r.model, "restarting", f"{why}; restart {len(recent)}/{p.settings.max_restarts}")
            p.spawn(self._restart(r.model, "turn" if held else "prewarm"))
        else:
            reason = f"{why}; not restarted" + (
                f" (gave up after {len(recent)} restarts)" if want else " (idle: it loads again on demand)"
            )
            await p.event(r.model, "failed", reason)

    async def _restart(self, model: str, priority: str) -> None:
        try:
            await self.planner.ensure([model], priority)
        except PlanError as exc:
            await self.planner.event(model, "failed", f"restart failed: {exc}")

    # ---- start of the service -----------------------------------------------------

    async def preload(self) -> None:
        p = self.planner
        for m in [m for m, s in p.registry.models.items() if s.preload]:
            try:
                await p.ensure([m], "prewarm")
            except PlanError as exc:
                await p.event(m, "failed", f"preload failed: {exc}")

    async def adopt_existing(self) -> list[str]:
        """Take over (or remove) servers a previous run of this service left behind."""
        p = self.planner
        adopted: list[str] = []
        for rt in p.runtimes.all():
            try:
                handles = await rt.adopt()
            except Exception as exc:  # noqa: BLE001 -- e.g. no Docker engine
                log.info("%s runtime: nothing adopted (%s)", rt.kind, exc)
                continue
            for h in handles:
                spec = p.registry.models.get(h.model)
                ok = (
                    p.settings.adopt
                    and spec is not None
                    and spec.runtime.kind == h.kind
                    and h.model not in p.residents
                )
                if ok and spec is not None:
                    try:
                        ok = await rt.probe(h, spec.runtime)
                    except Exception:  # noqa: BLE001 -- unprobeable: remove it
                        ok = False
                if not ok:
                    log.info("removing leftover %s server %s", h.model, h.ref)
                    with contextlib.suppress(Exception):
                        await rt.stop(h, p.settings.stop_grace_s)
                    continue
                fp = p.footprints[h.model]
                now = p.clock()
                p.residents[h.model] = Resident(
                    h.model,
                    h.device,
                    fp,
                    "ready",
                    h,
                    observed_mib=fp,
                    started_at=h.started_at,
                    last_used=now,
                    idle_since=now,
                )
                adopted.append(h.model)
                await p.event(h.model, "ready", "adopted from a previous run")
        return adopted

    # ---- the loop -----------------------------------------------------------------

    async def run(self, stop: asyncio.Event, tick_s: float = 1.0) -> None:
        """Holder expiry and keep-alive every tick; health every `health_interval_s`."""
        s = self.planner.settings
        next_health = time.monotonic() + s.health_interval_s
        while not stop.is_set():
            try:
                self.expire_holders()
                await self.expire_idle()
                if time.monotonic() >= next_health:
                    next_health = time.monotonic() + s.health_interval_s
                    await self.check_health()
            except Exception:
                log.exception("housekeeping")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(tick_s, s.health_interval_s))
