"""The planner: makes requested models resident on their GPU without ever overcommitting it.

`ensure(models, priority, holder)` runs per device under that device's priority lock (a
turn before a queued prewarm) as a loop of small steps, re-planning (`policy.make_plan`)
with fresh NVML numbers before each: evict what the plan says (then wait, bounded, until
NVML shows the memory released, as Ollama does), or start the next model and wait for its
health check, until everything requested is resident. A request blocked only by models
that holders pin waits (lock released, bounded by `busy_wait_s`) for a release; one that can
never fit raises `WontFit` before anything is started or stopped.

In use: `acquire(holder, models)` / `release(holder)`; pinned models are never evicted;
holds expire (`hold_ttl_s`) so a dead orchestrator cannot pin models forever. An ensure
with a holder pins its models before the device lock is let go, so nothing can evict them
between "ready" and the turn's first job.

Housekeeping: idle models past their keep-alive are stopped; resident servers are probed
every `health_interval_s`, and one that died is restarted (when held, sticky or preloaded,
at most `max_restarts` per `restart_window_s`) or reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from services.resource.config import ModelSpec, Registry, ResourceSettings
from services.resource.gpu import Gpu
from services.resource.holds import HoldTable
from services.resource.locks import HOUSEKEEPING, PRIORITIES, TURN, PriorityLock
from services.resource.policy import (
    Conflict,
    DeviceView,
    GroupView,
    Plan,
    PlanError,
    ResidentView,
    UnknownModel,
    WontFit,
    make_plan,
)
from services.resource.progress import Emitter, ProgressSink
from services.resource.runtimes import Handle, RuntimeFailure, RuntimeSet

log = logging.getLogger(__name__)

class Busy(PlanError):
    """The request would fit, but models pinned by holders stayed pinned past `busy_wait_s`."""


class ModelFailed(PlanError):
    """A model server failed to start or become healthy."""


class InUse(PlanError):
    """An unload of a model that a holder pins."""


ERROR_CODES: dict[type[BaseException], str] = {
    WontFit: "wont_fit",
    Busy: "busy",
    Conflict: "conflict",
    UnknownModel: "unknown_model",
    ModelFailed: "start_failed",
    InUse: "in_use",
}


def error_code(exc: BaseException) -> str:
    for cls, code in ERROR_CODES.items():
        if isinstance(exc, cls):
            return code
    return "error"


# (model, state, message): "ready" | "unloaded" | "failed" | "restarting" | "expired"
EventSink = Callable[[str, str, str], Awaitable[None]]


@dataclass(slots=True)
class Resident:
    model: str
    device: int
    footprint_mib: int
    state: Literal["starting", "ready", "stopping"] = "starting"
    handle: Handle | None = None
    observed_mib: int = 0  # NVML used after its start minus before
    started_at: float = field(default_factory=time.time)  # wall clock
    last_used: float = 0.0  # planner clock
    idle_since: float = 0.0  # planner clock; when it was last released by every holder
    health_failures: int = 0

    @property
    def pending_mib(self) -> int:
        if self.state == "starting":
            return self.footprint_mib
        return max(0, self.footprint_mib - self.observed_mib)


@dataclass(slots=True)
class EnsureResult:
    models: list[str]
    started: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


class Planner:
    def __init__(
        self,
        registry: Registry,
        footprints: dict[str, int],
        gpu: Gpu,
        runtimes: RuntimeSet,
        settings: ResourceSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_event: EventSink | None = None,
    ):
        self.registry = registry
        self.footprints = {m: footprints.get(m, spec.footprint_mib) for m, spec in registry.models.items()}
        self.gpu = gpu
        self.runtimes = runtimes
        self.settings = settings
        self.clock = clock
        self.on_event = on_event
        self.holds = HoldTable(settings.hold_ttl_s, clock)
        self.residents: dict[str, Resident] = {}
        self._locks: dict[int, PriorityLock] = {}
        self._released = asyncio.Event()
        self._restarts: dict[str, list[float]] = {}
        self._busy_until: dict[int, float] = {}  # device -> when its current request should be done
        self._tasks: set[asyncio.Task] = set()

    # ---- helpers ------------------------------------------------------------------

    def spec(self, model: str) -> ModelSpec:
        try:
            return self.registry.models[model]
        except KeyError:
            raise UnknownModel(f"unknown model {model!r} (known: {', '.join(sorted(self.registry.models))})") from None

    def device_of(self, model: str) -> int:
        d = self.spec(model).device
        return self.settings.device if d is None else d

    def lock(self, device: int) -> PriorityLock:
        return self._locks.setdefault(device, PriorityLock())

    def keep_alive(self, model: str) -> float:
        ka = self.spec(model).keep_alive_s
        return self.settings.keep_alive_s if ka is None else ka

    def _expired(self, r: Resident, now: float) -> bool:
        ka = self.keep_alive(r.model)
        return ka >= 0 and not self.holds.is_held(r.model) and now - r.idle_since >= ka

    async def _event(self, model: str, state: str, message: str = "") -> None:
        log.info("%s: %s %s", model, state, message)
        if self.on_event is not None:
            try:
                await self.on_event(model, state, message)
            except Exception:
                log.exception("event sink failed")

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def _wake(self) -> None:
        self._released.set()
        self._released = asyncio.Event()

    async def _measure(self, r: Resident) -> int | None:
        if r.handle is None:
            return None
        try:
            return await self.runtimes.for_kind(r.handle.kind).gpu_usage(r.handle, self.gpu)
        except Exception:  # noqa: BLE001 -- unknown usage: keep the last figure
            return None

    async def _refresh_usage(self, device: int) -> None:
        """Re-measure models that have not yet taken their whole footprint (per-process NVML).

        Without it, memory a server took after its start would count twice: in NVML's used
        and again as pending. Where usage cannot be measured the last figure stands
        (conservative: never optimistic).
        """
        for r in list(self.residents.values()):
            if r.device == device and r.state == "ready" and r.pending_mib > 0:
                used = await self._measure(r)
                if used:
                    r.observed_mib = used

    async def snapshot(self, device: int) -> tuple[DeviceView, list[ResidentView]]:
        await self._refresh_usage(device)
        info = await self.gpu.info(device)
        now = self.clock()
        views = []
        for r in self.residents.values():
            if r.device != device:
                continue
            spec = self.registry.models.get(r.model)
            views.append(
                ResidentView(
                    model=r.model,
                    footprint_mib=r.footprint_mib,
                    pending_mib=r.pending_mib,
                    group=self.registry.group_of(r.model) if spec else r.model,
                    sticky=bool(spec and spec.sticky),
                    held=self.holds.is_held(r.model),
                    last_used=r.last_used,
                    reload_cost_s=spec.reload_cost_s if spec else 0.0,
                    expired=self._expired(r, now),
                    busy=r.state != "ready",
                )
            )
        return DeviceView(device, info.total_mib, info.free_mib, self.settings.reserve_mib), views

    async def plan(self, models: Sequence[str], device: int) -> Plan:
        dev, views = await self.snapshot(device)
        return make_plan(
            dev,
            views,
            models,
            self.footprints,
            {m: self.registry.group_of(m) for m in self.registry.models},
            {g: GroupView(s.swap, s.exclusive, s.persistent) for g, s in self.registry.groups.items()},
        )

    # ---- in use -------------------------------------------------------------------

    def acquire(self, holder: str, models: Iterable[str], ttl_s: float | None = None) -> None:
        models = list(models)
        for m in models:
            self.spec(m)
        self.holds.acquire(holder, models, ttl_s)
        now = self.clock()
        for m in models:
            if m in self.residents:
                self.residents[m].last_used = now

    def renew(self, holder: str, ttl_s: float | None = None) -> bool:
        return self.holds.renew(holder, ttl_s)

    def release(self, holder: str) -> None:
        models = self.holds.release(holder)
        self._after_release(models)

    def _after_release(self, models: Iterable[str]) -> None:
        now = self.clock()
        for m in models:
            r = self.residents.get(m)
            if r is not None and not self.holds.is_held(m):
                r.last_used = now
                r.idle_since = now
        self._wake()

    def expire_holders(self) -> list[str]:
        gone = self.holds.expire()
        for h in gone:
            log.warning("hold of %s on %s expired (holder gone?)", h.holder, ", ".join(sorted(h.models)))
            self._after_release(h.models)
        return [h.holder for h in gone]

    # ---- ensure -------------------------------------------------------------------

    async def ensure(
        self,
        models: Sequence[str],
        priority: str | int = "turn",
        holder: str | None = None,
        ttl_s: float | None = None,
        progress: ProgressSink | None = None,
    ) -> EnsureResult:
        """Make `models` resident (in order); pin them for `holder` if given."""
        t0 = time.monotonic()
        models = list(dict.fromkeys(models))
        prio = PRIORITIES.get(priority, TURN) if isinstance(priority, str) else int(priority)
        by_device: dict[int, list[str]] = {}
        for m in models:
            by_device.setdefault(self.device_of(m), []).append(m)
        emit = Emitter(progress, {m: self.spec(m).reload_cost_s for m in models})
        emit.order = [m for m in models if not self._is_ready(m)]
        emit.wait_s = lambda: max((self._busy_until.get(d, 0.0) - time.monotonic() for d in by_device), default=0.0)
        for m in emit.order:
            await emit(m, "queued", 0.0, "waiting for the GPU")
        pin = holder or f"ensure:{uuid.uuid4().hex}"
        result = EnsureResult(models)
        try:
            for device in sorted(by_device):
                await self._ensure_device(device, by_device[device], prio, pin, ttl_s, emit, result)
        except BaseException as exc:
            # models pinned on an earlier device stay pinned for `holder` until it releases
            for m in list(emit.order):
                await emit(m, "failed", 0.0, str(exc) or type(exc).__name__)
            raise
        finally:
            if holder is None:
                self.release(pin)
        result.elapsed_s = time.monotonic() - t0
        return result

    def _is_ready(self, model: str) -> bool:
        r = self.residents.get(model)
        return r is not None and r.state == "ready"

    async def _ensure_device(
        self, device: int, models: list[str], prio: int, pin: str, ttl_s: float | None,
        emit: Emitter, result: EnsureResult,
    ) -> None:
        deadline = time.monotonic() + self.settings.busy_wait_s
        lock = self.lock(device)
        while True:
            released = self._released
            async with lock.hold(prio):
                self._busy_until[device] = time.monotonic() + sum(
                    self.spec(m).reload_cost_s for m in models if not self._is_ready(m))
                try:
                    blocked = await self._steps(device, models, emit, result)
                finally:
                    self._busy_until.pop(device, None)
                if blocked is None:
                    self.holds.acquire(pin, models, ttl_s)
                    now = self.clock()
                    for m in models:
                        self.residents[m].last_used = now
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Busy(
                    f"{', '.join(models)} would fit on GPU {device} once {', '.join(blocked)} "
                    f"{'is' if len(blocked) == 1 else 'are'} released, but "
                    f"{'it stays' if len(blocked) == 1 else 'they stay'} in use "
                    f"(waited {self.settings.busy_wait_s:.0f}s)"
                )
            for m in models:
                if not self._is_ready(m):
                    await emit(m, "queued", 0.0, f"waiting for {', '.join(blocked)} to be released")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(released.wait(), min(remaining, 1.0))

    async def _steps(self, device: int, models: list[str], emit: Emitter, result: EnsureResult) -> list[str] | None:
        """Evict / start until done (None) or blocked (the blocking models). Runs under the lock."""
        for _ in range(4 * len(models) + 8):
            plan = await self.plan(models, device)
            if plan.blocked:
                return plan.blocked_by
            if plan.to_evict:
                for m in plan.to_start:
                    await emit(m, "evicting", 0.0, f"making room: unloading {', '.join(plan.to_evict)}")
                await self._evict(device, plan, result)
                continue
            if not plan.to_start:
                return None
            if plan.available_mib < plan.need_mib:  # cannot happen: make_plan evicts or blocks
                raise PlanError(f"internal: plan short by {plan.need_mib - plan.available_mib} MiB")
            await self._start(plan.to_start[0], device, emit)
            result.started.append(plan.to_start[0])
        raise PlanError(f"could not settle a plan for {', '.join(models)} on GPU {device}")

    async def _evict(self, device: int, plan: Plan, result: EnsureResult) -> None:
        before = await self.gpu.info(device)
        expect = 0
        for m in plan.to_evict:
            r = self.residents.get(m)
            if r is None:
                continue
            expect += r.observed_mib
            await self._stop(r, "evicted to make room for " + ", ".join(plan.to_start))
            result.evicted.append(m)
        await self._wait_released(device, before.free_mib, expect, plan.need_mib)

    async def _wait_released(self, device: int, free_before: int, expect_mib: int, need_mib: int) -> None:
        """After a stop: wait (bounded) until NVML shows the memory back, or the request fits."""
        deadline = time.monotonic() + self.settings.release_wait_s
        delay = 0.02
        last_free = None
        stable = 0
        while True:
            info = await self.gpu.info(device)
            pending = sum(r.pending_mib for r in self.residents.values() if r.device == device)
            if info.free_mib - pending - self.settings.reserve_mib >= need_mib:
                return
            freed = info.free_mib - free_before
            if freed >= 0.9 * expect_mib:
                return
            stable = stable + 1 if last_free == info.free_mib else 0
            last_free = info.free_mib
            if freed >= 0.5 * expect_mib and stable >= 5:
                return  # recovered as far as it will
            if time.monotonic() >= deadline:
                log.warning(
                    "GPU %d: only %d of %d MiB released after %.0fs", device, freed, expect_mib,
                    self.settings.release_wait_s,
                )
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _start(self, model: str, device: int, emit: Emitter) -> None:
        spec = self.spec(model)
        rt = self.runtimes.for_kind(spec.runtime.kind)
        res = Resident(model, device, self.footprints[model])
        before = (await self.gpu.info(device)).used_mib
        self.residents[model] = res
        emit.current, emit.current_t0 = model, time.monotonic()
        await emit(model, "starting", 0.0, f"starting {spec.runtime.kind} server")

        async def on_progress(frac: float, msg: str) -> None:
            await emit(model, "loading", frac, msg)

        try:
            res.handle = await rt.start(model, spec.runtime, device)
            await emit(model, "loading", 0.0, "waiting for health check")
            await rt.wait_healthy(res.handle, spec.runtime, self.settings.health_timeout_s, on_progress,
                                  spec.reload_cost_s)
        except BaseException as exc:
            await self._cleanup_failed_start(res)
            if isinstance(exc, (RuntimeFailure, OSError)):
                await emit(model, "failed", 0.0, str(exc))
                if model in emit.order:
                    emit.order.remove(model)
                await self._event(model, "failed", str(exc))
                raise ModelFailed(f"{model} failed to start: {exc}") from exc
            raise
        after = (await self.gpu.info(device)).used_mib
        measured = await self._measure(res)  # per process where the backend can tell
        res.observed_mib = measured if measured else max(0, after - before)
        res.state = "ready"
        now = self.clock()
        res.last_used = res.idle_since = now
        if model in emit.order:
            emit.order.remove(model)
        emit.current = None
        await emit(model, "ready", 1.0, "")
        await self._event(model, "ready", f"{res.observed_mib} MiB observed, footprint {res.footprint_mib} MiB")

    async def _cleanup_failed_start(self, res: Resident) -> None:
        self.residents.pop(res.model, None)
        if res.handle is not None:
            rt = self.runtimes.for_kind(res.handle.kind)
            with contextlib.suppress(Exception):
                await asyncio.shield(rt.stop(res.handle, self.settings.stop_grace_s))

    async def _stop(self, r: Resident, why: str) -> None:
        r.state = "stopping"
        try:
            if r.handle is not None:
                await self.runtimes.for_kind(r.handle.kind).stop(r.handle, self.settings.stop_grace_s)
        finally:
            if self.residents.get(r.model) is r:
                del self.residents[r.model]
        await self._event(r.model, "unloaded", why)

    # ---- explicit load / unload ---------------------------------------------------

    async def load(self, model: str, progress: ProgressSink | None = None) -> EnsureResult:
        return await self.ensure([model], "prewarm", None, progress=progress)

    async def unload(self, model: str, force: bool = False) -> bool:
        """Stop `model` if resident; refuses (InUse) while a holder pins it unless forced."""
        device = self.device_of(model)
        async with self.lock(device).hold(TURN):
            r = self.residents.get(model)
            if r is None:
                return False
            holders = self.holds.holders_of(model)
            if holders and not force:
                raise InUse(f"{model} is in use by {', '.join(holders)}")
            before = await self.gpu.info(device)
            await self._stop(r, "unloaded on request")
            await self._wait_released(device, before.free_mib, r.observed_mib, 1 << 40)
            return True

    # ---- housekeeping -------------------------------------------------------------

    async def expire_idle(self) -> list[str]:
        """Stop idle, non-sticky models whose keep-alive has run out."""
        stopped: list[str] = []
        for device in sorted({r.device for r in self.residents.values()}):
            now = self.clock()
            if not any(self._idle_expired(r, now) for r in self.residents.values() if r.device == device):
                continue
            async with self.lock(device).hold(HOUSEKEEPING):
                now = self.clock()
                before = await self.gpu.info(device)
                expect = 0
                for r in [r for r in self.residents.values() if r.device == device]:
                    if self._idle_expired(r, now):
                        expect += r.observed_mib
                        await self._stop(r, f"idle past its keep-alive ({self.keep_alive(r.model):.0f}s)")
                        stopped.append(r.model)
                # the next plan must see that memory free, not as somebody else's
                await self._wait_released(device, before.free_mib, expect, 1 << 40)
        return stopped

    def _idle_expired(self, r: Resident, now: float) -> bool:
        spec = self.registry.models.get(r.model)
        return r.state == "ready" and spec is not None and not spec.sticky and self._expired(r, now)

    async def check_health(self) -> list[str]:
        """Probe every ready model; a dead one is removed and restarted or reported."""
        dead: list[str] = []
        for r in list(self.residents.values()):
            if r.state != "ready" or r.handle is None:
                continue
            spec = self.registry.models.get(r.model)
            if spec is None:
                continue
            rt = self.runtimes.for_kind(r.handle.kind)
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
        async with self.lock(r.device).hold(TURN):
            if self.residents.get(r.model) is not r:
                return
            await self._stop(r, why)  # removes leftovers (container, process group)
        spec = self.registry.models.get(r.model)
        held = self.holds.is_held(r.model)
        want = held or bool(spec and (spec.sticky or spec.preload))
        now = time.monotonic()
        recent = [t for t in self._restarts.get(r.model, []) if now - t < self.settings.restart_window_s]
        if want and len(recent) < self.settings.max_restarts:
            recent.append(now)
            self._restarts[r.model] = recent
            await self._event(r.model, "restarting", f"{why}; restart {len(recent)}/{self.settings.max_restarts}")
            self._spawn(self._restart(r.model, "turn" if held else "prewarm"))
        else:
            reason = f"{why}; not restarted" + (
                f" (gave up after {len(recent)} restarts)" if want else " (idle: it loads again on demand)"
            )
            await self._event(r.model, "failed", reason)

    async def _restart(self, model: str, priority: str) -> None:
        try:
            await self.ensure([model], priority)
        except PlanError as exc:
            await self._event(model, "failed", f"restart failed: {exc}")

    async def preload(self) -> None:
        models = [m for m, s in self.registry.models.items() if s.preload]
        for m in models:
            try:
                await self.ensure([m], "prewarm")
            except PlanError as exc:
                await self._event(m, "failed", f"preload failed: {exc}")

    async def adopt_existing(self) -> list[str]:
        """Take over (or remove) servers a previous run of this service left behind."""
        adopted: list[str] = []
        for rt in self.runtimes.all():
            try:
                handles = await rt.adopt()
            except Exception as exc:  # noqa: BLE001 -- e.g. no Docker engine
                log.info("%s runtime: nothing adopted (%s)", rt.kind, exc)
                continue
            for h in handles:
                spec = self.registry.models.get(h.model)
                ok = (
                    self.settings.adopt
                    and spec is not None
                    and spec.runtime.kind == h.kind
                    and h.model not in self.residents
                )
                if ok:
                    try:
                        ok = await rt.probe(h, spec.runtime)
                    except Exception:  # noqa: BLE001 -- unprobeable: remove it
                        ok = False
                if not ok:
                    log.info("removing leftover %s server %s", h.model, h.ref)
                    with contextlib.suppress(Exception):
                        await rt.stop(h, self.settings.stop_grace_s)
                    continue
                fp = self.footprints[h.model]
                now = self.clock()
                self.residents[h.model] = Resident(
                    h.model, h.device, fp, "ready", h, observed_mib=fp, started_at=h.started_at,
                    last_used=now, idle_since=now,
                )
                adopted.append(h.model)
                await self._event(h.model, "ready", "adopted from a previous run")
        return adopted

    async def stop_all(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        # all at once: shutdown takes one grace period, not one per model
        await asyncio.gather(
            *(self._stop(r, "resource service stopping") for r in list(self.residents.values())),
            return_exceptions=True,
        )

    async def run_housekeeping(self, stop: asyncio.Event, tick_s: float = 1.0) -> None:
        """Holder expiry and keep-alive every tick; health every `health_interval_s`."""
        next_health = time.monotonic() + self.settings.health_interval_s
        while not stop.is_set():
            try:
                self.expire_holders()
                await self.expire_idle()
                if time.monotonic() >= next_health:
                    next_health = time.monotonic() + self.settings.health_interval_s
                    await self.check_health()
            except Exception:
                log.exception("housekeeping")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(tick_s, self.settings.health_interval_s))

    # ---- status -------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        now = self.clock()
        devices = sorted({self.settings.device} | {r.device for r in self.residents.values()})
        gpus = []
        for d in devices:
            try:
                info = await self.gpu.info(d)
            except Exception as exc:  # noqa: BLE001 -- reported in the status
                gpus.append({"index": d, "error": str(exc)})
                continue
            pending = sum(r.pending_mib for r in self.residents.values() if r.device == d)
            gpus.append({
                "index": d, "name": info.name, "backend": getattr(self.gpu, "backend", "?"),
                "total_mib": info.total_mib, "used_mib": info.used_mib, "free_mib": info.free_mib,
                "available_mib": info.free_mib - pending - self.settings.reserve_mib,
                "reserve_mib": self.settings.reserve_mib, "queued": self.lock(d).waiting(),
            })
        residents = []
        for r in self.residents.values():
            spec = self.registry.models.get(r.model)
            ka = self.keep_alive(r.model) if spec else -1
            held_by = self.holds.holders_of(r.model)
            expires = None
            if spec and not spec.sticky and ka >= 0 and not held_by and r.state == "ready":
                expires = round(max(0.0, r.idle_since + ka - now), 1)
            residents.append({
                "model": r.model, "device": r.device, "state": r.state, "footprint_mib": r.footprint_mib,
                "observed_mib": r.observed_mib, "sticky": bool(spec and spec.sticky),
                "group": self.registry.group_of(r.model) if spec else r.model,
                "held_by": held_by, "idle_s": round(now - r.idle_since, 1) if not held_by else 0.0,
                "expires_in_s": expires, "runtime": r.handle.kind if r.handle else "",
                "ref": r.handle.ref if r.handle else "", "started_at": r.started_at,
            })
        holders = [
            {"holder": h.holder, "models": sorted(h.models), "expires_in_s": round(h.expires_at - now, 1)}
            for h in self.holds.all()
        ]
        return {"gpus": gpus, "residents": residents, "holders": holders,
                "models": {m: {"footprint_mib": self.footprints[m], "sticky": s.sticky,
                               "group": self.registry.group_of(m), "runtime": s.runtime.kind}
                           for m, s in self.registry.models.items()}}
