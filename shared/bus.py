"""The Redis Streams bus: typed publish/read, consumer groups, reclaim, dead letters, reconnects.

One `Bus` per process. Everything on it is async; every call survives Redis going away
by retrying with capped exponential backoff (a service waits for Redis rather than dying), a
Sentinel failover or a cluster resharding included. Hot paths batch: `add_many` sends any
number of XADDs in one round trip.

On Redis Cluster (`shared.redis_url`) a script, a transaction and an XREAD may only touch keys
of one hash slot: every key of a session shares the tag `{sid}` (`shared.messages`), and here
batches are split by slot (one call per slot, in order within a slot; on one instance nothing
is split) and a read over many slots is one blocking read per slot, run concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.connection import HiredisRespSerializer  # packs commands in C (redis-py does it in Python)
from redis.crc import key_slot
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    ReadOnlyError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

from shared import codec, redis_url
from shared.messages import DEAD_LETTER
from shared.ratelog import RateLimitedLog

log = logging.getLogger("jarvis.bus")
_outage_log = RateLimitedLog(log, every_s=5.0)
T = TypeVar("T")

# Redis away, or between two primaries: a Sentinel failover (the old primary answers READONLY
# once it is a replica, MASTERDOWN while its replica has no primary; MasterNotFoundError is a
# ConnectionError) or a cluster moving slots (CLUSTERDOWN, TRYAGAIN, a slot no node serves yet)
_TRANSIENT = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    ReadOnlyError,
    MasterDownError,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
)

# XADD only while the session's epoch is still the job's: cancelled work never lands.
# KEYS: the epoch key, then one stream per entry; ARGV: epoch, field, then maxlen + payload per entry.
_EPOCH_XADD = """
local cur = redis.call('GET', KEYS[1]) or '0'
if cur ~= ARGV[1] then return false end
local id
for i = 2, #KEYS do
  id = redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[2 * i - 1], '*', ARGV[2], ARGV[2 * i])
end
return id or 1
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


# Worker liveness, on Redis's clock (so no two hosts' clocks are compared).
_HEARTBEAT = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], t[1] * 1000 + math.floor(t[2] / 1000), ARGV[1])
return 1
"""
# KEYS: workers:{kind}; ARGV: how recent a heartbeat must be (ms). Also forgets members silent
# for an hour (a worker that died long ago).
_LIVE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 3600000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
"""


class Heartbeat(threading.Thread):
    """Stamps `member` into the sorted set `key` every `period_s`, from a thread of its own, so a
    busy or blocked event loop is never taken for a dead process: only the process dying stops
    it. `stop()` removes the member (a clean exit is noticed at once)."""

    def __init__(self, url: str, key: str, member: str, period_s: float) -> None:
        super().__init__(name=f"heartbeat-{member}", daemon=True)
        self.key, self.member, self.period_s = key, member, period_s
        self._redis = redis_url.sync_client(url, socket_timeout=2, socket_connect_timeout=2)
        self._beat = self._redis.register_script(_HEARTBEAT)
        self._stop = threading.Event()

    def beat(self) -> bool:
        try:
            self._beat(keys=[self.key], args=[self.member])
            return True
        except Exception:  # noqa: BLE001 - Redis away: the next beat tries again
            return False

    def run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.beat()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._redis.zrem(self.key, self.member)
        except Exception:  # noqa: BLE001 - Redis away: the member just ages out
            pass
        self._redis.close()


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


class _SlotReads:
    """Cluster: an XREAD over streams of many slots, as one XREAD per slot, all sent at once.
    A slot without a read in flight is read without blocking first (so everything already there
    comes back in one round); only when none had anything does each slot get a blocking read.
    When one returns, those still blocked are kept for the next call if it asks for the same
    streams from the same cursors (the usual case: only the streams that got entries move on),
    so no connection is dropped and no entry is read twice or missed."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.inflight: dict[int, tuple[tuple[tuple[str, bytes | str], ...], asyncio.Task]] = {}

    async def read(self, streams: dict[str, bytes | str], block_ms: int | None, count: int | None) -> Any:
        groups: dict[int, dict[str, bytes | str]] = {}
        for stream, cursor in streams.items():
            groups.setdefault(key_slot(stream.encode()), {})[stream] = cursor
        for slot, (sig, task) in list(self.inflight.items()):
            if slot not in groups or sig != tuple(groups[slot].items()):
                task.cancel()  # not asked for any more, or from elsewhere: its answer is not wanted
                del self.inflight[slot]
        fresh = [slot for slot in groups if slot not in self.inflight]
        out: list[Any] = []
        if fresh:
            got = await asyncio.gather(*(self.redis.xread(groups[s], count=count) for s in fresh))
            out = [entry for reply in got for entry in reply or []]
        if out or not block_ms:
            return out + self._harvest(wait=False)
        for slot in fresh:
            task = asyncio.create_task(self.redis.xread(groups[slot], count=count, block=block_ms))
            self.inflight[slot] = (tuple(groups[slot].items()), task)
        await asyncio.wait([t for _, t in self.inflight.values()], return_when=asyncio.FIRST_COMPLETED)
        return self._harvest(wait=True)

    def _harvest(self, wait: bool) -> list[Any]:
        """The entries of the reads that are done (which leave the in-flight set); a read that
        failed raises, unless others brought entries (it is sent again next time)."""
        out: list[Any] = []
        failed: BaseException | None = None
        for slot, (_, task) in list(self.inflight.items()):
            if not task.done():
                continue
            del self.inflight[slot]
            if task.cancelled():
                continue
            if task.exception() is not None:
                failed = task.exception()
            else:
                out += task.result() or []
        if failed is not None and not out and wait:
            raise failed
        return out

    def close(self) -> None:
        for _, task in self.inflight.values():
            task.cancel()
        self.inflight.clear()


class Bus:
    def __init__(self, url: str, *, socket_timeout: float = 30.0, max_backoff: float = 0.5) -> None:
        self.url = url
        self.cluster = redis_url.is_cluster(url)
        extra: dict[str, Any] = (
            {"connection_class": _Connection} if HIREDIS_AVAILABLE and url.startswith("redis://") else {}
        )
        # Any: redis-py types every reply as a union of bytes, str and awaitables; replies are
        # decoded here, at the edge (codec.from_entry, _s)
        self.redis: Any = redis_url.async_client(
            url, socket_timeout=socket_timeout, socket_connect_timeout=5, health_check_interval=30, **extra
        )
        self.max_backoff = max_backoff
        self._epoch_xadd = self.redis.register_script(_EPOCH_XADD)
        self._multi_xadd = self.redis.register_script(_MULTI_XADD)
        self._live = self.redis.register_script(_LIVE)
        self._slot_reads = _SlotReads(self.redis) if self.cluster else None

    @classmethod
    def from_settings(cls, settings: Any) -> Bus:
        return cls(settings.redis_url, socket_timeout=settings.redis_socket_timeout)

    async def close(self) -> None:
        if self._slot_reads is not None:
            self._slot_reads.close()
        await redis_url.aclose(self.redis)

    # ---- hash slots (Redis Cluster) -------------------------------------------------

    def slot_groups(self, keys: Sequence[str]) -> list[list[int]]:
        """The indexes of `keys`, grouped by hash slot, in order of first appearance (and in
        order within a group). On one instance: one group, whatever the keys."""
        if not self.cluster:
            return [list(range(len(keys)))]
        groups: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key_slot(key.encode()), []).append(i)
        return list(groups.values())

    def one_slot(self, keys: Sequence[str]) -> bool:
        """Whether one script or transaction may touch all of `keys` (always, on one instance)."""
        return len(self.slot_groups(keys)) <= 1

    async def retry(self, fn: Callable[[], Awaitable[T]], what: str = "redis") -> T:
        """Run `fn` until it succeeds, backing off while Redis is unreachable."""
        delay = 0.05
        while True:
            try:
                return await fn()
            except _TRANSIENT as exc:
                _outage_log.warning(
                    what, "%s: redis unavailable (%s); retrying", what, exc.__class__.__name__
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.max_backoff)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self.retry(self.redis.ping, "ping"), timeout)

    async def server_id(self) -> str:
        """Which Redis process serves (its run id; on a cluster every primary's): it changes when
        Redis restarts, when a Sentinel failover promotes a replica, when a cluster node does."""
        if self.cluster:
            nodes = self.redis.PRIMARIES
            res = await self.retry(lambda: self.redis.info("server", target_nodes=nodes), "info")
            return ",".join(sorted(str(info.get("run_id")) for info in res.values()))
        info = await self.retry(lambda: self.redis.info("server"), "info")
        return str(info.get("run_id"))

    # ---- publishing ---------------------------------------------------------------

    async def add(self, stream: str, msg: Any, maxlen: int | None = None) -> bytes:
        fields = codec.entry(msg)
        return await self.retry(
            lambda: self.redis.xadd(stream, fields, maxlen=maxlen, approximate=True), f"xadd {stream}"
        )

    async def add_many(self, items: Sequence[tuple[str, Any, int | None]]) -> None:
        """XADD many entries in one round trip, in order (one script call)."""
        await self.add_encoded([(stream, codec.encode(msg), maxlen) for stream, msg, maxlen in items])

    async def add_encoded(self, items: Sequence[tuple[str, bytes, int | None]]) -> None:
        """`add_many` for entries already encoded (`codec.encode`): callers that must know an
        entry is valid before it joins a batch encode it first."""
        if not items:
            return
        parts = (  # one call on one instance; on a cluster one per slot, in turn
            [[items[i] for i in group] for group in self.slot_groups([s for s, _, _ in items])]
            if self.cluster
            else [items]
        )
        for part in parts:
            keys: list[str] = []
            args: list[Any] = [codec.FIELD]
            for stream, payload, maxlen in part:
                keys.append(stream)
                args += [maxlen or 0, payload]
            await self.retry(partial(self._multi_xadd, keys=keys, args=args), "xadd batch")

    async def add_if_epoch(
        self, epoch_key: str, epoch: int, stream: str, msg: Any, maxlen: int
    ) -> bytes | None:
        """XADD only if `epoch_key` still holds `epoch`; None means the work was cancelled."""
        return await self.add_many_if_epoch(epoch_key, epoch, [(stream, msg, maxlen)])

    async def add_many_if_epoch(
        self, epoch_key: str, epoch: int, items: Sequence[tuple[str, Any, int]]
    ) -> bytes | None:
        """Several XADDs in one atomic round trip, only if the epoch still holds (else None).

        On a cluster only the entries in the epoch key's slot (the session's own streams) can
        share its script: those go atomically, and the others (a follow-up job in a job stream)
        right after, once that write proved the epoch held. Such a job may land just after the
        epoch moved on: its worker reads the epoch before starting it (`shared.worker`), and its
        writes are refused by this same check, so none of its work reaches the session."""
        later: list[tuple[str, bytes, int | None]] = []
        if self.cluster:
            slot = key_slot(epoch_key.encode())
            later = [(s, codec.encode(m), n) for s, m, n in items if key_slot(s.encode()) != slot]
            if later:
                items = [it for it in items if key_slot(it[0].encode()) == slot]
        keys = [epoch_key]
        args: list[Any] = [str(epoch), codec.FIELD]
        for stream, msg, maxlen in items:
            keys.append(stream)
            args += [maxlen, codec.encode(msg)]
        res = await self.retry(lambda: self._epoch_xadd(keys=keys, args=args), "xadd (epoch)")
        if not res:
            return None
        await self.add_encoded(later)
        return res

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
        reads = self._slot_reads
        if reads is not None and len(streams) > 1:
            resp = await self.retry(lambda: reads.read(streams, block_ms, count), "xread")
        else:
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

    async def ack_delete(self, stream: str, group: str, ids: Iterable[bytes]) -> None:
        """Ack and delete in one round trip: a done job's payload (audio, an image) leaves Redis
        at once instead of waiting for the stream's trim."""
        ids = list(ids)
        if not ids:
            return

        async def run() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xack(stream, group, *ids)
                pipe.xdel(stream, *ids)
                await pipe.execute()

        await self.retry(run, f"xack {stream}")

    # ---- worker liveness ---------------------------------------------------------

    async def live_workers(self, kind_key: str, within_ms: int) -> set[str]:
        """Members of the heartbeat set `kind_key` seen within `within_ms` (Redis's clock)."""
        res = await self.retry(lambda: self._live(keys=[kind_key], args=[within_ms]), "live workers")
        return {_s(m) for m in res}

    async def consumers(self, stream: str, group: str) -> list[tuple[str, int, int]]:
        """(name, pending, idle ms) of each consumer of `group`; [] when there is no such group."""

        async def run() -> Any:
            try:
                return await self.redis.xinfo_consumers(stream, group)
            except ResponseError:  # no stream or no group yet
                return []

        res = await self.retry(run, f"xinfo {stream}")
        return [(_s(c["name"]), int(c["pending"]), int(c["idle"])) for c in res]

    async def take_pending(self, stream: str, group: str, consumer: str) -> list[tuple[bytes, Any]]:
        """The entries `consumer` holds and never acked (a dead worker's jobs), decoded (None
        where the entry is gone or does not decode)."""
        pend = await self.retry(
            lambda: self.redis.xpending_range(
                stream, group, min="-", max="+", count=1000, consumername=consumer
            ),
            "xpending",
        )
        out: list[tuple[bytes, Any]] = []
        for p in pend:
            eid = p["message_id"]
            got = await self.retry(partial(self.redis.xrange, stream, eid, eid), "xrange")
            msg = None
            if got and got[0][1]:
                try:
                    msg = codec.from_entry(got[0][1])
                except codec.CodecError:
                    msg = None
            out.append((eid, msg))
        return out

    async def drop_consumer(
        self,
        stream: str,
        group: str,
        consumer: str,
        ids: Sequence[bytes],
        notices: Sequence[tuple[str, Any, int]],
    ) -> None:
        """Forget a dead consumer in one transaction: write `notices` (what replaces its jobs),
        ack and delete the jobs it held, delete it from the group. On a cluster the notices (in
        the sessions' slots) are written first, then the rest in one transaction: a crash in
        between hands a job back twice (the runner runs it again), never not at all."""
        together = self.one_slot([stream, *(dest for dest, _, _ in notices)])
        if not together:
            await self.add_many(notices)

        async def run() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                for dest, msg, maxlen in notices if together else ():
                    pipe.xadd(dest, codec.entry(msg), maxlen=maxlen, approximate=True)
                if ids:
                    pipe.xack(stream, group, *ids)
                    pipe.xdel(stream, *ids)
                pipe.xgroup_delconsumer(stream, group, consumer)
                await pipe.execute()

        await self.retry(run, f"drop consumer {consumer}")

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

        together = self.one_slot([DEAD_LETTER, stream])

        async def run() -> None:
            if not together:  # a cluster: kept first, then acked (at worst kept twice)
                await self.redis.xadd(DEAD_LETTER, record, maxlen=10000, approximate=True)
            async with self.redis.pipeline(transaction=True) as pipe:
                if together:
                    pipe.xadd(DEAD_LETTER, record, maxlen=10000, approximate=True)
                pipe.xack(stream, group, eid)
                await pipe.execute()

        await self.retry(run, "dead letter")
