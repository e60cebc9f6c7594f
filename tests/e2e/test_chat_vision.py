"""The chat and vision pipelines end to end, through the gateway's WebSocket.

Chat: text in, streamed text out, no audio unless the message asks for it. Vision: the
latest image and the question reach a real VLM worker (the OpenAI-compatible client) as
one multimodal user message, checked on the fake OpenAI server's side; switching pipelines
inside a session keeps the conversation.
"""

from __future__ import annotations

import base64

from shared import protocol as p


async def _ready(client, **start) -> dict:
    mark = client.mark()
    await client.send({"type": "start", **start})
    ready = await client.wait("ready", after=mark)
    await client.wait("state", lambda e: e["state"] == "LISTENING", after=mark)
    return ready


async def _text_turn(client, text: str, **extra) -> tuple[int, dict]:
    mark = client.mark()
    await client.send({"type": "text", "text": text, **extra})
    metrics = await client.wait("metrics", after=mark, timeout=30)
    return mark, metrics


async def test_chat_pipeline_streams_text_and_speaks_only_when_asked(stub_stack, ws_client) -> None:
    async with ws_client(stub_stack.url) as c:
        ready = await _ready(c, pipeline="chat")
        assert ready["pipeline"] == "chat" and ready["session_id"]

        frames_before = c.audio_frames
        mark, metrics = await _text_turn(c, "How far away is the moon")
        turn = metrics["turn"]
        transcript = c.since(mark, "transcript")
        assert [(e["text"], e["final"], e["turn"]) for e in transcript] == [
            ("How far away is the moon", True, turn)
        ]
        replies = c.since(mark, "reply")
        deltas = [e["delta"] for e in replies if not e.get("final")]
        final = [e for e in replies if e.get("final")]
        assert len(deltas) > 1, "the reply should stream in several deltas"
        assert (
            len(final) == 1 and final[0]["text"] == "".join(deltas) == "You said: How far away is the moon."
        )
        assert metrics["total_ms"] >= 0 and metrics["first_token_ms"] is not None
        assert not c.since(mark, "audio_start") and c.audio_frames == frames_before, (
            "chat replies are silent by default"
        )
        assert all("id" in e for e in c.since(mark)), "every event carries its resume id"

        await c.wait("state", lambda e: e["state"] == "LISTENING", after=mark)
        mark, metrics = await _text_turn(c, "Say it out loud", speak=True)
        start = await c.wait("audio_start", after=mark)
        await c.wait("audio_end", after=mark)
        assert start["sample_rate"] > 0
        assert c.audio_frames > frames_before and c.audio_bytes > 0
        assert metrics["first_audio_ms"] is not None and metrics["tts_ms"] is not None


async def test_vision_sends_the_image_and_question_to_the_vlm_and_keeps_history(
    stub_stack, fake_openai, ws_client, make_png
) -> None:
    image = make_png()
    question = "What colour is the square"
    async with ws_client(stub_stack.url) as c:
        ready = await _ready(c, pipeline="chat")
        sid = ready["session_id"]
        _, first = await _text_turn(c, "My name is Ada")

        # switch to vision inside the same session: the history goes along
        mark = c.mark()
        await c.send({"type": "config", "pipeline": "vision"})
        ready = await c.wait("ready", after=mark)
        assert ready["pipeline"] == "vision" and ready["session_id"] == sid and ready["turns"] == 1

        before = len(fake_openai.requests)
        await c.send_binary(p.IMAGE, image)
        mark, metrics = await _text_turn(c, question, speak=False)
        assert metrics["turn"] == first["turn"] + 1

        # the reply streamed back from the fake VLM, delta by delta
        replies = c.since(mark, "reply")
        deltas = [e["delta"] for e in replies if not e.get("final")]
        assert len(deltas) > 1 and "".join(deltas) == fake_openai.reply
        assert [e["text"] for e in replies if e.get("final")] == [fake_openai.reply]

        # what the VLM server was sent: the question and that exact image, after the earlier turn
        body = fake_openai.wait_for_request(before, count=before + 1)
        assert body["stream"] is True and body["model"] == "fake-vlm"
        messages = body["messages"]
        last = messages[-1]
        assert last["role"] == "user" and isinstance(last["content"], list)
        texts = [part["text"] for part in last["content"] if part["type"] == "text"]
        urls = [part["image_url"]["url"] for part in last["content"] if part["type"] == "image_url"]
        assert texts == [question]
        assert urls == ["data:image/png;base64," + base64.b64encode(image).decode()]
        earlier = [(m["role"], m["content"]) for m in messages[:-1] if m["role"] != "system"]
        assert earlier == [("user", "My name is Ada"), ("assistant", "You said: My name is Ada.")]

        # and back to chat: still the same conversation, now two turns long
        mark = c.mark()
        await c.send({"type": "config", "pipeline": "chat"})
        ready = await c.wait("ready", after=mark)
        assert ready["pipeline"] == "chat" and ready["turns"] == 2
        mark, _ = await _text_turn(c, "Thanks")
        assert [e["text"] for e in c.since(mark, "reply") if e.get("final")] == ["You said: Thanks."]
        assert len(fake_openai.requests) == before + 1, "chat turns go to the LLM, not the VLM"
