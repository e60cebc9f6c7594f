"""Hostile or careless clients: each gets a clear error (or a refused handshake), no other
session is touched, and what a client may hold is bounded (options, audio rate, time to
start, keys left in Redis once a session ends)."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from shared import protocol as p
from shared import redis_url
from shared.messages import cursor_key, epoch_key, in_stream, jobs_stream, out_stream, owner_key, secret_key
from tests.support.client import Client
from tests.support.speech import concat, have_espeak, silence, speak
from tests.support.stack import running_stack

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and sox make the test speech")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    env = {"JARVIS_START_TIMEOUT_S": "1.5", "JARVIS_AUDIO_BURST_S": "3", "JARVIS_SESSION_TTL_S": "120"}
    with running_stack(tmp_path_factory.mktemp("hostile"), profile="stub", env=env) as s:
        yield s


@pytest.fixture
def r(stack):
    client = redis_url.sync_client(stack.redis_url)
    yield client
    client.close()


async def test_a_cross_site_page_is_refused_and_the_gateways_own_origin_allowed(stack):
    with pytest.raises(InvalidStatus) as exc:
        async with connect(stack.url, origin="https://evil.example"):
            pass
    assert exc.value.response.status_code == 403
    for origin in (f"http://127.0.0.1:{stack.port}", f"http://localhost:{stack.port}", None):
        c = await Client.open(stack.url, origin=origin)  # None: a client that is not a browser
        assert (await c.start())["session_id"]
        await c.close()


async def test_a_connection_that_never_starts_is_closed(stack):
    async with connect(stack.url) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1008


async def test_bad_messages_get_clear_errors_not_internal(stack):
    c = await Client.open(stack.url)
    await c.send('{"type": ["start"]}')
    await c.send('{"type": {"a": 1}}')
    await c.send("[" * 100000 + "]" * 100000)
    await c.send('{"type": "start", "options": {"x": ' + "[" * 40 + "1" + "]" * 40 + "}}")
    await c.send(json.dumps({"type": "start", "pipeline": "teleport"}))
    await c.send(json.dumps({"type": "start", "options": {"blob": "x" * 20000}}))
    for _ in range(50):
        if len(c.of("error")) >= 6:
            break
        await asyncio.sleep(0.1)
    codes = [e["code"] for e in c.of("error")]
    assert codes == [
        "unknown_type",
        "unknown_type",
        "bad_json",
        "invalid_message",
        "unknown_pipeline",
        "invalid_message",
    ]
    assert not c.of("ready")  # an unknown pipeline is refused, not answered with ready
    await c.close()


async def test_a_lone_surrogate_fails_only_its_own_message(stack):
    good = await Client.open(stack.url)
    await good.start(pipeline="chat")
    await good.wait_for("state", state="LISTENING")
    bad = await Client.open(stack.url)
    await bad.start(pipeline="chat")
    for _ in range(20):  # raw JSON with an escaped lone surrogate: valid JSON, not encodable UTF-8
        await bad.send('{"type": "config", "options": {"voice": "\\ud800"}}')
        await good.send({"type": "text", "text": "are you still there"})
    await good.wait_for("metrics", count=1, timeout=30)
    errors = bad.of("error")
    assert len(errors) == 20 and all(e["code"] == "invalid_message" for e in errors)
    assert not good.of("error")
    await bad.send({"type": "text", "text": "and me"})  # the bad client's session still works
    await bad.wait_for("metrics")
    await good.close()
    await bad.close()


async def test_audio_faster_than_real_time_is_refused_beyond_the_burst(stack):
    c = await Client.open(stack.url)
    await c.start()
    second = bytes((p.AUDIO,)) + bytes(32000)  # one second of silence
    for _ in range(8):
        await c.send(second)
    err = await c.wait_for("error")
    assert err["code"] == "rate_limited"
    assert len(c.of("error")) <= 5  # three seconds ahead were allowed
    await c.close()


async def test_a_session_leaves_no_unbounded_keys(stack, r):
    c = await Client.open(stack.url)
    ready = await c.start()
    sid = ready["session_id"]
    await c.wait_for("state", state="LISTENING")
    speech = concat(silence(0.3), speak("What time is it"), silence(0.1))
    streamer = asyncio.create_task(c.stream(concat(speech, silence(6))))
    await c.wait_for("metrics", timeout=30)
    streamer.cancel()
    await c.send({"type": "stop"})
    await ended(r, sid)
    for key in (in_stream(sid), out_stream(sid), epoch_key(sid), cursor_key(sid), secret_key(sid)):
        assert r.exists(key), key
        assert r.ttl(key) > 0, key  # every key of the session expires
    assert r.xlen(jobs_stream("stt")) == 0  # the turn's audio left Redis once transcribed
    assert r.get(secret_key(sid)).decode() != ready["resume_secret"]  # only its hash is kept
    await c.close()


async def ended(r, sid: str) -> None:
    """Until the session's owner let it go (saved, keys given their TTL)."""
    for _ in range(100):
        if not r.exists(owner_key(sid)):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{sid} did not end")


async def test_an_unreadable_session_file_is_set_aside_with_an_error(stack, r):
    c = await Client.open(stack.url)
    ready = await c.start(pipeline="chat")
    sid, secret = ready["session_id"], ready["resume_secret"]
    await c.send({"type": "text", "text": "hello"})
    await c.wait_for("metrics")
    await c.send({"type": "stop"})
    await ended(r, sid)
    await c.close()
    path = stack.workdir / "sessions" / f"{sid}.json"
    path.write_text('{"id": "' + sid + '", "history": [{"turn": ')  # torn by hand
    c = await Client.open(stack.url)
    ready = await c.start(pipeline="chat", session_id=sid, resume_secret=secret)
    err = await c.wait_for("error")
    assert "could not be read" in err["message"] and ready["turns"] == 0
    assert list(path.parent.glob(f"{sid}.json.unreadable-*"))  # kept for whoever wants it back
    await c.send({"type": "text", "text": "again"})
    await c.wait_for("metrics")
    await c.close()
