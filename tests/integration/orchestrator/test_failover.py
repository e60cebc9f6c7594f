"""Two orchestrators side by side: kill -9 the one that owns a session mid-conversation,
and the next turn of that session is served by the other, with its history intact."""

import asyncio
import json
import os
import signal

import pytest

from shared import redis_url
from shared.messages import owner_key
from tests.support.client import Client
from tests.support.speech import concat, have_espeak, silence, speak
from tests.support.stack import running_stack

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and sox make the test speech")


async def _turn(c: Client, words: str, n: int) -> dict:
    audio = concat(silence(0.3), speak(words), silence(0.1))
    streamer = asyncio.create_task(c.stream(concat(audio, silence(15))))
    try:
        return await c.wait_for("metrics", count=n, timeout=30)
    finally:
        streamer.cancel()


async def test_next_turn_is_served_by_the_survivor(tmp_path):
    with running_stack(tmp_path, profile="stub", orchestrators=2, env={"JARVIS_LEASE_MS": "1500"}) as stack:
        r = redis_url.sync_client(stack.redis_url)
        c = await Client.open(stack.url)
        sid = (await c.start())["session_id"]
        await c.wait_for("state", state="LISTENING")
        first = await _turn(c, "Remember that my name is Ada", 1)
        assert first["turn"] == 1
        await asyncio.sleep(0.5)  # let the playback end so the session is between turns

        owner = r.get(owner_key(sid)).decode()
        pid = int(owner.split("-")[-2])
        assert pid in [p.pid for p in stack.procs if p.name.startswith("orchestrator")]
        os.kill(pid, signal.SIGKILL)

        second = await _turn(c, "What is my name?", 2)
        assert second["turn"] == 2  # numbered after the first: the survivor loaded the history
        new_owner = r.get(owner_key(sid)).decode()
        assert new_owner != owner
        # the survivor saw the history: the transcript events of both turns are there, and the
        # saved session holds both turns in order
        await asyncio.sleep(1.0)  # a wrongly replayed first turn would show up as a third transcript
        finals = [e["text"] for e in c.of("transcript", final=True)]
        assert len(finals) == 2, finals
        assert finals[0] != finals[1]  # the second is the new question, not the first replayed
        path = stack.workdir / "sessions" / f"{sid}.json"
        for _ in range(50):  # saved just after the turn's metrics
            saved = json.loads(path.read_text())
            if len(saved["history"]) == 2:
                break
            await asyncio.sleep(0.1)
        assert [t["turn"] for t in saved["history"]] == [1, 2]
        assert saved["history"][0]["user"] == finals[0]
        await c.close()
        r.close()
