"""The gateway speaks the OpenAI Realtime API: the official `openai` SDK is the client, every
server event validates strictly against the SDK's `RealtimeServerEvent`, and the session
behind it is an ordinary Jarvis session (stub models; real espeak-ng speech through real
Silero VAD)."""

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.tts.stub import MS_PER_CHAR
from tests.support.realtime import RATE, b64, pcm_of, realtime_session, session_file
from tests.support.speech import concat, have_espeak, silence, speak
from tests.support.stack import running_stack

TOKEN = "rt-token"
pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and sox make the test speech")

AUDIO_SESSION = {
    "type": "realtime",
    "output_modalities": ["audio"],
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "turn_detection": {"type": "server_vad"},
            "transcription": {"model": "whisper-1"},
        },
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
    },
}
MANUAL_SESSION = {
    **AUDIO_SESSION,
    "audio": {**AUDIO_SESSION["audio"], "input": {**AUDIO_SESSION["audio"]["input"], "turn_detection": None}},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # the stub LLM takes 50 ms a word, so a long reply is still being generated when the user barges in
    with running_stack(
        tmp_path_factory.mktemp("realtime"),
        profile="stub",
        stub_llm_delay=0.05,
        env={"JARVIS_AUTH_TOKEN": TOKEN},
    ) as s:
        yield s


def assert_valid(s) -> None:
    assert not s.failures, "events the SDK's types reject:\n" + "\n".join(s.failures)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    x = samples.astype(np.float64)[:rate]  # the first second
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


async def open_session(s, session: dict) -> None:
    await s.send({"type": "session.update", "session": session})
    await s.wait_for("session.updated")


async def test_spoken_turn_with_server_vad(stack):
    async with realtime_session(stack.port, TOKEN) as s:
        await open_session(s, AUDIO_SESSION)
        assert s.types()[0] == "session.created"
        stop = asyncio.Event()
        question = concat(
            silence(0.3, RATE), speak("What is the capital of France?", rate=RATE), silence(0.2, RATE)
        )
        await s.stream(question)
        feeder = asyncio.create_task(s.keep_streaming_silence(stop))
        try:
            done = await s.wait_for("response.done", timeout=30)
        finally:
            stop.set()
            await feeder
        types = s.types()
        for kind in (
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.input_audio_transcription.completed",
            "response.created",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_audio_transcript.delta",
            "response.output_audio.delta",
            "response.output_audio.done",
            "response.output_audio_transcript.done",
        ):
            assert kind in types, f"no {kind} in {types}"
        order = [
            types.index(k)
            for k in (
                "input_audio_buffer.speech_started",
                "input_audio_buffer.speech_stopped",
                "response.created",
                "response.output_audio.delta",
                "response.done",
            )
        ]
        assert order == sorted(order)
        item_id = s.of("input_audio_buffer.speech_started")[0]["item_id"]
        assert s.of("input_audio_buffer.speech_stopped")[0]["item_id"] == item_id
        transcript = s.of("conversation.item.input_audio_transcription.completed")[0]
        assert transcript["item_id"] == item_id
        assert transcript["transcript"].startswith("I spoke for")  # the stub STT's words
        reply = "".join(e["delta"] for e in s.of("response.output_audio_transcript.delta"))
        assert reply == f"You said: {transcript['transcript']}."
        assert s.of("response.output_audio_transcript.done")[0]["transcript"] == reply
        assert done["response"]["status"] == "completed"
        assert done["response"]["output"][0]["content"][0]["transcript"] == reply
        # the stub voice's 220 Hz tone, resampled to 24 kHz, about as long as the text asks
        audio = pcm_of(s.of("response.output_audio.delta"))
        assert abs(dominant_hz(audio, RATE) - 220) < 5
        expected_s = len(reply.replace(" ", "")) * MS_PER_CHAR / 1000
        assert len(audio) / RATE > 0.8 * expected_s
        assert_valid(s)


async def test_typed_turn_answered_in_audio_and_in_text(stack):
    async with realtime_session(stack.port, TOKEN) as s:
        await open_session(s, AUDIO_SESSION)
        await s.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hello there"}],
                },
            }
        )
        added = await s.wait_for("conversation.item.added")
        assert added["item"]["content"][0]["text"] == "hello there"
        await s.send({"type": "response.create"})
        done = await s.wait_for("response.done")
        assert done["response"]["status"] == "completed"
        assert (
            "".join(e["delta"] for e in s.of("response.output_audio_transcript.delta"))
            == "You said: hello there."
        )
        assert len(pcm_of(s.of("response.output_audio.delta"))) > 0

        mark = len(s.events)
        await s.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "now in text"}],
                },
            }
        )
        await s.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        done = await s.wait_for("response.done", after=mark)
        later = s.events[mark:]
        text = "".join(e["delta"] for e in later if e["type"] == "response.output_text.delta")
        assert text == "You said: now in text."
        assert [e["text"] for e in later if e["type"] == "response.output_text.done"] == [text]
        assert not [e for e in later if e["type"] == "response.output_audio.delta"]
        assert done["response"]["output"][0]["content"][0] == {"type": "output_text", "text": text}
        assert_valid(s)


async def test_barge_in_cancels_and_truncates_to_what_was_heard(stack):
    async with realtime_session(stack.port, TOKEN) as s:
        await open_session(s, AUDIO_SESSION)
        stop = asyncio.Event()
        feeder = asyncio.create_task(s.keep_streaming_silence(stop))
        try:
            words = " ".join(f"This is sentence number {n}." for n in range(1, 25))
            await s.send(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": words}],
                    },
                }
            )
            await s.send({"type": "response.create"})
            await s.wait_for("response.output_audio.delta", count=10)
            await asyncio.sleep(1.0)  # the user hears a second or so of the reply, then talks over it
            stop.set()
            await feeder
            stop.clear()
            await s.stream(concat(speak("Stop, that is enough, thank you", rate=RATE), silence(0.2, RATE)))
            feeder = asyncio.create_task(s.keep_streaming_silence(stop))
            cancelled = await s.wait_for("response.done", timeout=20)
            truncated = await s.wait_for("conversation.item.truncated")
        finally:
            stop.set()
            await feeder
        assert cancelled["response"]["status"] == "cancelled"
        assert cancelled["response"]["status_details"]["reason"] == "turn_detected"
        item = cancelled["response"]["output"][0]
        assert item["status"] == "incomplete" and truncated["item_id"] == item["id"]
        full = f"You said: {words}."
        heard = item["content"][0]["transcript"]
        assert heard and full.startswith(heard) and len(heard) < len(full)
        sent_ms = (
            len(pcm_of([e for e in s.of("response.output_audio.delta") if e["item_id"] == item["id"]]))
            * 1000
            / RATE
        )
        assert 500 < truncated["audio_end_ms"] < sent_ms
        assert s.types().index("input_audio_buffer.speech_started") < s.types().index("response.done")
        # the user's interruption is the next turn, answered in turn (a pause inside it may make the
        # session answer it, then take it back when the user goes on: the same turn, continued)
        for n in range(2, 5):
            nxt = await s.wait_for("response.done", count=n, timeout=30)
            if nxt["response"]["status"] == "completed":
                break
        assert nxt["response"]["status"] == "completed"
        said = s.of("conversation.item.input_audio_transcription.completed")[-1]
        assert nxt["response"]["output"][0]["content"][0]["transcript"] == f"You said: {said['transcript']}."
        assert_valid(s)


async def test_manual_commit_answers_nothing_until_committed(stack):
    async with realtime_session(stack.port, TOKEN) as s:
        await open_session(s, MANUAL_SESSION)
        speech = concat(silence(0.2, RATE), speak("Tell me about the weather", rate=RATE), silence(1.5, RATE))
        await s.stream(speech)
        await asyncio.sleep(1.0)
        answered = [
            t for t in s.types() if t.startswith(("response.", "input_audio_buffer.", "conversation.item"))
        ]
        assert answered == []  # without a commit, nothing happens
        await s.send({"type": "input_audio_buffer.commit"})
        committed = await s.wait_for("input_audio_buffer.committed")
        await s.send({"type": "response.create"})
        done = await s.wait_for("response.done", timeout=30)
        assert done["response"]["status"] == "completed"
        transcript = s.of("conversation.item.input_audio_transcription.completed")[0]
        assert transcript["item_id"] == committed["item_id"]
        assert transcript["transcript"].startswith("I spoke for")
        assert "input_audio_buffer.speech_started" not in s.types()  # no server VAD in this mode
        assert len(pcm_of(s.of("response.output_audio.delta"))) > 0
        assert_valid(s)


async def test_bad_input_gets_errors_and_the_connection_stays_usable(stack):
    async with realtime_session(stack.port, TOKEN) as s:
        await s.conn.send_raw("{this is not json")
        await s.conn.send_raw(json.dumps({"type": "moonwalk"}))
        await s.send({"type": "input_audio_buffer.append", "audio": b64(np.zeros(480, dtype=np.int16))})
        await s.conn.send_raw(
            json.dumps({"type": "session.update", "session": {"type": "realtime", "colour": "blue"}})
        )
        errors = [await s.wait_for("error", count=n) for n in range(1, 5)]
        codes = [e["error"]["code"] for e in errors]
        assert codes == ["invalid_json", "unknown_event_type", "session_not_configured", "invalid_value"]
        assert all(e["error"]["message"] for e in errors)

        await open_session(s, AUDIO_SESSION)
        await s.conn.send_raw(json.dumps({"type": "input_audio_buffer.append", "audio": "@@not base64@@"}))
        await s.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
                },
            }
        )
        await s.send(
            {
                "type": "response.create",
                "response": {
                    "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
                },
            }
        )
        more = [await s.wait_for("error", count=n) for n in range(5, 8)]
        assert [e["error"]["code"] for e in more] == [
            "invalid_value",
            "unsupported_feature",
            "unsupported_feature",
        ]
        assert more[1]["error"]["param"] == "session.tools"

        await s.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "still there?"}],
                },
            }
        )
        await s.send({"type": "response.create"})
        done = await s.wait_for("response.done")
        assert done["response"]["status"] == "completed"
        assert_valid(s)


async def test_session_id_resumes_the_conversation(stack):
    secret = "a-secret-of-the-clients-own-making"
    async with realtime_session(stack.port, TOKEN, resume_secret=secret) as s:
        await open_session(s, AUDIO_SESSION)
        sid = s.of("conversation.created")[0]["conversation"]["id"]
        await s.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "remember this"}],
                },
            }
        )
        await s.send({"type": "response.create"})
        await s.wait_for("response.done")
    async with realtime_session(stack.port, TOKEN, session_id=sid) as s:  # without the secret
        await s.send({"type": "session.update", "session": AUDIO_SESSION})
        err = await s.wait_for("error")
        assert err["error"]["code"] == "unauthorized" and not s.of("conversation.created")
    async with realtime_session(stack.port, TOKEN, session_id=sid, resume_secret=secret) as s:
        await open_session(s, AUDIO_SESSION)
        assert s.of("conversation.created")[0]["conversation"]["id"] == sid
        await s.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "and this"}],
                },
            }
        )
        await s.send({"type": "response.create"})
        done = await s.wait_for("response.done")
        assert done["response"]["conversation_id"] == sid
        assert_valid(s)
    saved = session_file(stack.workdir, sid, lambda f: len(f["history"]) == 2)
    assert [t["user"] for t in saved["history"]] == ["remember this", "and this"]


async def test_wrong_token_is_refused(stack):
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{stack.port}/v1", api_key="wrong")
    with pytest.raises(Exception) as exc:  # noqa: B017 - the SDK surfaces the handshake's 401
        async with client.realtime.connect(model="jarvis"):
            pass
    assert "401" in str(exc.value)
    await client.close()


def test_the_documented_example_runs(stack):
    doc = (Path(__file__).parents[3] / "docs" / "REALTIME.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    code = code.replace("127.0.0.1:8765", f"127.0.0.1:{stack.port}").replace("your JARVIS_AUTH_TOKEN", TOKEN)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "You said: Hello!."


async def test_jarvis_talk_realtime_speaks_a_wav_and_saves_the_reply(stack, tmp_path):
    from jarvis.realtime_talk import talk_realtime
    from tests.support.speech import read_wav, write_wav

    question = write_wav(
        tmp_path / "q.wav", concat(silence(0.3), speak("Is it going to rain today?"), silence(0.2))
    )
    result = await talk_realtime(stack.url, wav=question, token=TOKEN, out=tmp_path / "reply.wav", quiet=True)
    (done,) = result.of("response.done")
    assert done.response.status == "completed"
    heard = result.of("conversation.item.input_audio_transcription.completed")[0].transcript
    assert heard.startswith("I spoke for")
    samples, rate = read_wav(tmp_path / "reply.wav")
    assert rate == RATE and len(samples) == len(result.audio) // 2 > RATE // 2
    typed = await talk_realtime(
        stack.url,
        text="hi there",
        token=TOKEN,
        session_id=result.session_id,
        resume_secret=result.resume_secret,
        quiet=True,
    )
    assert typed.session_id == result.session_id
    assert typed.of("response.output_audio_transcript.done")[0].transcript == "You said: hi there."
