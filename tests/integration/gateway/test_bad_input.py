"""A gateway fed garbage answers with error events (or refuses the handshake) and keeps
serving: the same connection still works, and a concurrent session completes its turn."""

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from shared import protocol as p
from tests.support.client import Client
from tests.support.speech import concat, have_espeak, silence, speak
from tests.support.stack import running_stack

TOKEN = "s3cret-token"
pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and sox make the test speech")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("gw"), profile="stub", env={"JARVIS_AUTH_TOKEN": TOKEN}) as s:
        yield s


async def test_wrong_or_missing_token_is_refused_at_handshake(stack):
    for url, headers in [
        (stack.url, None),
        (stack.url + "?token=nope", None),
        (stack.url, {"Authorization": "Bearer nope"}),
    ]:
        with pytest.raises(InvalidStatus) as exc:
            async with connect(url, additional_headers=headers):
                pass
        assert exc.value.response.status_code == 401


async def test_token_in_header_or_query_is_accepted(stack):
    for url, headers in [
        (stack.url + f"?token={TOKEN}", None),
        (stack.url, {"Authorization": f"Bearer {TOKEN}"}),
    ]:
        c = await Client.open(url, additional_headers=headers)
        ready = await c.start()
        assert ready["session_id"]
        await c.close()


def test_token_never_reaches_the_logs(stack):
    text = "".join(f.read_text() for f in (stack.workdir / "logs").glob("*.log"))
    assert TOKEN not in text


async def test_garbage_gets_errors_and_a_concurrent_session_completes(stack):
    good = await Client.open(stack.url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
    await good.start()
    await good.wait_for("state", state="LISTENING")
    speech = concat(silence(0.3), speak("Please tell me a joke"), silence(0.1))
    good_turn = asyncio.create_task(good.stream(concat(speech, silence(6))))

    bad = await Client.open(stack.url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
    await bad.send(bytes((p.AUDIO,)) + bytes(640))  # binary before start
    await bad.send("{this is not json")
    await bad.send('{"type": "moonwalk"}')
    await bad.send('{"type": "text"}')
    await bad.send('{"type": "start", "session_id": "../../etc/passwd"}')
    await bad.send('{"type": "start", "sample_rate": 44100}')
    await bad.start()
    await bad.send(bytes((p.AUDIO,)) + bytes(10 * 1024 * 1024))  # a 10 MB frame
    await bad.send(bytes((p.AUDIO,)) + b"\x00\x01\x02")  # half a sample
    await bad.send(bytes((0x7F,)) + b"\x00\x00")  # unknown kind
    await bad.send(bytes((p.IMAGE,)) + b"not an image at all")
    await bad.send('{"type": "start"}')  # already started
    await bad.send('{"type": "turn", "action": "begin"}')  # needs the manual trigger
    codes = []
    for _ in range(20):
        await asyncio.sleep(0.2)
        codes = [e["code"] for e in bad.of("error")]
        if len(codes) >= 12:
            break
    assert codes == [
        "no_session",
        "bad_json",
        "unknown_type",
        "invalid_message",
        "bad_session_id",
        "unsupported_sample_rate",
        "frame_too_large",
        "bad_frame",
        "bad_frame",
        "bad_frame",
        "session_active",
        "invalid_message",
    ]
    # the abused connection still works
    await bad.send({"type": "text", "text": "still there?"})
    reply = await bad.wait_for("reply", final=True)
    assert reply["text"] == "You said: still there?."
    # and the well-behaved session completed its spoken turn meanwhile
    await good.wait_for("metrics", timeout=20)
    assert good.of("transcript", final=True)[0]["text"].startswith("I spoke for")
    assert len(good.audio) > 0
    assert not good.of("error")
    good_turn.cancel()
    await good.close()
    await bad.close()
