"""The planner: makes requested models resident on their GPU without ever overcommitting it.

`ensure(models, priority, holder)` runs per device under that device's priority lock (a
turn before a queued prewarm) as a loop of small steps, re-planning (`policy.make_plan`)
with fresh NVML numbers before each: stop or put to sleep what the plan says (then wait,
bounded, until NVML shows the memory released, as Ollama does), or start (or wake) the next
model and wait for its health check, until everything requested is resident. Servers start
one at a time per device: vLLM refuses to start while free memory is below its share of the
total, so two starting side by side could each see the other's memory as free. A request
blocked only by models that holders pin waits (lock released, bounded by `busy_wait_s`) for
a release; one that can never fit raises `WontFit` before anything is started or stopped.

In use: `acquire(holder, models)` / `release(holder)`; pinned models are never evicted;
holds expire (`hold_ttl_s`) so a dead orchestrator cannot pin models forever. An ensure
with a holder pins its models before the device lock is let go, so nothing can evict them
between "ready" and the turn's first job.

Sleep: a server that can sleep (`ModelSpec.sleep`) is put to sleep rather than stopped when
host RAM allows; what it still holds is measured (per-process NVML, else the drop in used
memory, else the registry's estimate, never zero) and counted; a request wakes it, then a
one-token warm-up runs before the model is handed over.

Housekeeping (keep-alive expiry, health, restarts, adoption of leftovers) lives in
`housekeeping.py`; the status report in `status.py`.
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
from services.resource.host import HostMemory, ProcHostMemory
from services.resource.locks import PRIORITIES, TURN, PriorityLock
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
from services.resource.runtimes.base import start_values

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


# (model, state, message): "ready" | "unloaded" | "sleeping" | "failed" | "restarting" | "expired"
EventSink = Callable[[str, str, str], Awaitable[None]]


@dataclass(slots=True)
class Resident:
    model: str
    device: int
    footprint_mib: int
    state: Literal["starting", "ready", "sleeping", "stopping"] = "starting"
    handle: Handle | None = None
    observed_mib: int = 0  # NVML: what it holds now (asleep: what a sleeping server keeps)
    started_at: float = field(default_factory=time.time)  # wall clock
    last_used: float = 0.0  # planner clock
    idle_since: float = 0.0  # planner clock; when it was last released by every holder (or fell asleep)
    health_failures: int = 0

    @property
    def pending_mib(self) -> int:
        if self.state == "starting":
            return self.footprint_mib
        if self.state == "sleeping":
            return 0  # a sleeping server does not grow
        return max(0, self.footprint_mib - self.observed_mib)


@dataclass(slots=True)
class EnsureResult:
    models: list[str]
    started: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)
    woken: list[str] = field(default_factory=list)
    slept: list[str] = field(default_factory=list)
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
        host: HostMemory | None = None,
    ):
        self.registry = registry
        self.footprints = {m: footprints.get(m, spec.footprint_mib) for m, spec in registry.models.items()}
        self.gpu = gpu
        self.runtimes = runtimes
        self.settings = settings
        self.clock = clock
        self.on_event = on_event
        self.host = host or ProcHostMemory()
        self.holds = HoldTable(settings.hold_ttl_s, clock)
        self.residents: dict[str, Resident] = {}
        self._locks: dict[int, PriorityLock] = {}
        self._released = asyncio.Event()
        self._busy_until: dict[int, float] = {}  # device -> when its current request should be done
        self.sleep_held: dict[str, int] = {}  # model -> what it held asleep, last measured
        self.tasks: set[asyncio.Task] = set()

    # ---- helpers ------------------------------------------------------------------

    def spec(self, model: str) -> ModelSpec:
        try:
            return self.registry.models[model]
        except KeyError:
            raise UnknownModel(
                f"unknown model {model!r} (known: {', '.join(sorted(self.registry.models))})"
            ) from None

    def device_of(self, model: str) -> int:
        d = self.spec(model).device
        return self.settings.device if d is None else d

    def lock(self, device: int) -> PriorityLock:
        return self._locks.setdefault(device, PriorityLock())

    def keep_alive(self, model: str) -> float:
        ka = self.spec(model).keep_alive_s
        return self.settings.keep_alive_s if ka is None else ka

    def expired(self, r: Resident, now: float) -> bool:
        ka = self.keep_alive(r.model)
        return ka >= 0 and not self.holds.is_held(r.model) and now - r.idle_since >= ka

    def held_estimate(self, model: str) -> int:
        """What `model` holds asleep: last measured, else the registry's figure (never 0)."""
        sleep = self.spec(model).sleep
        return max(1, self.sleep_held.get(model) or (sleep.held_mib if sleep else 1))

    def host_mib(self, model: str) -> int:
        sleep = self.spec(model).sleep
        if sleep is None or sleep.level != 1:
            return 0
        return sleep.host_mib or self.footprints[model]

    async def event(self, model: str, state: str, message: str = "") -> None:
        log.info("%s: %s %s", model, state, message)
        if self.on_event is not None:
            try:
                await self.on_event(model, state, message)
            except Exception:
                log.exception("event sink failed")

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return t

    def _wake_waiters(self) -> None:
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

    async def host_budget(self) -> int:
        try:
            return max(0, await self.host.available_mib() - self.settings.host_reserve_mib)
        except OSError:
            return 0  # unknown: no level-1 sleep

    async def snapshot(self, device: int) -> tuple[DeviceView, list[ResidentView]]:
        await self._refresh_usage(device)
        info = await self.gpu.info(device)
        now = self.clock()
        views = []
        for r in self.residents.values():
            if r.device != device:
                continue
            spec = self.registry.models.get(r.model)
            asleep = r.state == "sleeping"
            can_sleep = bool(spec and spec.sleep) and r.state == "ready"
            views.append(
                ResidentView(
                    model=r.model,
                    footprint_mib=r.observed_mib if asleep else r.footprint_mib,
                    pending_mib=r.pending_mib,
                    group=self.registry.group_of(r.model) if spec else r.model,
                    sticky=bool(spec and spec.sticky),
                    held=self.holds.is_held(r.model),
                    last_used=r.last_used,
                    reload_cost_s=spec.reload_cost_s if spec else 0.0,
                    expired=self.expired(r, now),
                    busy=r.state not in ("ready", "sleeping"),
                    sleeping=asleep,
                    wake_mib=max(0, r.footprint_mib - r.observed_mib) if asleep else 0,
                    can_sleep=can_sleep,
                    sleep_held_mib=self.held_estimate(r.model) if can_sleep else 0,
                    sleep_host_mib=self.host_mib(r.model) if can_sleep else 0,
                )
            )
        budget = await self.host_budget() if any(v.can_sleep for v in views) else 0
        return DeviceView(device, info.total_mib, info.free_mib, self.settings.reserve_mib, budget), views

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
        self.after_release(models)

    def after_release(self, models: Iterable[str]) -> None:
        now = self.clock()
        for m in models:
            r = self.residents.get(m)
            if r is not None and not self.holds.is_held(m):
                r.last_used = now
                r.idle_since = now
        self._wake_waiters()

    # ---- ensure -------------------------------------------------------------------

    def _is_ready(self, model: str) -> bool:
        r = self.residents.get(model)
        return r is not None and r.state == "ready"

    def _expected_s(self, model: str) -> float:
        spec = self.spec(model)
        r = self.residents.get(model)
        if r is not None and r.state == "sleeping" and spec.sleep is not None:
            return spec.sleep.wake_s
        return spec.reload_cost_s

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
        emit = Emitter(progress, {m: self._expected_s(m) for m in models})
        emit.order = [m for m in models if not self._is_ready(m)]
        emit.wait_s = lambda: max(
            (self._busy_until.get(d, 0.0) - time.monotonic() for d in by_device), default=0.0
        )
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

    async def _ensure_device(
        self,
        device: int,
        models: list[str],
        prio: int,
        pin: str,
        ttl_s: float | None,
        emit: Emitter,
        result: EnsureResult,
    ) -> None:
        deadline = time.monotonic() + self.settings.busy_wait_s
        lock = self.lock(device)
        while True:
            released = self._released
            async with lock.hold(prio):
                self._busy_until[device] = time.monotonic() + sum(
                    self._expected_s(m) for m in models if not self._is_ready(m)
                )
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

    async def _steps(
        self, device: int, models: list[str], emit: Emitter, result: EnsureResult
    ) -> list[str] | None:
        """Evict / start until done (None) or blocked (the blocking models). Runs under the lock."""
        for _ in range(6 * len(models) + 12):
            plan = await self.plan(models, device)
            if plan.blocked:
                return plan.blocked_by
            if plan.to_evict or plan.to_sleep:
                victims = plan.to_evict + plan.to_sleep
                for m in plan.to_start:
                    await emit(m, "evicting", 0.0, f"making room: unloading {', '.join(victims)}")
                await self._make_room(device, plan, result)
                continue
            if not plan.to_start:
                return None
            if plan.available_mib < plan.need_mib:  # cannot happen: make_plan evicts or blocks
                raise PlanError(f"internal: plan short by {plan.need_mib - plan.available_mib} MiB")
            model = plan.to_start[0]
            if model in plan.to_wake:
                await self._wake(self.residents[model], emit)
                result.woken.append(model)
            else:
                await self._start(model, device, emit)
                result.started.append(model)
        raise PlanError(f"could not settle a plan for {', '.join(models)} on GPU {device}")

    async def _make_room(self, device: int, plan: Plan, result: EnsureResult) -> None:
        before = await self.gpu.info(device)
        expect = 0
        why = "evicted to make room for " + ", ".join(plan.to_start)
        for m in plan.to_evict:
            r = self.residents.get(m)
            if r is None:
                continue
            expect += r.observed_mib
            await self.stop(r, why)
            result.evicted.append(m)
        for m in plan.to_sleep:
            r = self.residents.get(m)
            if r is None:
                continue
            held = await self.sleep(r, why)
            if held is not None:
                expect += max(0, r.footprint_mib - held)
                result.slept.append(m)
        await self.wait_released(device, before.free_mib, expect, plan.need_mib)

    async def wait_released(self, device: int, free_before: int, expect_mib: int, need_mib: int) -> None:
        """After a stop: wait (bounded) until NVML shows the memory back, or the request fits."""
        deadline = time.monotonic() + self.settings.release_wait_s
        delay = 0.02
        last_free = None
        stable = 0
        while expect_mib > 0:
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
                    "GPU %d: only %d of %d MiB released after %.0fs",
                    device,
                    freed,
                    expect_mib,
                    self.settings.release_wait_s,
                )
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _start(self, model: str, device: int, emit: Emitter) -> None:
        spec = self.spec(model)
        rt = self.runtimes.for_kind(spec.runtime.kind)
        res = Resident(model, device, self.footprints[model])
        info = await self.gpu.info(device)
        before = info.used_mib
        self.residents[model] = res
        emit.current, emit.current_t0 = model, time.monotonic()
        await emit(model, "starting", 0.0, f"starting {spec.runtime.kind} server")

        async def on_progress(frac: float, msg: str) -> None:
            await emit(model, "loading", frac, msg)

        try:
            res.handle = await rt.start(
                model, spec.runtime, device, start_values(res.footprint_mib, info.total_mib, device)
            )
            await emit(model, "loading", 0.0, "waiting for health check")
            await rt.wait_healthy(
                res.handle, spec.runtime, self.settings.health_timeout_s, on_progress, spec.reload_cost_s
            )
        except BaseException as exc:
            await self._cleanup_failed_start(res)
            if isinstance(exc, (RuntimeFailure, OSError)):
                await self._failed(model, emit, exc)
                raise ModelFailed(f"{model} failed to start: {exc}") from exc
            raise
        after = (await self.gpu.info(device)).used_mib
        measured = await self._measure(res)  # per process where the backend can tell
        res.observed_mib = measured if measured else max(0, after - before)
        await self._ready(res, emit, f"{res.observed_mib} MiB observed, footprint {res.footprint_mib} MiB")

    async def _ready(self, res: Resident, emit: Emitter, message: str) -> None:
        res.state = "ready"
        now = self.clock()
        res.last_used = res.idle_since = now
        if res.model in emit.order:
            emit.order.remove(res.model)
        emit.current = None
        await emit(res.model, "ready", 1.0, "")
        await self.event(res.model, "ready", message)

    async def _failed(self, model: str, emit: Emitter, exc: BaseException) -> None:
        await emit(model, "failed", 0.0, str(exc))
        if model in emit.order:
            emit.order.remove(model)
        await self.event(model, "failed", str(exc))

    async def _wake(self, res: Resident, emit: Emitter) -> None:
        """Wake a sleeping server, warm it up (one token), measure what it holds."""
        spec = self.spec(res.model)
        assert res.handle is not None and spec.sleep is not None
        rt = self.runtimes.for_kind(res.handle.kind)
        emit.current, emit.current_t0 = res.model, time.monotonic()
        await emit(res.model, "starting", 0.0, "waking from sleep")
        before = (await self.gpu.info(res.device)).used_mib
        held = res.observed_mib
        res.state = "starting"  # while waking it may take its whole footprint: counted as pending
        try:
            async with asyncio.timeout(self.settings.health_timeout_s):
                await rt.wake(res.handle, spec.runtime, spec.sleep.warmup)
        except BaseException as exc:
            # a server that cannot wake is of no use: remove it (its memory with it)
            await self.stop(res, f"could not wake: {exc}")
            if isinstance(exc, (RuntimeFailure, OSError, TimeoutError)):
                await self._failed(res.model, emit, exc)
                raise ModelFailed(f"{res.model} failed to wake: {exc}") from exc
            raise
        after = (await self.gpu.info(res.device)).used_mib
        measured = await self._measure(res)
        res.observed_mib = measured if measured else held + max(0, after - before)
        await self._ready(res, emit, f"woken ({res.observed_mib} MiB observed)")

    async def sleep(self, r: Resident, why: str) -> int | None:
        """Put a ready server to sleep; what it still holds (None: it failed and was stopped)."""
        spec = self.spec(r.model)
        assert r.handle is not None and spec.sleep is not None
        rt = self.runtimes.for_kind(r.handle.kind)
        before = (await self.gpu.info(r.device)).used_mib
        awake = r.observed_mib
        r.state = "stopping"  # in transition: neither a candidate nor resident for a plan
        try:
            await rt.sleep(r.handle, spec.runtime, spec.sleep.level)
        except Exception as exc:  # noqa: BLE001 -- a server that cannot sleep is stopped instead
            log.warning("%s: sleep failed (%s): stopping it", r.model, exc)
            await self.stop(r, f"{why} (sleep failed: {exc})")
            return None
        measured = await self._measure(r)  # per process: what it really holds now
        if not measured:  # per process unknown (or no pid visible): the drop in used memory
            dropped = before - (await self.gpu.info(r.device)).used_mib
            measured = max(0, awake - dropped) if dropped >= 0 else self.held_estimate(r.model)
        held = measured
        r.observed_mib = held
        self.sleep_held[r.model] = held
        r.state = "sleeping"
        r.idle_since = self.clock()
        await self.event(r.model, "sleeping", f"{why}; {held} MiB still held on GPU {r.device}")
        return held

    async def _cleanup_failed_start(self, res: Resident) -> None:
        self.residents.pop(res.model, None)
        if res.handle is not None:
            rt = self.runtimes.for_kind(res.handle.kind)
            with contextlib.suppress(Exception):
                await asyncio.shield(rt.stop(res.handle, self.settings.stop_grace_s))

    async def stop(self, r: Resident, why: str) -> None:
        r.state = "stopping"
        try:
            if r.handle is not None:
                await self.runtimes.for_kind(r.handle.kind).stop(r.handle, self.settings.stop_grace_s)
        finally:
            if self.residents.get(r.model) is r:
                del self.residents[r.model]
        await self.event(r.model, "unloaded", why)

    # ---- explicit load / unload ---------------------------------------------------

    async def load(self, model: str, progress: ProgressSink | None = None) -> EnsureResult:
        return await self.ensure([model], "prewarm", None, progress=progress)

    async def unload(self, model: str, force: bool = False) -> bool:
        """Stop `model` if resident (asleep or awake); InUse while a holder pins it, unless forced."""
        device = self.device_of(model)
        async with self.lock(device).hold(TURN):
            r = self.residents.get(model)
            if r is None:
                return False
            holders = self.holds.holders_of(model)
            if holders and not force:
                raise InUse(f"{model} is in use by {', '.join(holders)}")
            before = await self.gpu.info(device)
            await self.stop(r, "unloaded on request")
            await self.wait_released(device, before.free_mib, r.observed_mib, 1 << 40)
            return True

    async def stop_all(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        # all at once: shutdown takes one grace period, not one per model
        await asyncio.gather(
            *(self.stop(r, "resource service stopping") for r in list(self.residents.values())),
            return_exceptions=True,
        )

    async def status(self) -> dict[str, Any]:
        from services.resource.status import planner_status

        return await planner_status(self)
