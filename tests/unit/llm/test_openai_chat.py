"""OpenAIChat against a scripted OpenAI-compatible endpoint (an in-process HTTP transport
that speaks the chat-completions SSE stream): what goes over the wire (system prompt,
history window, sampling, tools, image parts) and what comes back (text deltas, the tool
loop, context updates, bounded rounds, clear errors that never show the API key). The
same client against a real llama.cpp server: tests/integration/llm/."""

from __future__ import annotations

import base64
import json
import socket
from typing import Any

import httpx2
import openai
import pytest

from services.llm.config import LlmSettings
from services.llm.openai_chat import LlmUnavailable, OpenAIChat, ToolCallRecord
from services.llm.tools import TOOLS, has_side_effects
from shared.images import image_part
from shared.model import ContextUpdate, LlmDelta, LlmRequest, LlmStopped

API_KEY = "sk-test-secret-123"


def text_chunks(*pieces: str) -> list[dict]:
    return [{"delta": {"role": "assistant", "content": p}} for p in pieces]


def tool_call_chunks(
    name: str, arguments: str, call_id: str = "call_1", repeat_name: bool = True
) -> list[dict]:
    """A tool call split over chunks; llama-cpp-python repeats the full name in every chunk."""
    half = len(arguments) // 2
    return [
        {
            "delta": {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments[:half]},
                    }
                ]
            }
        },
        {
            "delta": {
                "tool_calls": [
                    {
                        "index": 0,
                        "function": {"name": name if repeat_name else None, "arguments": arguments[half:]},
                    }
                ]
            }
        },
    ]


class FakeServer:
    """Answers each POST /chat/completions with the next scripted list of chunk deltas."""

    def __init__(
        self,
        *replies: list[dict],
        status: int = 200,
        models: tuple[str, ...] = ("served-model",),
        finish: str = "stop",
    ):
        self.replies = list(replies)
        self.status = status
        self.finish = finish  # a text reply's finish_reason ("length": cut at max_tokens)
        self.models = models
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/models"):
            return httpx2.Response(
                200,
                json={
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "me"} for m in self.models
                    ],
                },
            )
        body = json.loads(request.content)
        self.requests.append(body)
        if self.status != 200:
            return httpx2.Response(self.status, json={"error": {"message": f"boom (key was {API_KEY})"}})
        deltas = self.replies.pop(0) if self.replies else text_chunks("ok")
        events = [
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "delta": d["delta"], "finish_reason": None}],
            }
            for d in deltas
        ]
        # the last chunk says why the reply ended, as real servers do
        finish = "tool_calls" if any("tool_calls" in d["delta"] for d in deltas) else self.finish
        events.append({**events[-1], "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        data = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=data.encode())


def make_chat(server: FakeServer, **overrides: Any) -> tuple[OpenAIChat, list[ToolCallRecord]]:
    settings = {"base_url": "http://llm.test/v1", "api_key": API_KEY, "model": "test-model", **overrides}
    client = openai.AsyncOpenAI(
        base_url=settings["base_url"],
        api_key=API_KEY,
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(server)),
    )
    records: list[ToolCallRecord] = []
    return OpenAIChat(LlmSettings(**settings), client=client, on_tool_call=records.append), records


async def run(chat: OpenAIChat, messages: list[dict], context: dict | None = None) -> list[Any]:
    return [o async for o in chat.infer(LlmRequest(messages=messages, context=context or {}))]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


async def test_text_streams_as_deltas_with_settings_on_the_wire():
    server = FakeServer(text_chunks("Hello", " there", "."))
    chat, _ = make_chat(server, temperature=0.3, top_p=0.9, max_tokens=42, system_prompt="Be brief.")
    out = await run(chat, user("hi"))
    assert out == [LlmDelta("Hello"), LlmDelta(" there"), LlmDelta(".")]
    sent = server.requests[0]
    assert sent["model"] == "test-model" and sent["stream"] is True
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.3, 0.9, 42)
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert [t["function"]["name"] for t in sent["tools"]] == [
        "current_time",
        "calculator",
        "remember",
        "recall",
    ]
    assert sent["tool_choice"] == "auto"


async def test_default_system_prompt_is_for_speech():
    server = FakeServer()
    chat, _ = make_chat(server)
    await run(chat, user("hi"))
    system = server.requests[0]["messages"][0]
    assert system["role"] == "system" and "markdown" in system["content"] and "short" in system["content"]


async def test_history_window_keeps_the_latest_messages():
    history = []
    for i in range(15):
        history += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    history.append({"role": "user", "content": "latest"})
    server = FakeServer()
    chat, _ = make_chat(server, history_messages=5)
    await run(chat, history)
    sent = server.requests[0]["messages"]
    assert sent[0]["role"] == "system"
    assert [m["content"] for m in sent[1:]] == ["q13", "a13", "q14", "a14", "latest"]


async def test_window_never_starts_with_an_orphan_tool_result():
    history = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c", "content": "1"},
        {"role": "assistant", "content": "It is one."},
        {"role": "user", "content": "thanks"},
    ]
    server = FakeServer()
    chat, _ = make_chat(server, history_messages=3)
    await run(chat, history)
    assert [m["role"] for m in server.requests[0]["messages"]] == ["system", "assistant", "user"]


async def test_system_message_in_request_replaces_the_default():
    server = FakeServer()
    chat, _ = make_chat(server)
    await run(chat, [{"role": "system", "content": "You are a pirate."}] + user("hi"))
    sent = server.requests[0]["messages"]
    assert sent[0] == {"role": "system", "content": "You are a pirate."} and len(sent) == 2


async def test_remembered_facts_reach_the_system_prompt():
    server = FakeServer()
    chat, _ = make_chat(server)
    await run(chat, user("hi"), context={"memory.name": "Ada", "unrelated": "x"})
    system = server.requests[0]["messages"][0]["content"]
    assert "name: Ada" in system and "unrelated" not in system


async def test_image_parts_pass_through_unchanged():
    jpeg = b"\xff\xd8\xff\xe0fake-jpeg"
    part = image_part(jpeg)
    assert part == {
        "type": "image_url",
        "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()},
    }
    content = [{"type": "text", "text": "What is in this picture?"}, part]
    server = FakeServer()
    chat, _ = make_chat(server)
    await run(chat, [{"role": "user", "content": content}])
    assert server.requests[0]["messages"][1]["content"] == content
    assert image_part(b"png", "image/png")["image_url"]["url"].startswith("data:image/png;base64,")
    with pytest.raises(ValueError):
        image_part(b"x", "text/html")


async def test_tool_call_round_trip():
    server = FakeServer(
        tool_call_chunks("calculator", json.dumps({"expression": "17 * 23"})),
        text_chunks("It is ", "391."),
    )
    chat, records = make_chat(server)
    out = await run(chat, user("What is 17 times 23?"))
    assert out == [LlmDelta("It is "), LlmDelta("391.")]
    assert [(r.name, r.result.content) for r in records] == [("calculator", "17 * 23 = 391")]
    second = server.requests[1]["messages"]
    assert second[-2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "calculator", "arguments": '{"expression": "17 * 23"}'},
            }
        ],
    }
    assert second[-1] == {"role": "tool", "tool_call_id": "call_1", "content": "17 * 23 = 391"}


async def test_tool_name_sent_once_is_not_lost():
    server = FakeServer(
        tool_call_chunks("calculator", '{"expression": "2+2"}', repeat_name=False), text_chunks("Four.")
    )
    chat, records = make_chat(server)
    await run(chat, user("2+2?"))
    assert records[0].name == "calculator" and records[0].result.content == "2+2 = 4"


async def test_parallel_tool_calls_and_calls_without_index():
    first = tool_call_chunks("calculator", '{"expression": "1+1"}', call_id="a")
    second = [
        {"delta": {"tool_calls": [{**d["delta"]["tool_calls"][0], "index": 1}]}}
        for d in tool_call_chunks("calculator", '{"expression": "2+2"}', call_id="b")
    ]
    server = FakeServer(first + second, text_chunks("Two and four."))
    chat, records = make_chat(server)
    await run(chat, user("1+1 and 2+2?"))
    assert [r.result.content for r in records] == ["1+1 = 2", "2+2 = 4"]
    no_index = [
        {"delta": {"tool_calls": [{k: v for k, v in d["delta"]["tool_calls"][0].items() if k != "index"}]}}
        for d in tool_call_chunks("calculator", '{"expression": "3*3"}', call_id="c")
    ]
    server = FakeServer(no_index, text_chunks("Nine."))
    chat, records = make_chat(server)
    await run(chat, user("3*3?"))
    assert [r.result.content for r in records] == ["3*3 = 9"]


async def test_remember_yields_a_context_update():
    server = FakeServer(
        tool_call_chunks("remember", json.dumps({"key": "favourite colour", "value": "blue"})),
        text_chunks("Got it."),
    )
    chat, _ = make_chat(server)
    out = await run(chat, user("Remember my favourite colour is blue"), context={"memory.pet": "cat"})
    assert out == [ContextUpdate("memory.favourite_colour", "blue"), LlmDelta("Got it.")]


async def test_tool_rounds_are_bounded():
    call = tool_call_chunks("current_time", "{}")
    server = FakeServer(call, call, text_chunks("Done."))
    chat, records = make_chat(server, max_tool_rounds=2)
    out = await run(chat, user("time?"))
    assert len(records) == 2
    assert len(server.requests) == 3
    assert "tools" not in server.requests[2]  # the last call must answer in words
    assert out == [LlmDelta("Done.")]


async def test_forced_tool_choice_applies_to_the_first_round_only():
    server = FakeServer(tool_call_chunks("calculator", '{"expression": "1+1"}'), text_chunks("Two."))
    chat, _ = make_chat(server, tool_choice="calculator")
    await run(chat, user("1+1"))
    assert server.requests[0]["tool_choice"] == {"type": "function", "function": {"name": "calculator"}}
    assert server.requests[1]["tool_choice"] == "auto"


async def test_tools_can_be_disabled_or_limited():
    server = FakeServer()
    chat, _ = make_chat(server, tools_enabled=False)
    await run(chat, user("hi"))
    assert "tools" not in server.requests[0]
    server = FakeServer()
    chat, _ = make_chat(server, tools=["calculator"])
    await run(chat, user("hi"))
    assert [t["function"]["name"] for t in server.requests[0]["tools"]] == ["calculator"]
    with pytest.raises(ValueError):
        LlmSettings(tool_choice="remember", tools=["calculator"])


async def test_model_name_is_asked_from_the_server_when_not_set():
    server = FakeServer(models=("smollm2",))
    chat, _ = make_chat(server, model="")
    await run(chat, user("hi"))
    assert server.requests[0]["model"] == "smollm2"


async def test_http_errors_raise_llm_unavailable_without_the_key():
    server = FakeServer(status=500)
    chat, _ = make_chat(server)
    with pytest.raises(LlmUnavailable) as info:
        await run(chat, user("hi"))
    assert info.value.status == 500 and info.value.url == "http://llm.test/v1"
    assert "http://llm.test/v1" in str(info.value) and API_KEY not in str(info.value)


async def test_closed_port_raises_llm_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    chat = OpenAIChat(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, model="m", max_retries=0)
    await chat.load()
    with pytest.raises(LlmUnavailable) as info:
        await run(chat, user("hi"))
    assert f"127.0.0.1:{port}" in str(info.value) and API_KEY not in str(info.value)
    assert info.value.status is None
    assert await chat.health() is False
    await chat.unload()


async def test_warm_up_asks_for_one_token_behind_the_system_prompt_every_request_begins_with():
    from tests.support.fake_openai import FakeOpenAI

    with FakeOpenAI(reply="Hi.") as api:
        chat = OpenAIChat(base_url=api.url, api_key=API_KEY, system_prompt="Be brief.", max_retries=0)
        assert await chat.warm(wait_s=5) is True
        (body,) = api.requests
        assert body["model"] == "fake-model" and body["max_tokens"] == 1
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
        await chat.unload()


async def test_warm_up_gives_up_quietly_when_no_server_answers():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    chat = OpenAIChat(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, model="m", max_retries=0)
    assert await chat.warm(wait_s=1.5) is False
    await chat.unload()


def test_the_client_never_cuts_the_window_the_orchestrator_sends():
    # the orchestrator's window moves in hops (shared.sessions); a cut here would move the
    # prompt's prefix every turn and defeat the server's prompt cache
    chat = OpenAIChat(api_key=API_KEY)
    window = [{"role": "user" if i % 2 else "assistant", "content": f"m{i}"} for i in range(20)]
    sent = chat.build_messages([*window, {"role": "user", "content": "q"}])[1:]
    assert [m["content"] for m in sent] == [*(m["content"] for m in window), "q"]


async def test_a_reply_cut_at_max_tokens_says_so():
    server = FakeServer(text_chunks("The sky is blue.", " It looks"), finish="length")
    chat, _ = make_chat(server, max_tokens=8)
    out = await run(chat, user("sky?"))
    assert out[-1] == LlmStopped("length")
    assert LlmStopped("length") not in await run(make_chat(FakeServer(text_chunks("Done.")))[0], user("x"))


def test_every_tool_says_whether_it_has_side_effects():
    assert {n for n, t in TOOLS.items() if t.side_effects} == {"remember"}
    assert has_side_effects("no_such_tool")  # unknown: assume the worst


async def test_a_preemptive_reply_stops_at_a_tool_with_side_effects_without_running_it():
    server = FakeServer(
        tool_call_chunks("remember", json.dumps({"key": "name", "value": "Ada"})), text_chunks("Noted.")
    )
    chat, records = make_chat(server)
    request = LlmRequest(messages=user("call me Ada"), context={}, preemptive=True)
    out = [o async for o in chat.infer(request)]
    assert out == [LlmStopped("tool", "remember")]
    assert records == [] and len(server.requests) == 1  # not run, and the model not called again
    assert not any(isinstance(o, ContextUpdate) for o in out)


async def test_a_preemptive_reply_runs_tools_without_side_effects():
    server = FakeServer(tool_call_chunks("calculator", json.dumps({"expression": "6*7"})), text_chunks("42."))
    chat, records = make_chat(server)
    request = LlmRequest(messages=user("six times seven"), context={}, preemptive=True)
    out = [o async for o in chat.infer(request)]
    assert [r.name for r in records] == ["calculator"]
    assert [o.text for o in out if isinstance(o, LlmDelta)] == ["42."]
