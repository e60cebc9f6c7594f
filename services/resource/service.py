"""The resource service of one GPU host: the planner behind a Redis Streams API.

Reads requests from its own stream `resource:req:{service_id}` (consumer group `resource`;
each is acked on receipt and handled in its own task, so a Status never waits behind a slow
load), replies on the request's `reply_to` stream, publishes model events to
`resource:events`, and keeps its record `resource:alive:{service_id}` fresh (the models it
manages and those resident here, so clients send each model to its host). It refuses to start
while another live service uses its id. At start it adopts (or removes) servers a previous run
left, then preloads the registry's `preload` models; on exit it stops its models
(`stop_on_exit`) and deletes its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from services.resource import messages as m
from services.resource.calibration import Calibration, footprints
from services.resource.config import Registry, ResourceSettings
from services.resource.gpu import Gpu, SimulatedGpu, open_gpu
from services.resource.host import HostMemory, SimulatedHostMemory
from services.resource.housekeeping import Housekeeper
from services.resource.planner import PlanError, Planner, error_code
from services.resource.progress import Progress
from services.resource.runtimes import RuntimeSet
from services.resource.runtimes.docker import DockerRuntime
from services.resource.runtimes.process import ProcessRuntime
from services.resource.runtimes.simulated import SimulatedRuntime
from shared.bus import Bus

log = logging.getLogger(__name__)

REPLY_MAXLEN = 1000
EVENTS_MAXLEN = 1000
REQUESTS_MAXLEN = 10000


def build_runtimes(settings: ResourceSettings, gpu: Gpu, footprint_of: dict[str, int]) -> RuntimeSet:
    state_dir = Path(settings.state_dir).expanduser()
    rts: dict[str, Any] = {
        "process": ProcessRuntime(
            settings.log_dir,
            state_dir / f"processes-{settings.service_id}.json",
            settings.health_request_timeout_s,
        ),
        "docker": DockerRuntime(
            settings.service_id,
            health_request_timeout_s=settings.health_request_timeout_s,
            network=settings.docker_network,
        ),
    }
    if isinstance(gpu, SimulatedGpu):
        rts["simulated"] = SimulatedRuntime(
            gpu, lambda model: footprint_of.get(model, 0), settings.simulated_host_mib
        )
    return RuntimeSet(rts)


def simulated_host(runtimes: RuntimeSet) -> HostMemory | None:
    """With a simulated GPU, host RAM is the simulated runtime's (sleeps move weights there)."""
    try:
        rt = runtimes.for_kind("simulated")
    except Exception:  # noqa: BLE001 -- no simulated runtime: the real host
        return None
    return SimulatedHostMemory(lambda: rt.host_free_mib)  # type: ignore[attr-defined]


async def build_planner(
    settings: ResourceSettings, gpu: Gpu | None = None, registry: Registry | None = None
) -> Planner:
    if registry is None:
        registry = await asyncio.to_thread(settings.load_registry)
    calib = await asyncio.to_thread(Calibration.read, settings.calibration_file)
    fps = footprints(registry, calib, settings.calibration_margin_pct)
    gpu = gpu or await open_gpu(
        settings.gpu_backend, settings.simulated_gpu_mib, settings.simulated_foreign_mib
    )
    runtimes = build_runtimes(settings, gpu, fps)
    return Planner(registry, fps, gpu, runtimes, settings, host=simulated_host(runtimes))


class ResourceService:
    def __init__(self, settings: ResourceSettings, bus: Bus, planner: Planner, block_ms: int = 1000):
        self.settings = settings
        self.bus = bus
        self.planner = planner
        self.block_ms = block_ms
        self.planner.on_event = self._publish_event
        self.housekeeper = Housekeeper(planner)
        self._tasks: set[asyncio.Task] = set()
        self.started = asyncio.Event()
        self._started_at = time.time()
        self.instance = uuid.uuid4().hex[:12]
        self.alive_key = m.alive_key(settings.service_id)
        self.requests = m.requests_stream(settings.service_id)

    # ---- replies and events -------------------------------------------------------

    async def _reply(self, stream: str, msg: Any) -> None:
        from shared import codec

        fields: Any = codec.entry(msg)  # redis-py's annotation wants a wider dict type

        async def run() -> None:
            async with self.bus.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(stream, fields, maxlen=REPLY_MAXLEN, approximate=True)
                pipe.expire(stream, self.settings.reply_ttl_s)
                await pipe.execute()

        await self.bus.retry(run, f"reply {stream}")

    async def _publish_event(self, model: str, state: str, message: str) -> None:
        await self.bus.add(
            m.EVENTS,
            m.ModelEvent(model, state, message, self.settings.service_id, time.time()),
            EVENTS_MAXLEN,
        )
        await self._beat()  # clients see where the model is (or no longer is) at once

    # ---- request handling ---------------------------------------------------------

    def _stale(self, ts: float) -> bool:
        return bool(ts) and time.time() - ts > self.settings.request_max_age_s

    async def handle(self, msg: Any) -> None:
        try:
            if isinstance(msg, m.EnsureModels):
                await self._ensure(
                    msg.request_id, msg.reply_to, msg.ts, msg.models, msg.priority, msg.holder, msg.ttl_s
                )
            elif isinstance(msg, m.Load):
                await self._ensure(msg.request_id, msg.reply_to, msg.ts, [msg.model], "prewarm", None, 0.0)
            elif isinstance(msg, m.ReleaseModels):
                self.planner.release(msg.holder)
            elif isinstance(msg, m.RenewHold):
                self.planner.renew(msg.holder, msg.ttl_s or None)
            elif isinstance(msg, m.Status):
                st = await self.planner.status()
                await self._reply(
                    msg.reply_to,
                    m.StatusReply(
                        msg.request_id,
                        self.settings.service_id,
                        st["gpus"],
                        st["residents"],
                        st["holders"],
                        st["models"],
                        time.time(),
                    ),
                )
            elif isinstance(msg, m.Unload):
                await self._unload(msg)
            else:
                log.warning("ignoring unexpected message %r", type(msg).__name__)
        except Exception:
            log.exception("handling %s", type(msg).__name__)

    async def _ensure(
        self,
        request_id: str,
        reply_to: str,
        ts: float,
        models: list[str],
        priority: str,
        holder: str | None,
        ttl_s: float,
    ) -> None:
        if self._stale(ts):
            await self._reply(
                reply_to,
                m.EnsureDone(
                    request_id,
                    False,
                    "request too old (sent while the resource service was down)",
                    "stale",
                    ts=time.time(),
                ),
            )
            return

        async def sink(p: Progress) -> None:
            await self._reply(
                reply_to,
                m.ModelProgress(request_id, p.model, p.state, p.progress, p.eta_s, p.message, time.time()),
            )

        try:
            res = await self.planner.ensure(models, priority, holder, ttl_s or None, sink)
        except PlanError as exc:
            await self._reply(
                reply_to, m.EnsureDone(request_id, False, str(exc), error_code(exc), ts=time.time())
            )
            return
        except Exception as exc:
            log.exception("ensure %s", models)
            await self._reply(
                reply_to, m.EnsureDone(request_id, False, f"internal error: {exc}", "error", ts=time.time())
            )
            return
        await self._reply(
            reply_to,
            m.EnsureDone(
                request_id, True, "", "", res.started, res.evicted, round(res.elapsed_s, 3), time.time()
            ),
        )

    async def _unload(self, msg: m.Unload) -> None:
        try:
            stopped = await self.planner.unload(msg.model, msg.force)
        except PlanError as exc:
            await self._reply(
                msg.reply_to, m.EnsureDone(msg.request_id, False, str(exc), error_code(exc), ts=time.time())
            )
            return
        await self._reply(
            msg.reply_to,
            m.EnsureDone(
                msg.request_id,
                True,
                "" if stopped else "not resident",
                "",
                evicted=[msg.model] if stopped else [],
                ts=time.time(),
            ),
        )

    def _spawn(self, coro: Any) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    # ---- loops --------------------------------------------------------------------

    async def _forget(self) -> None:
        async with self.bus.redis.pipeline(transaction=False) as pipe:
            pipe.delete(self.alive_key)
            pipe.srem(m.SERVICES, self.settings.service_id)
            await pipe.execute()

    def record(self) -> m.ServiceRecord:
        return m.ServiceRecord(
            service_id=self.settings.service_id,
            instance=self.instance,
            host=os.uname().nodename,
            pid=os.getpid(),
            backend=getattr(self.planner.gpu, "backend", "?"),
            started=self._started_at,
            beat=time.time(),
            models=sorted(self.planner.registry.models),
            resident={r.model: r.state for r in self.planner.residents.values()},
        )

    async def _beat(self) -> None:
        ttl_ms = int(self.settings.heartbeat_ttl_s * 1000)
        value = self.record().model_dump_json()

        async def run() -> None:
            async with self.bus.redis.pipeline(transaction=False) as pipe:
                pipe.set(self.alive_key, value, px=ttl_ms)
                pipe.sadd(m.SERVICES, self.settings.service_id)
                await pipe.execute()

        await self.bus.retry(run, "heartbeat")

    async def _refuse_a_twin(self) -> None:
        """Raise while another live service heartbeats under this service id (two GPU hosts
        given the same JARVIS_RESOURCE_SERVICE_ID would take each other's requests and
        containers). A record left by a crashed run stops being refreshed: it is overwritten."""
        first = await self.bus.retry(lambda: self.bus.redis.get(self.alive_key), "get")
        if first is None:
            return
        await asyncio.sleep(self.settings.heartbeat_ttl_s / 3 + 0.2)  # one beat of the other's
        later = await self.bus.retry(lambda: self.bus.redis.get(self.alive_key), "get")
        if later is None or later == first:
            return
        other = m.ServiceRecord.model_validate_json(later)
        raise RuntimeError(
            f"another resource service runs as {other.service_id!r} (host {other.host}, pid {other.pid}); "
            "give each GPU host its own JARVIS_RESOURCE_SERVICE_ID"
        )

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.heartbeat_ttl_s / 3)
            if not stop.is_set():
                await self._beat()

    async def run(self, stop: asyncio.Event) -> None:
        await self._refuse_a_twin()
        await self.bus.ensure_group(self.requests, m.GROUP, start="$")
        adopted = await self.housekeeper.adopt_existing()
        if adopted:
            log.info("adopted %s", ", ".join(adopted))
        loops = [
            asyncio.create_task(self._heartbeat(stop), name="resource-heartbeat"),
            asyncio.create_task(self.housekeeper.run(stop), name="resource-housekeeping"),
        ]
        self._spawn(self.housekeeper.preload())
        await self._beat()  # clients see the service from now on
        self.started.set()
        log.info(
            "resource service %s up (GPU backend %s)",
            self.settings.service_id,
            getattr(self.planner.gpu, "backend", "?"),
        )
        try:
            while not stop.is_set():
                entries = await self.bus.consume(
                    self.requests, m.GROUP, self.settings.service_id, block_ms=self.block_ms, count=32
                )
                if entries:
                    await self.bus.ack(self.requests, m.GROUP, [eid for eid, _ in entries])
                for _, msg in entries:
                    self._spawn(self.handle(msg))
        finally:
            for t in loops:
                t.cancel()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*loops, *self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._forget(), 2.0)
            if self.settings.stop_on_exit:
                await self.planner.stop_all()
            await self.planner.runtimes.close()
            await self.planner.gpu.close()
