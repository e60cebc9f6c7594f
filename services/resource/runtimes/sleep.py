"""Sleep, wake and warm-up of a model server over its HTTP API (vLLM's sleep mode), and the
realistic request `jarvis calibrate` measures a server's peak with.

vLLM started with `--enable-sleep-mode` and `VLLM_SERVER_DEV_MODE=1` serves
`POST /sleep?level=N` (1: weights to host RAM, KV cache dropped; 2: both dropped),
`POST /wake_up` and `GET /is_sleeping`. The first request after a wake is several times
slower than the next ones (kernels and allocator pools come back on first use), so a wake
is followed by a one-token chat completion before the model is handed to a turn.
"""

from __future__ import annotations

import json
from typing import Any

from services.resource.runtimes.base import Handle, RuntimeFailure
from services.resource.runtimes.health import http_request


class SleepFailed(RuntimeFailure):
    pass


async def _call(method: str, url: str, body: bytes | None = None, timeout_s: float = 60.0) -> bytes:
    try:
        status, data = await http_request(method, url, body, timeout_s)
    except (OSError, TimeoutError) as exc:
        raise SleepFailed(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
    if not 200 <= status < 300:
        raise SleepFailed(f"{method} {url}: HTTP {status}: {data[:200].decode(errors='replace')}")
    return data


async def sleep(base: str, level: int) -> None:
    await _call("POST", f"{base}/sleep?level={level}")


async def wake(base: str) -> None:
    await _call("POST", f"{base}/wake_up")


async def is_sleeping(base: str) -> bool:
    return bool(json.loads(await _call("GET", f"{base}/is_sleeping", timeout_s=5.0)).get("is_sleeping"))


async def warm_up(base: str) -> None:
    """One one-token completion through the served model (named by GET /v1/models)."""
    models = json.loads(await _call("GET", f"{base}/v1/models", timeout_s=10.0)).get("data") or []
    if not models:
        raise SleepFailed(f"{base} serves no model to warm up")
    body = {"model": models[0]["id"], "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    await _call("POST", f"{base}/v1/chat/completions", json.dumps(body).encode())


def realistic_chat(model: str, turns: int = 20, words: int = 60, max_tokens: int = 256) -> dict[str, Any]:
    """A chat request the size of a long conversation (the LLM worker's history window)."""
    filler = " ".join(["the quick brown fox jumps over the lazy dog"] * (words // 9 + 1))
    messages = [{"role": "system", "content": "You are Jarvis, a helpful voice assistant."}]
    for i in range(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": filler})
    messages.append({"role": "user", "content": "Tell me a long story about a lighthouse keeper."})
    return {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.7}


async def realistic_request(base: str) -> None:
    models = json.loads(await _call("GET", f"{base}/v1/models", timeout_s=10.0)).get("data") or []
    if not models:
        raise SleepFailed(f"{base} serves no model")
    await _call(
        "POST",
        f"{base}/v1/chat/completions",
        json.dumps(realistic_chat(models[0]["id"])).encode(),
        timeout_s=300.0,
    )


class HttpSleep:
    """Sleep / wake / warm-up for runtimes whose servers speak vLLM's API; needs `base_url()`."""

    async def warm_up(self, handle: Handle, spec: Any) -> None:
        base = await self.base_url(handle, spec)
        if base is not None:  # no HTTP API (a worker process): nothing to send
            await realistic_request(base)

    async def base_url(self, handle: Handle, spec: Any) -> str | None:  # pragma: no cover - overridden
        return None

    async def _base(self, handle: Handle, spec: Any) -> str:
        base = await self.base_url(handle, spec)
        if base is None:
            raise SleepFailed(f"{handle.model}: no HTTP address to send sleep/wake to (health_url unset)")
        return base

    async def sleep(self, handle: Handle, spec: Any, level: int) -> None:
        await sleep(await self._base(handle, spec), level)

    async def wake(self, handle: Handle, spec: Any, warmup: bool = True) -> None:
        base = await self._base(handle, spec)
        await wake(base)
        if warmup:
            await warm_up(base)
