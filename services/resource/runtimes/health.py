"""Health checks and the few other calls made to model servers (sleep, wake, warm-up):
one HTTP request, and a wait-until-healthy loop with backoff.

Requests speak plain HTTP/1.1 over asyncio streams (model servers listen on loopback or
a container port), so they never block the loop and need no HTTP client library; an
`https://` URL is probed with urllib in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from services.resource.runtimes.base import HealthTimeout, ProgressFn, StartFailed


async def http_ok(url: str, timeout_s: float = 3.0) -> bool:
    """True when GET `url` answers 2xx within `timeout_s`."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return await asyncio.to_thread(_https_ok, url, timeout_s)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"unsupported health URL {url!r}")
    host, port = parts.hostname, parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
                "User-Agent: jarvis-resource\r\n\r\n".encode()
            )
            await writer.drain()
            status_line = await reader.readline()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
    fields = status_line.decode("latin-1").split()
    return len(fields) >= 2 and fields[0].startswith("HTTP/") and fields[1].startswith("2")


async def http_request(
    method: str,
    url: str,
    body: bytes | None = None,
    timeout_s: float = 30.0,
    content_type: str = "application/json",
) -> tuple[int, bytes]:
    """One plain-HTTP request (`Connection: close`); (status, body). Raises OSError / TimeoutError."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"unsupported URL {url!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
        f"User-Agent: jarvis-resource\r\nContent-Length: {len(body or b'')}\r\n"
    )
    if body:
        head += f"Content-Type: {content_type}\r\n"
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        try:
            writer.write(head.encode() + b"\r\n" + (body or b""))
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    fields = status_line.decode("latin-1").split()
    if len(fields) < 2 or not fields[1].isdigit():
        raise OSError(f"{method} {url}: not an HTTP answer")
    headers, _, content = rest.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in headers.lower():
        content = _dechunk(content)
    return int(fields[1]), content


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


def _https_ok(url: str, timeout_s: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=ssl.create_default_context()) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


async def wait_until(
    probe: Callable[[], Awaitable[bool]],
    *,
    timeout_s: float,
    expected_s: float,
    alive: Callable[[], Awaitable[bool]] | None = None,
    progress: ProgressFn | None = None,
    what: str = "server",
    first_delay_s: float = 0.05,
    max_delay_s: float = 2.0,
) -> None:
    """Poll `probe` with exponential backoff until it is true.

    Raises StartFailed as soon as `alive` says the server is gone, HealthTimeout past
    `timeout_s`. `progress` gets the elapsed fraction of `expected_s` (capped at 0.95).
    """
    start = time.monotonic()
    delay = first_delay_s
    while True:
        if await probe():
            return
        if alive is not None and not await alive():
            raise StartFailed(f"{what} exited before becoming healthy")
        elapsed = time.monotonic() - start
        if elapsed >= timeout_s:
            raise HealthTimeout(f"{what} not healthy after {timeout_s:.0f}s")
        if progress is not None:
            frac = min(0.95, elapsed / expected_s) if expected_s > 0 else 0.95
            await progress(frac, f"waiting for {what} to answer its health check")
        await asyncio.sleep(min(delay, max(0.0, timeout_s - elapsed)))
        delay = min(delay * 2, max_delay_s)
