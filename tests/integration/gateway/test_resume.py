"""A client that drops mid-reply and reconnects with its last event id gets every event it
missed, none twice, and the session (history included) carries on."""

import asyncio

import pytest

from tests.support.client import Client
from tests.support.stack import running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("resume"), profile="stub", stub_llm_delay=0.1) as s:
        yield s


async def test_reconnect_resumes_the_event_stream(stack):
    c = await Client.open(stack.url)
    sid = (await c.start(pipeline="chat"))["session_id"]
    await c.wait_for("state", state="LISTENING")
    await c.send({"type": "text", "text": "one two three four five six seven eight nine ten"})
    await c.wait_for("reply", count=3)
    await c.close()  # the connection drops mid-reply
    seen = [e["id"] for e in c.events]
    last = seen[-1]

    await asyncio.sleep(1.5)  # the reply finishes meanwhile
    c2 = await Client.open(stack.url)
    ready = await c2.start(pipeline="chat", session_id=sid, last_event_id=last)
    assert ready["resumed"] is True
    await c2.wait_for("metrics")
    replayed = [e for e in c2.events if e["type"] != "ready"]
    ids = [e["id"] for e in replayed]
    assert not set(ids) & set(seen)  # nothing twice
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    deltas = [e["delta"] for e in c.of("reply") + c2.of("reply") if not e["final"]]
    final = c2.of("reply", final=True)[0]["text"]
    assert "".join(deltas) == final  # every delta arrived exactly once across the two connections

    # the conversation continues with its history
    await c2.send({"type": "text", "text": "and again"})
    m = await c2.wait_for("metrics", count=2)
    assert m["turn"] == 2
    await c2.close()


async def test_resume_unknown_session_starts_fresh_with_that_id(stack):
    c = await Client.open(stack.url)
    ready = await c.start(session_id="brand-new-session")
    assert ready["session_id"] == "brand-new-session" and ready["turns"] == 0
    await c.close()
