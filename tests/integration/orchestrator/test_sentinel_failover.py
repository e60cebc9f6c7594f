"""Redis Sentinel: the primary dies mid-conversation (kill -9); Sentinel promotes its replica, every
service follows, and the session goes on with its history. The client sees at most a clear error
for the turn that was in flight."""

import asyncio
import json
import time

import pytest

from jarvis.redis_topologies import redis_sentinel
from shared import codec, protocol, redis_url
from shared.messages import jobs_stream
from tests.support.client import Client
from tests.support.speech import concat, have_espeak, silence, speak
from tests.support.stack import running_stack

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and sox make the test speech")


async def _failed_over(setup, old_port: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        port = await asyncio.to_thread(setup.primary_port)
        if port is not None and port != old_port:
            return port
        await asyncio.sleep(0.2)
    raise TimeoutError("Sentinel did not promote the replica")


async def test_the_primary_dies_mid_conversation_and_the_session_goes_on(tmp_path):
    with (
        redis_sentinel() as setup,
        running_stack(tmp_path, profile="stub", env={"JARVIS_REDIS_URL": setup.url}) as stack,
    ):
        c = await Client.open(stack.url)
        await c.start()
        await c.wait_for("state", state="LISTENING")
        sid = c.of("ready")[0]["session_id"]
        await c.stream(concat(silence(0.3), speak("Good morning Jarvis"), silence(1.5)))
        await c.wait_for("reply", final=True)
        await c.wait_for("state", state="LISTENING", previous="SPEAKING")  # its reply is heard

        # the second turn is under way (its audio streaming) when the primary dies
        talking = asyncio.create_task(c.stream(concat(speak("What time is it in Tokyo"), silence(1.5))))
        await asyncio.sleep(0.8)
        old = setup.primary.port
        setup.primary.kill()
        await talking
        await _failed_over(setup, old)
        # the turn in flight is answered after all (re-run on the new primary), or ends with an
        # error; either way the session listens again before the next turn
        deadline = time.monotonic() + 30
        while len(c.of("reply", final=True)) < 2 and not c.of("error"):
            assert time.monotonic() < deadline, c.events
            await asyncio.sleep(0.1)
        # (the error's or the reply's return to LISTENING may have come already)
        while not (c.of("state") and c.of("state")[-1]["state"] == "LISTENING"):
            assert time.monotonic() < deadline, c.events
            await asyncio.sleep(0.1)
        replies_before = len(c.of("reply", final=True))

        await c.stream(concat(speak("Thank you very much"), silence(2.0)))
        last = await c.wait_for("reply", final=True, count=replies_before + 1, timeout=30)
        assert last["text"].startswith("You said:")

        errors = c.of("error")
        assert len(errors) <= 1, errors
        for e in errors:  # clear: a known code and words saying what happened
            assert e["code"] in {code.value for code in protocol.ErrorCode} and e["message"], e

        # the last turn's LLM job held the history from before the failover
        finals = [e["text"] for e in c.of("transcript", final=True)]
        r = redis_url.sync_client(setup.url)
        try:
            jobs = [codec.from_entry(f) for _, f in r.xrange(jobs_stream("llm"))]
        finally:
            r.close()
        last_job = max((j for j in jobs if j.sid == sid), key=lambda j: j.turn)
        said = [m["content"] for m in last_job.messages if m["role"] == "user"]
        timeline = [(e["type"], e.get("state") or e.get("text") or e.get("code")) for e in c.events]
        print("client saw:", timeline)
        assert said[0] == finals[0] and said[-1] == finals[-1], (said, finals, timeline)

        # and the session file, the durable record, holds the turns around the failover
        saved = json.loads((stack.workdir / "sessions" / f"{sid}.json").read_text())
        users = [t["user"] for t in saved["history"]]
        assert users[0] == finals[0] and users[-1] == finals[-1], (users, finals)
        await c.close()
