"""The Redis Streams bus: typed publish/read, consumer groups, reclaim, dead letters, reconnects.

One `Bus` per process. Everything on it is async; every call survives Redis going away
by retrying with capped exponential backoff (a service waits for Redis rather than dying).
Hot paths batch: `add_many` sends any number of XADDs in one round trip.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.connection import HiredisRespSerializer  # packs commands in C (redis-py does it in Python)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

from shared import codec
from shared.messages import DEAD_LETTER

log = logging.getLogger("jarvis.bus")
T = TypeVar("T")

_TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)

# XADD only while the session's epoch is still the job's: cancelled work never lands.
# KEYS: the epoch key, then one stream per entry; ARGV: epoch, field, then maxlen + payload per entry.
_EPOCH_XADD = """
local cur = redis.call('GET', KEYS[1]) or '0'
if cur ~= ARGV[1] then return false end
local id
for i = 2, #KEYS do
  id = redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[2 * i - 1], '*', ARGV[2], ARGV[2 * i])
end
return id
"""


class _Connection(aioredis.Connection):
    """A connection that packs commands with hiredis: the per-frame paths send many small ones
    (used only where hiredis is installed)."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        return self._packer.pack(*args)


# Many XADDs in one script call: one reply, and far less client-side work than a pipeline.
# KEYS: the streams; ARGV: field, then maxlen (0: none) + payload per entry.
_MULTI_XADD = """
for i = 1, #KEYS do
  local maxlen = tonumber(ARGV[2 * i])
  if maxlen > 0 then
    redis.call('XADD', KEYS[i], 'MAXLEN', '~', maxlen, '*', ARGV[1], ARGV[2 * i + 1])
  else
    redis.call('XADD', KEYS[i], '*', ARGV[1], ARGV[2 * i + 1])
  end
end
return #KEYS
"""


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


class Bus:
    def __init__(self, url: str, *, socket_timeout: float = 30.0, max_backoff: float = 2.0) -> None:
        self.url = url
        extra: dict[str, Any] = (
            {"connection_class": _Connection} if HIREDIS_AVAILABLE and url.startswith("redis://") else {}
        )
        # Any: redis-py types every reply as a union of bytes, str and awaitables; replies are
        # decoded here, at the edge (codec.from_entry, _s)
        self.redis: Any = aioredis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=5, health_check_interval=30, **extra
        )
        self.max_backoff = max_backoff
        self._epoch_xadd = self.redis.register_script(_EPOCH_XADD)
        self._multi_xadd = self.redis.register_script(_MULTI_XADD)

    @classmethod
    def from_settings(cls, settings: Any) -> Bus:
        return cls(settings.redis_url, socket_timeout=settings.redis_socket_timeout)

    async def close(self) -> None:
        await self.redis.aclose()

    async def retry(self, fn: Callable[[], Awaitable[T]], what: str = "redis") -> T:
        """Run `fn` until it succeeds, backing off while Redis is unreachable."""
        delay = 0.05
        while True:
            try:
                return await fn()
            except _TRANSIENT as exc:
                log.warning(
                    "%s: redis unavailable (%s); retrying in %.2fs", what, exc.__class__.__name__, delay
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.max_backoff)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self.retry(self.redis.ping, "ping"), timeout)

    # ---- publishing ---------------------------------------------------------------

    async def add(self, stream: str, msg: Any, maxlen: int | None = None) -> bytes:
        fields = codec.entry(msg)
        return await self.retry(
            lambda: self.redis.xadd(stream, fields, maxlen=maxlen, approximate=True), f"xadd {stream}"
        )

    async def add_many(self, items: Sequence[tuple[str, Any, int | None]]) -> None:
        """XADD many entries in one round trip, in order (one script call)."""
        if not items:
            return
        keys: list[str] = []
        args: list[Any] = [codec.FIELD]
        for stream, msg, maxlen in items:
            keys.append(stream)
            args += [maxlen or 0, codec.encode(msg)]
        await self.retry(lambda: self._multi_xadd(keys=keys, args=args), "xadd batch")

    async def add_if_epoch(
        self, epoch_key: str, epoch: int, stream: str, msg: Any, maxlen: int
    ) -> bytes | None:
        """XADD only if `epoch_key` still holds `epoch`; None means the work was cancelled."""
        return await self.add_many_if_epoch(epoch_key, epoch, [(stream, msg, maxlen)])

    async def add_many_if_epoch(
        self, epoch_key: str, epoch: int, items: Sequence[tuple[str, Any, int]]
    ) -> bytes | None:
        """Several XADDs in one atomic round trip, only if the epoch still holds (else None)."""
        keys = [epoch_key]
        args: list[Any] = [str(epoch), codec.FIELD]
        for stream, msg, maxlen in items:
            keys.append(stream)
            args += [maxlen, codec.encode(msg)]
        res = await self.retry(lambda: self._epoch_xadd(keys=keys, args=args), "xadd (epoch)")
        return res or None

    async def epoch(self, epoch_key: str) -> int:
        v = await self.retry(lambda: self.redis.get(epoch_key), "get epoch")
        return int(v or 0)

    # ---- plain reads -------------------------------------------------------------

    async def read(
        self, streams: dict[str, bytes | str], block_ms: int | None = None, count: int | None = None
    ) -> list[tuple[str, bytes, Any]]:
        """XREAD over several streams; returns (stream, id, message) in stream order.

        Entries that do not decode are logged and skipped (the caller advances past them
        because the id is still returned, with message None).
        """
        if not streams:
            if block_ms:
                await asyncio.sleep(block_ms / 1000)
            return []
        resp = await self.retry(lambda: self.redis.xread(streams, count=count, block=block_ms), "xread")
        return self._decode_xread(resp)

    @staticmethod
    def _decode_xread(resp: Any) -> list[tuple[str, bytes, Any]]:
        out: list[tuple[str, bytes, Any]] = []
        if not resp:
            return out
        for stream, entries in resp:
            name = _s(stream)
            for eid, fields in entries:
                try:
                    msg = codec.from_entry(fields)
                except codec.CodecError as exc:
                    log.error("skipping bad entry %s in %s: %s", _s(eid), name, exc)
                    msg = None
                out.append((name, eid, msg))
        return out

    async def range(
        self, stream: str, start: str = "-", end: str = "+", count: int | None = None
    ) -> list[tuple[bytes, Any]]:
        resp = await self.retry(lambda: self.redis.xrange(stream, start, end, count=count), "xrange")
        return [(eid, codec.from_entry(f)) for eid, f in resp]

    # ---- consumer groups ---------------------------------------------------------

    async def ensure_group(self, stream: str, group: str, start: str = "0") -> None:
        async def run() -> None:
            try:
                await self.redis.xgroup_create(stream, group, id=start, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

        await self.retry(run, f"xgroup {stream}")

    async def join_group(self, stream: str, group: str, consumer: str) -> None:
        """Create the group if needed and register this consumer now (Redis 7 only creates a
        consumer when XREADGROUP hands it something, so readiness checks would not see it)."""
        await self.ensure_group(stream, group)
        await self.retry(
            lambda: self.redis.xgroup_createconsumer(stream, group, consumer), f"xgroup {stream}"
        )

    async def consume(
        self, stream: str, group: str, consumer: str, block_ms: int | None = 1000, count: int = 16
    ) -> list[tuple[bytes, Any]]:
        """New entries for this consumer; bad entries are dead-lettered and acked."""

        async def run() -> Any:
            try:
                return await self.redis.xreadgroup(
                    group, consumer, {stream: ">"}, count=count, block=block_ms
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self.ensure_group(stream, group)
                return []

        resp = await self.retry(run, f"xreadgroup {stream}")
        out: list[tuple[bytes, Any]] = []
        for _, entries in resp or []:
            for eid, fields in entries:
                if not fields:  # deleted while pending
                    await self.ack(stream, group, [eid])
                    continue
                try:
                    out.append((eid, codec.from_entry(fields)))
                except codec.CodecError as exc:
                    await self._dead_letter(stream, group, eid, fields, f"undecodable: {exc}")
        return out

    async def ack(self, stream: str, group: str, ids: Iterable[bytes]) -> None:
        ids = list(ids)
        if ids:
            await self.retry(lambda: self.redis.xack(stream, group, *ids), f"xack {stream}")

    async def reclaim(
        self, stream: str, group: str, consumer: str, min_idle_ms: int, max_deliveries: int, count: int = 16
    ) -> list[tuple[bytes, Any]]:
        """Take over entries pending longer than `min_idle_ms` (XAUTOCLAIM).

        An entry delivered more than `max_deliveries` times goes to the dead-letter
        stream and is acked instead of being retried forever.
        """
        resp = await self.retry(
            lambda: self.redis.xautoclaim(stream, group, consumer, min_idle_ms, start_id="0-0", count=count),
            f"xautoclaim {stream}",
        )
        claimed = [(eid, fields) for eid, fields in resp[1] if fields]
        if not claimed:
            return []
        pend = await self.retry(
            lambda: self.redis.xpending_range(
                stream,
                group,
                min=claimed[0][0],
                max=claimed[-1][0],
                count=len(claimed) * 2,
                consumername=consumer,
            ),
            "xpending",
        )
        deliveries = {p["message_id"]: p["times_delivered"] for p in pend}
        out: list[tuple[bytes, Any]] = []
        for eid, fields in claimed:
            n = deliveries.get(eid, 1)
            if n > max_deliveries:
                await self._dead_letter(stream, group, eid, fields, f"delivered {n} times")
                continue
            try:
                out.append((eid, codec.from_entry(fields)))
            except codec.CodecError as exc:
                await self._dead_letter(stream, group, eid, fields, f"undecodable: {exc}")
        return out

    async def _dead_letter(self, stream: str, group: str, eid: bytes, fields: dict, reason: str) -> None:
        log.error("dead-lettering %s from %s/%s: %s", _s(eid), stream, group, reason)
        record = {**fields, b"stream": stream, b"group": group, b"id": eid, b"reason": reason}

        async def run() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(DEAD_LETTER, record, maxlen=10000, approximate=True)
                pipe.xack(stream, group, eid)
                await pipe.execute()

        await self.retry(run, "dead letter")
