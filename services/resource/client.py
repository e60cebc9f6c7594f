"""The client of the resource services, for the orchestrator and the CLI.

    client = ResourceClient(bus)
    async for p in client.ensure(["whisper", "llm", "chatterbox"], "turn", holder=turn_id):
        ...  # ModelProgress: show LOADING with p.model, p.progress, p.eta_s
    ...      # the turn runs; its models cannot be evicted
    await client.release(turn_id)

There is one resource service per GPU host, each managing its own registry's models (see
`messages.py`). The client reads the services' records and sends each model to the service
that manages it (`route`): the one where it is resident, else the one already chosen for
another model of the same request (a turn's models stay together), else the first by id. The
services asked work in parallel and all reply on the request's one stream.

When no resource service runs (no live record), `ensure` returns at once without yielding,
`release` does nothing and `status` returns None: a CPU deployment has nothing to arbitrate.
A failed ensure raises a `ResourceError` subclass chosen by the reply's error code; a model no
running service manages raises `UnknownModelError`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from pydantic import ValidationError

from services.resource import messages as m
from shared.bus import Bus


class ResourceError(RuntimeError):
    code = "error"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code


class WontFitError(ResourceError):
    code = "wont_fit"


class BusyError(ResourceError):
    code = "busy"


class StartFailedError(ResourceError):
    code = "start_failed"


class InUseError(ResourceError):
    code = "in_use"


class ResourceTimeout(ResourceError):
    code = "timeout"


class ResourceGone(ResourceError):
    code = "gone"


class UnknownModelError(ResourceError):
    code = "unknown_model"


_BY_CODE: dict[str, type[ResourceError]] = {
    c.code: c
    for c in (
        WontFitError,
        BusyError,
        StartFailedError,
        InUseError,
        ResourceTimeout,
        ResourceGone,
        UnknownModelError,
    )
}


def error_for(done: m.EnsureDone) -> ResourceError:
    return _BY_CODE.get(done.code, ResourceError)(
        done.error or "resource request failed", done.code or "error"
    )


def route(services: Sequence[m.ServiceRecord], models: Sequence[str]) -> dict[str, list[str]]:
    """service id -> the models of `models` to ask it for (in the request's order).

    Each model goes to a service that manages it: one where it is resident, else one already
    chosen for another model of this request, else the first by id. Raises UnknownModelError
    for a model no service manages."""
    ordered = sorted(services, key=lambda s: s.service_id)
    plan: dict[str, list[str]] = {}
    for model in dict.fromkeys(models):
        managing = [s for s in ordered if model in s.models]
        if not managing:
            hosts = ", ".join(s.service_id for s in ordered) or "none"
            raise UnknownModelError(f"no running resource service manages {model!r} (services: {hosts})")
        chosen = (
            next((s for s in managing if model in s.resident), None)
            or next((s for s in managing if s.service_id in plan), None)
            or managing[0]
        )
        plan.setdefault(chosen.service_id, []).append(model)
    return plan


class ResourceClient:
    def __init__(self, bus: Bus, *, timeout_s: float = 900.0, block_ms: int = 1000):
        self.bus = bus
        self.timeout_s = timeout_s  # an ensure that outlasts this raises ResourceTimeout
        self.block_ms = block_ms

    async def services(self, ids: Sequence[str] | None = None) -> list[m.ServiceRecord]:
        """The live resource services (all of them, or those of `ids`), sorted by id. A member of
        the set whose record expired is dead: it is taken out of the set."""
        r = self.bus.redis
        if ids is None:
            members = await self.bus.retry(lambda: r.smembers(m.SERVICES), "smembers")
            ids = sorted(x.decode() if isinstance(x, bytes) else x for x in members)
        if not ids:
            return []
        wanted = list(ids)

        async def read() -> list[Any]:
            async with r.pipeline(transaction=False) as pipe:  # one GET per key: keys of any slot
                for sid in wanted:
                    pipe.get(m.alive_key(sid))
                return await pipe.execute()

        values = await self.bus.retry(read, "service records")
        live, dead = [], []
        for sid, raw in zip(wanted, values, strict=True):
            try:
                live.append(m.ServiceRecord.model_validate_json(raw)) if raw else dead.append(sid)
            except ValidationError:
                dead.append(sid)  # not a record this client understands
        if dead:
            await self.bus.retry(lambda: r.srem(m.SERVICES, *dead), "srem")
        return live

    async def available(self) -> bool:
        """Is a resource service running (a live record)?"""
        return bool(await self.services())

    async def _send(self, service_id: str, msg: Any) -> None:
        await self.bus.add(m.requests_stream(service_id), msg, maxlen=10000)

    async def _replies(
        self, reply_to: str, asked: dict[str, str], timeout_s: float
    ) -> AsyncGenerator[Any, None]:
        """Messages on `reply_to` until the caller stops; raises on timeout, or when a service
        asked (request id -> service id in `asked`) vanished or restarted before it answered."""
        last: bytes | str = "0-0"
        deadline = time.monotonic() + timeout_s
        instances = {s.service_id: s.instance for s in await self.services(sorted(set(asked.values())))}
        if len(instances) < len(set(asked.values())):
            raise ResourceGone("the resource service stopped before handling the request")
        waiting = dict(asked)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ResourceTimeout(f"no answer from the resource service within {timeout_s:.0f}s")
                block = max(1, min(self.block_ms, int(remaining * 1000)))
                entries = await self.bus.read({reply_to: last}, block_ms=block)
                if not entries:
                    # gone, or restarted (a new instance never saw this request's task through)
                    pending = sorted({waiting[r] for r in waiting})
                    now = {s.service_id: s.instance for s in await self.services(pending)}
                    if any(now.get(sid) != instances[sid] for sid in pending):
                        raise ResourceGone("the resource service stopped while handling the request")
                for _, eid, msg in entries:
                    last = eid
                    if isinstance(msg, m.EnsureDone | m.StatusReply):
                        waiting.pop(msg.request_id, None)
                    if msg is not None:
                        yield msg
        finally:
            await self.bus.retry(lambda: self.bus.redis.delete(reply_to), "delete reply")

    async def ensure(
        self, models: Sequence[str], priority: str = "turn", holder: str | None = None, ttl_s: float = 0.0
    ) -> AsyncIterator[m.ModelProgress]:
        """Make `models` resident, each on the service that manages it, yielding progress; pin
        them for `holder` when given.

        Ends after every asked service's EnsureDone; raises a ResourceError when one failed.
        A no-op (yields nothing) when no resource service is running.
        """
        services = await self.services() if models else []
        if not services:
            return
        reply_to = m.reply_stream(uuid.uuid4().hex)
        requests: dict[str, tuple[str, Any]] = {}  # request id -> (service id, its request)
        for sid, wanted in route(services, models).items():
            request_id = uuid.uuid4().hex
            msg = m.EnsureModels(request_id, wanted, priority, holder, reply_to, ttl_s, time.time())
            requests[request_id] = (sid, msg)
        async for p in self._progress(requests, reply_to):
            yield p

    async def _progress(
        self, requests: dict[str, tuple[str, Any]], reply_to: str
    ) -> AsyncIterator[m.ModelProgress]:
        """Send each request (request id -> (service id, request)), yield their ModelProgress
        replies, end once every one's EnsureDone came (raise at the first that failed)."""
        for service_id, msg in requests.values():
            await self._send(service_id, msg)
        open_ = set(requests)
        replies = self._replies(reply_to, {rid: sid for rid, (sid, _) in requests.items()}, self.timeout_s)
        try:
            async for msg in replies:
                if isinstance(msg, m.ModelProgress):
                    yield msg
                elif isinstance(msg, m.EnsureDone):
                    if not msg.ok:
                        raise error_for(msg)
                    open_.discard(msg.request_id)
                    if not open_:
                        return
        finally:
            await replies.aclose()

    async def release(self, holder: str) -> None:
        """Unpin `holder`'s models on every service (a turn's models may sit on several)."""
        for s in await self.services():
            await self._send(s.service_id, m.ReleaseModels(holder, time.time()))

    async def renew(self, holder: str, ttl_s: float = 0.0) -> None:
        for s in await self.services():
            await self._send(s.service_id, m.RenewHold(holder, ttl_s, time.time()))

    async def status(self, service_id: str | None = None, timeout_s: float = 10.0) -> m.StatusReply | None:
        """The report of one service (`service_id`, else the first by id); None: none runs."""
        services = await self.services([service_id] if service_id else None)
        if not services:
            return None
        sid = services[0].service_id
        request_id = uuid.uuid4().hex
        reply_to = m.reply_stream(request_id)
        await self._send(sid, m.Status(reply_to, request_id, time.time()))
        replies = self._replies(reply_to, {request_id: sid}, timeout_s)
        try:
            async for msg in replies:
                if isinstance(msg, m.StatusReply):
                    return msg
        finally:
            await replies.aclose()
        return None

    async def _owner(self, model: str, resident_only: bool = False) -> str:
        services = await self.services()
        if not services:
            raise ResourceGone("no resource service is running")
        if resident_only:
            where = [s.service_id for s in services if model in s.resident]
            if where:
                return where[0]
        return next(iter(route(services, [model])))

    async def load(self, model: str) -> AsyncIterator[m.ModelProgress]:
        """Load one model (prewarm priority, unpinned) on the service that manages it; progress
        like `ensure`. Raises ResourceGone when no resource service is running."""
        sid = await self._owner(model)
        request_id = uuid.uuid4().hex
        reply_to = m.reply_stream(request_id)
        request = m.Load(model, reply_to, request_id, time.time())
        async for p in self._progress({request_id: (sid, request)}, reply_to):
            yield p

    async def unload(self, model: str, force: bool = False, timeout_s: float = 120.0) -> m.EnsureDone:
        """Unload one model where it is resident; raises InUseError while a holder pins it
        (unless forced)."""
        sid = await self._owner(model, resident_only=True)
        request_id = uuid.uuid4().hex
        reply_to = m.reply_stream(request_id)
        await self._send(sid, m.Unload(model, reply_to, request_id, force, time.time()))
        replies = self._replies(reply_to, {request_id: sid}, timeout_s)
        try:
            async for msg in replies:
                if isinstance(msg, m.EnsureDone):
                    if not msg.ok:
                        raise error_for(msg)
                    return msg
        finally:
            await replies.aclose()
        raise ResourceTimeout("no answer to unload")
