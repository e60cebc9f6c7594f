"""Redis killed with -9 and restarted by the supervisor: every connected session goes on (no
false "lost the lease"), and a session stopped before the crash and resumed after it is not
ended again by its old `stop`."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.client import Client

pytestmark = pytest.mark.faults


async def _answered(c: Client, text: str, count: int) -> dict:
    await c.send({"type": "text", "text": text})
    return await c.wait_for("metrics", count=count, timeout=20)


async def test_sessions_survive_a_redis_restart(stack):
    live = await Client.open(stack.url)
    await live.start(pipeline="chat")
    await _answered(live, "before the crash", 1)

    stopped = await Client.open(stack.url)
    ready = await stopped.start(pipeline="chat")
    sid, secret = ready["session_id"], ready["resume_secret"]
    await _answered(stopped, "then I stop", 1)
    await stopped.send({"type": "stop"})
    await asyncio.sleep(1.5)  # the stop is written to disk (appendfsync everysec)
    await stopped.close()

    stack.redis.proc.kill()
    stack.redis.proc.wait()
    await asyncio.sleep(0.5)  # the supervisor brings it back on its data

    m = await _answered(live, "after the crash", 2)
    assert m["turn"] == 2  # the connected session went on, with its history
    back = await Client.open(stack.url)
    ready = await back.start(pipeline="chat", session_id=sid, resume_secret=secret)
    assert ready["resumed"] is True and ready["turns"] == 1
    m = await _answered(back, "still here?", 1)
    assert m["turn"] == 2  # the old stop was not replayed: the session is alive
    await asyncio.sleep(1.0)
    assert not back.of("state", state="IDLE")
    logs = "".join(f.read_text() for f in (stack.workdir / "logs").glob("orchestrator*.log"))
    assert "lost the lease" not in logs
    for c in (live, back):
        await c.close()
