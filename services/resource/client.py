"""The client of the resource service, for the orchestrator and the CLI.

    client = ResourceClient(bus)
    async for p in client.ensure(["whisper", "llm", "chatterbox"], "turn", holder=turn_id):
        ...  # ModelProgress: show LOADING with p.model, p.progress, p.eta_s
    ...      # the turn runs; its models cannot be evicted
    await client.release(turn_id)

When no resource service runs (the heartbeat key `resource:alive` is absent), `ensure`
returns at once without yielding, `release` does nothing and `status` returns None: a CPU
deployment has nothing to arbitrate. A failed ensure raises a `ResourceError` subclass
chosen by the reply's error code.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

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


_BY_CODE: dict[str, type[ResourceError]] = {
    c.code: c for c in (WontFitError, BusyError, StartFailedError, InUseError, ResourceTimeout, ResourceGone)
}


def error_for(done: m.EnsureDone) -> ResourceError:
    return _BY_CODE.get(done.code, ResourceError)(
        done.error or "resource request failed", done.code or "error"
    )


class ResourceClient:
    def __init__(
        self,
        bus: Bus,
        *,
        timeout_s: float = 900.0,
        block_ms: int = 1000,
        requests: str = m.REQUESTS,
        alive_key: str = m.ALIVE_KEY,
    ):
        self.bus = bus
        self.timeout_s = timeout_s  # an ensure that outlasts this raises ResourceTimeout
        self.block_ms = block_ms
        self.requests = requests
        self.alive_key = alive_key

    async def available(self) -> bool:
        """Is a resource service running (its heartbeat key present)?"""
        return bool(await self.bus.retry(lambda: self.bus.redis.exists(self.alive_key), "exists"))

    async def _instance(self) -> bytes | str | None:
        """The heartbeat's value: it names the running service instance (None: none runs)."""
        return await self.bus.retry(lambda: self.bus.redis.get(self.alive_key), "get")

    async def _send(self, msg: Any) -> None:
        await self.bus.add(self.requests, msg, maxlen=10000)

    async def _replies(self, reply_to: str, timeout_s: float) -> AsyncGenerator[Any, None]:
        """Messages on `reply_to` until the caller stops; raises on timeout or a vanished service."""
        last: bytes | str = "0-0"
        deadline = time.monotonic() + timeout_s
        instance = await self._instance()
        if instance is None:
            raise ResourceGone("the resource service stopped before handling the request")
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ResourceTimeout(f"no answer from the resource service within {timeout_s:.0f}s")
                block = max(1, min(self.block_ms, int(remaining * 1000)))
                entries = await self.bus.read({reply_to: last}, block_ms=block)
                if not entries and await self._instance() != instance:
                    # gone, or restarted (a new instance never saw this request's task through)
                    raise ResourceGone("the resource service stopped while handling the request")
                for _, eid, msg in entries:
                    last = eid
                    if msg is not None:
                        yield msg
        finally:
            await self.bus.retry(lambda: self.bus.redis.delete(reply_to), "delete reply")

    async def ensure(
        self, models: Sequence[str], priority: str = "turn", holder: str | None = None, ttl_s: float = 0.0
    ) -> AsyncIterator[m.ModelProgress]:
        """Make `models` resident, yielding progress; pin them for `holder` when given.

        Ends after the service's EnsureDone; raises a ResourceError when it failed.
        A no-op (yields nothing) when no resource service is running.
        """
        if not models or not await self.available():
            return
        request_id = uuid.uuid4().hex
        reply_to = m.reply_stream(request_id)
        msg = m.EnsureModels(request_id, list(models), priority, holder, reply_to, ttl_s, time.time())
        async for p in self._progress(msg, reply_to):
            yield p

    async def _progress(self, request: Any, reply_to: str) -> AsyncIterator[m.ModelProgress]:
        """Send `request`, yield its ModelProgress replies, end at EnsureDone (raise if failed)."""
        await self._send(request)
        replies = self._replies(reply_to, self.timeout_s)
        try:
            async for msg in replies:
                if isinstance(msg, m.ModelProgress):
                    yield msg
                elif isinstance(msg, m.EnsureDone):
                    if not msg.ok:
                        raise error_for(msg)
                    return
        finally:
            await replies.aclose()

    async def release(self, holder: str) -> None:
        if await self.available():
            await self._send(m.ReleaseModels(holder, time.time()))

    async def renew(self, holder: str, ttl_s: float = 0.0) -> None:
        if await self.available():
            await self._send(m.RenewHold(holder, ttl_s, time.time()))

    async def status(self, timeout_s: float = 10.0) -> m.StatusReply | None:
        if not await self.available():
            return None
        request_id = uuid.uuid4().hex
        reply_to = m.reply_stream(request_id)
        await self._send(m.Status(reply_to, request_id, time.time()))
        replies = self._replies(reply_to, timeout_s)
        try:
            async for msg in replies:
                if isinstance(msg, m.StatusReply):
                    return msg
        finally:
            await replies.aclose()
        return None

    async def load(self, model: str) -> AsyncIterator[m.ModelProgress]:
        """Load one model (prewarm priority, unpinned); progress like `ensure`.

        Raises ResourceGone when no resource service is running.
        """
        if not await self.available():
            raise ResourceGone("no resource service is running")
        request_id = uuid.uuid4().hex
        reply_to = m.reply_stream(request_id)
        async for p in self._progress(m.Load(model, reply_to, request_id, time.time()), reply_to):
            yield p

    async def unload(self, model: str, force: bool = False, timeout_s: float = 120.0) -> m.EnsureDone:
        """Unload one model; raises InUseError while a holder pins it (unless forced)."""
        if not await self.available():
            raise ResourceGone("no resource service is running")
        request_id = uuid.uuid4().hex
        reply_to = m.reply_stream(request_id)
        await self._send(m.Unload(model, reply_to, request_id, force, time.time()))
        replies = self._replies(reply_to, timeout_s)
        try:
            async for msg in replies:
                if isinstance(msg, m.EnsureDone):
                    if not msg.ok:
                        raise error_for(msg)
                    return msg
        finally:
            await replies.aclose()
        raise ResourceTimeout("no answer to unload")
