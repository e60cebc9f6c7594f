"""What every service process shares: settings and logging set-up, signal handling, uvloop,
and an optional Prometheus endpoint."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from shared import logs
from shared.config import Settings, get_settings

log = logging.getLogger("jarvis.service")


def run(service: str, main: Callable[[Settings, asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(settings, stop)` on one event loop until SIGINT/SIGTERM sets `stop`."""
    settings = get_settings()
    logs.setup(service, settings.log_level)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr="127.0.0.1")

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        task: asyncio.Future[Any] = asyncio.ensure_future(main(settings, stop))
        stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            stopper.cancel()
            task.result()
            return
        log.info("stopping")
        try:
            await asyncio.wait_for(task, 5)
        except TimeoutError:
            task.cancel()

    try:
        import uvloop

        uvloop.run(runner())
    except ImportError:
        asyncio.run(runner())
