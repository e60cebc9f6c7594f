"""Where Redis is (`JARVIS_REDIS_URL`) and the redis-py clients that reach it.

Three topologies, one URL each:
- `redis://[user:password@]host:port/db` (also `rediss://`, `unix://`): one instance;
- `redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]`: the primary that
  the Sentinels at those addresses name `service_name`; the client follows a failover (redis-py's
  `SentinelConnectionPool` asks the Sentinels again when its primary goes away or turns replica);
- `redis+cluster://[user:password@]host:port[,host:port...]`: a Redis Cluster reached through
  any of those nodes (redis-py's `RedisCluster` learns the slots and follows MOVED/ASK).

The credentials are the data nodes' (Sentinels are asked without any). redis-py does all the
connection work; this module only parses the URL and picks its class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

Kind = Literal["single", "sentinel", "cluster"]
SENTINEL = "redis+sentinel://"
CLUSTER = "redis+cluster://"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    kind: Kind
    url: str  # as given (a single instance's client is built from it)
    nodes: tuple[tuple[str, int], ...] = ()  # Sentinels or cluster seed nodes
    service: str = ""  # the Sentinel service name
    db: int = 0
    username: str | None = None
    password: str | None = None


def _host_port(spec: str, url: str) -> tuple[str, int]:
    if spec.startswith("["):  # [ipv6]:port
        host, sep, rest = spec[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        if not sep:
            raise ValueError(f"bad address {spec!r} in {url!r}")
    else:
        host, _, port = spec.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"every address in {url!r} must be host:port (got {spec!r})")
    return host, int(port)


def parse(url: str) -> RedisTarget:
    """The topology a `JARVIS_REDIS_URL` names; ValueError, saying what is wrong, otherwise."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisTarget("single", url)
    if not url.startswith((SENTINEL, CLUSTER)):
        raise ValueError(
            f"JARVIS_REDIS_URL must start with redis://, rediss://, unix://, {SENTINEL} or {CLUSTER}"
            f" (got {url!r})"
        )
    prefix, kind = (SENTINEL, "sentinel") if url.startswith(SENTINEL) else (CLUSTER, "cluster")
    rest = url[len(prefix) :]
    if "?" in rest or "#" in rest:
        raise ValueError(f"{url!r}: query options are not supported in a {prefix} URL")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, _, pw = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(pw) or None
    nodes = tuple(_host_port(s.strip(), url) for s in netloc.split(",") if s.strip())
    if not nodes:
        raise ValueError(f"{url!r} names no host:port")
    parts = [p for p in path.split("/") if p]
    if kind == "cluster":
        if parts:
            raise ValueError(f"{url!r}: a cluster URL has no path (Redis Cluster has database 0 only)")
        return RedisTarget("cluster", url, nodes, username=username, password=password)
    if not parts or len(parts) > 2:
        raise ValueError(f"{url!r}: a sentinel URL ends in /service_name or /service_name/db")
    if len(parts) == 2 and not parts[1].isdigit():
        raise ValueError(f"{url!r}: the database must be a number (got {parts[1]!r})")
    db = int(parts[1]) if len(parts) == 2 else 0
    return RedisTarget("sentinel", url, nodes, unquote(parts[0]), db, username, password)


def is_cluster(url: str) -> bool:
    return url.startswith(CLUSTER)


def _auth(t: RedisTarget) -> dict[str, Any]:
    return {k: v for k, v in (("username", t.username), ("password", t.password)) if v is not None}


def _sentinel_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: kw[k] for k in ("socket_timeout", "socket_connect_timeout") if k in kw}


def async_client(url: str, **kw: Any) -> Any:
    """An asyncio client (`redis.asyncio.Redis` or `RedisCluster`) for `url`; `kw` are connection
    options (socket_timeout, ...). Close it with `aclose`."""
    t = parse(url)
    if t.kind == "single":
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(url, **kw)
    if t.kind == "cluster":
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        # a blocking read per slot holds a connection each (`shared.bus`): no small cap per node
        kw.setdefault("max_connections", 1 << 16)
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in t.nodes], **_auth(t), **kw)
    from redis.asyncio.sentinel import Sentinel

    sentinel = Sentinel(list(t.nodes), sentinel_kwargs=_sentinel_kwargs(kw))
    client = sentinel.master_for(t.service, db=t.db, **_auth(t), **kw)
    client._jarvis_sentinels = sentinel.sentinels  # closed with it (`aclose`)
    return client


async def aclose(client: Any) -> None:
    """Close a client from `async_client`, with the Sentinel connections behind it."""
    await client.aclose()
    for s in getattr(client, "_jarvis_sentinels", ()):
        await s.aclose()


def sync_client(url: str, **kw: Any) -> Any:
    """A blocking client (`redis.Redis` or `redis.cluster.RedisCluster`) for `url`, for threads,
    the launcher and the benchmarks. Close it with `close()`."""
    t = parse(url)
    import redis

    if t.kind == "single":
        return redis.Redis.from_url(url, **kw)
    if t.kind == "cluster":
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in t.nodes], **_auth(t), **kw)
    from redis.sentinel import Sentinel

    return Sentinel(list(t.nodes), sentinel_kwargs=_sentinel_kwargs(kw)).master_for(
        t.service, db=t.db, **_auth(t), **kw
    )
