"""A client that drops mid-reply and reconnects with its session id, resume secret and last event
id gets every event it missed, none twice, and the session (history included) carries on. Ids
are the server's, and no one without the secret gets a session's history or replay."""

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
    ready = await c.start(pipeline="chat")
    sid, secret = ready["session_id"], ready["resume_secret"]
    await c.wait_for("state", state="LISTENING")
    await c.send({"type": "text", "text": "one two three four five six seven eight nine ten"})
    await c.wait_for("reply", count=3)
    await c.close()  # the connection drops mid-reply
    seen = [e["id"] for e in c.events]
    last = seen[-1]

    await asyncio.sleep(1.5)  # the reply finishes meanwhile
    c2 = await Client.open(stack.url)
    ready = await c2.start(pipeline="chat", session_id=sid, resume_secret=secret, last_event_id=last)
    assert ready["resumed"] is True and ready["resume_secret"] == secret
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


async def test_an_unknown_session_id_is_refused(stack):
    c = await Client.open(stack.url)
    await c.send({"type": "start", "session_id": "brand-new-session"})
    err = await c.wait_for("error")
    assert err["code"] == "bad_session_id"  # ids are issued by the server
    ready = await c.start()  # the same connection can still open a session of its own
    assert ready["session_id"] != "brand-new-session" and ready["resumed"] is False
    assert ready["turns"] == 0 and len(ready["resume_secret"]) >= 16
    await c.close()


async def test_taking_a_session_over_needs_its_resume_secret(stack):
    owner = await Client.open(stack.url)
    ready = await owner.start(pipeline="chat")
    sid, secret = ready["session_id"], ready["resume_secret"]
    await owner.wait_for("state", state="LISTENING")
    await owner.send({"type": "text", "text": "my secret plan"})
    await owner.wait_for("metrics")

    for wrong in (None, "not-the-secret", secret[:-1] + ("A" if secret[-1] != "A" else "B")):
        thief = await Client.open(stack.url)
        msg = {"type": "start", "pipeline": "chat", "session_id": sid, "last_event_id": "0-0"}
        if wrong is not None:
            msg["resume_secret"] = wrong
        await thief.send(msg)
        err = await thief.wait_for("error")
        assert err["code"] == "unauthorized"
        await asyncio.sleep(0.5)
        assert not thief.of("ready") and not thief.of("transcript") and not thief.of("reply")
        await thief.close()
    # the owner was not kicked and its session goes on
    await owner.send({"type": "text", "text": "still here"})
    m = await owner.wait_for("metrics", count=2)
    assert m["turn"] == 2
    assert owner.ws.close_code is None
    await owner.close()
