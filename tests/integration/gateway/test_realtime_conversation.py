"""The Realtime API's conversation features, served by the session behind the endpoint:
instructions, a response without a new user item, deleting and truncating items, and
text-only replies to spoken turns. The official `openai` SDK is the client; every server
event validates strictly against its types; the session file shows what the model will see."""

import asyncio

import pytest

from shared import codec, redis_url
from shared.messages import LlmJob, jobs_stream
from tests.support.realtime import RATE, pcm_of, realtime_session, session_file
from tests.support.speech import concat, have_espeak, silence, speak
from tests.support.stack import running_stack

TOKEN = "rt-token"
pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and sox make the test speech")

SESSION = {
    "type": "realtime",
    "audio": {"input": {"turn_detection": {"type": "server_vad"}, "transcription": {"model": "whisper-1"}}},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(
        tmp_path_factory.mktemp("rtconv"), profile="stub", env={"JARVIS_AUTH_TOKEN": TOKEN}
    ) as s:
        yield s


def saved(stack, sid: str, until=lambda f: True) -> dict:
    return session_file(stack.workdir, sid, until)


def llm_jobs(stack) -> list[LlmJob]:
    r = redis_url.sync_client(stack.redis_url)
    try:
        entries = r.xrange(jobs_stream("llm"))
    finally:
        r.close()
    return [m for m in (codec.from_entry(f) for _, f in entries) if isinstance(m, LlmJob)]


async def say(s, text: str) -> dict:
    mark = len(s.events)
    await s.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        }
    )
    await s.send({"type": "response.create"})
    return await s.wait_for("response.done", after=mark)


def assert_valid(s) -> None:
    assert not s.failures, "events the SDK's types reject:\n" + "\n".join(s.failures)


async def test_instructions_become_the_system_prompt_and_stay_with_the_session(stack):
    async with realtime_session(stack.port, TOKEN) as s:
        await s.send(
            {"type": "session.update", "session": {**SESSION, "instructions": "Answer like a pirate."}}
        )
        updated = await s.wait_for("session.updated")
        assert updated["session"]["instructions"] == "Answer like a pirate."
        sid = s.of("conversation.created")[0]["conversation"]["id"]
        await say(s, "ahoy")
        assert_valid(s)
    job = next(j for j in reversed(llm_jobs(stack)) if j.sid == sid)
    assert job.messages[0] == {"role": "system", "content": "Answer like a pirate."}
    assert saved(stack, sid, lambda f: f["instructions"])["instructions"] == "Answer like a pirate."


async def test_response_without_a_new_item_answers_the_conversation_so_far(stack):
    async with realtime_session(stack.port, TOKEN) as s:
        await s.send({"type": "session.update", "session": SESSION})
        await s.wait_for("session.updated")
        sid = s.of("conversation.created")[0]["conversation"]["id"]
        await say(s, "tell me more")
        # after the reply has played (a response while it plays would cut it, like a typed turn)
        await asyncio.sleep(len(pcm_of(s.of("response.output_audio.delta"))) / RATE + 0.3)
        mark = len(s.events)
        await s.send({"type": "response.create"})
        done = await s.wait_for("response.done", after=mark)
        assert done["response"]["status"] == "completed"
        again = "".join(
            e["delta"] for e in s.events[mark:] if e["type"] == "response.output_audio_transcript.delta"
        )
        assert again == "You said: tell me more."  # the stub answers the last user words it sees
        assert not [
            e
            for e in s.events[mark:]
            if e["type"] == "conversation.item.added" and e["item"]["role"] == "user"
        ]
        assert_valid(s)
    history = saved(stack, sid, lambda f: len(f["history"]) == 2)["history"]
    assert [(t["user"], t["assistant"]) for t in history] == [
        ("tell me more", "You said: tell me more."),
        ("", "You said: tell me more."),
    ]
    job = next(j for j in reversed(llm_jobs(stack)) if j.sid == sid)
    assert job.messages[-1]["role"] == "assistant"  # no new user message was made up


async def test_deleting_an_answered_item_removes_it_from_what_the_model_sees(stack):
    async with realtime_session(stack.port, TOKEN) as s:
        await s.send({"type": "session.update", "session": SESSION})
        await s.wait_for("session.updated")
        sid = s.of("conversation.created")[0]["conversation"]["id"]
        await say(s, "my password is swordfish")
        user_item = s.of("conversation.item.added")[0]["item"]["id"]
        await say(s, "what did I say")
        await s.send({"type": "conversation.item.delete", "item_id": user_item})
        deleted = await s.wait_for("conversation.item.deleted")
        assert deleted["item_id"] == user_item
        await s.send({"type": "conversation.item.delete", "item_id": user_item})  # gone now
        err = await s.wait_for("error")
        assert err["error"]["code"] == "item_not_found"
        assert_valid(s)
    history = saved(stack, sid, lambda f: not f["history"][0]["user"])["history"]
    assert [t["user"] for t in history] == ["", "what did I say"]


async def test_client_truncation_keeps_only_what_was_played(stack):
    async with realtime_session(stack.port, TOKEN) as s:
        await s.send({"type": "session.update", "session": SESSION})
        await s.wait_for("session.updated")
        sid = s.of("conversation.created")[0]["conversation"]["id"]
        text = "The first sentence is here. The second sentence follows it. And a third one ends it."
        done = await say(s, text)
        item = done["response"]["output"][0]["id"]
        full = done["response"]["output"][0]["content"][0]["transcript"]
        sent_ms = len(pcm_of(s.of("response.output_audio.delta"))) * 1000 // RATE
        await asyncio.sleep(0.2)
        await s.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item,
                "content_index": 0,
                "audio_end_ms": sent_ms // 3,
            }
        )
        truncated = await s.wait_for("conversation.item.truncated")
        assert truncated == {**truncated, "item_id": item, "audio_end_ms": sent_ms // 3}
        await s.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item,
                "content_index": 0,
                "audio_end_ms": sent_ms + 5000,
            }
        )
        err = await s.wait_for("error")
        assert err["error"]["param"] == "audio_end_ms"
        assert_valid(s)
    record = saved(stack, sid, lambda f: f["history"][-1]["interrupted"])["history"][-1]
    assert record["interrupted"] is True
    assert (
        record["assistant"]
        and full.startswith(record["assistant"])
        and len(record["assistant"]) < len(full) / 2
    )


async def test_text_only_session_answers_spoken_turns_in_text(stack):
    async with realtime_session(stack.port, TOKEN) as s:
        await s.send({"type": "session.update", "session": {**SESSION, "output_modalities": ["text"]}})
        updated = await s.wait_for("session.updated")
        assert updated["session"]["output_modalities"] == ["text"]
        stop = asyncio.Event()
        await s.stream(
            concat(silence(0.3, RATE), speak("How tall is Mount Everest?", rate=RATE), silence(0.2, RATE))
        )
        feeder = asyncio.create_task(s.keep_streaming_silence(stop))
        try:
            done = await s.wait_for("response.done", timeout=30)
        finally:
            stop.set()
            await feeder
        transcript = s.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
        text = "".join(e["delta"] for e in s.of("response.output_text.delta"))
        assert text == f"You said: {transcript}."
        assert done["response"]["output_modalities"] == ["text"]
        assert not s.of("response.output_audio.delta") and not s.of("response.output_audio_transcript.delta")
        assert_valid(s)
