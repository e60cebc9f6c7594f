"""A test double of the OpenAI-compatible chat completions API: a real HTTP server on a free
127.0.0.1 port, in a background thread.

    with FakeOpenAI(reply="I see a red square.") as api:
        ...  # point JARVIS_LLM_BASE_URL / JARVIS_VLM_BASE_URL at api.url
        body = api.wait_for_request()
        assert body["messages"][-1]["content"][1]["type"] == "image_url"

Serves `GET /v1/models` and `POST /v1/chat/completions`, streamed (`"stream": true`, SSE
`chat.completion.chunk`s ending with `data: [DONE]`, chunked transfer encoding) or not.
Every request body is recorded (`requests`, a list of the parsed JSON bodies, in order).
The reply is a string or a function of the request body; it is streamed a few characters
per chunk, `chunk_delay` seconds apart. `fail_with=503` answers every completion with that
HTTP status instead.

It refuses what vLLM (0.11, the version the GPU profile pins) refuses, with vLLM's status
codes and error bodies (`{"error": {"message", "type", "param", "code"}}`):
- a model name it does not serve: 404 NotFoundError "The model `x` does not exist.";
- tools with `tool_choice` "auto" (the default when tools are sent) unless it was started
  with `--enable-auto-tool-choice --tool-call-parser ...` (`auto_tool_choice`): 400;
- a prompt plus `max_tokens` longer than `max_model_len`: 400 with vLLM's wording. Tokens
  are counted as vLLM's tokenizers roughly do for English: one per 4 characters of the
  messages' JSON (an estimate; the real count depends on the model's tokenizer).
`FakeOpenAI.like_vllm(argv)` configures all three from a vLLM command line (`--served-model-name`
or `--model`, the tool flags, `--max-model-len`), so a registry's command can be checked
against what the LLM client sends. `/health` answers 200; with `sleep_mode` (vLLM's
`--enable-sleep-mode` plus `VLLM_SERVER_DEV_MODE=1`) it also serves `POST /sleep?level=N`,
`POST /wake_up` and `GET /is_sleeping`, and a sleeping server refuses completions.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

Reply = str | Callable[[dict[str, Any]], str]


class FakeOpenAI:
    def __init__(
        self,
        reply: Reply = "Hello from the fake model.",
        *,
        model: str = "fake-model",
        chunk_chars: int = 4,
        chunk_delay: float = 0.0,
        fail_with: int | None = None,
        served_models: list[str] | None = None,
        auto_tool_choice: bool = True,
        max_model_len: int | None = None,
        sleep_mode: bool = False,
    ) -> None:
        self.reply = reply
        self.model = model
        self.chunk_chars = chunk_chars
        self.chunk_delay = chunk_delay
        self.fail_with = fail_with
        self.served_models = list(served_models) if served_models else [model]
        self.auto_tool_choice = auto_tool_choice
        self.max_model_len = max_model_len
        self.sleep_mode = sleep_mode
        self.sleeping = 0  # the sleep level, 0: awake
        self.sleeps: list[int] = []  # levels of every /sleep, in order
        self.wakes = 0
        self.requests: list[dict[str, Any]] = []  # chat completion bodies, in arrival order
        self.paths: list[tuple[str, str]] = []  # (method, path) of every request
        self._cond = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @classmethod
    def like_vllm(cls, argv: list[str], env: dict[str, str] | None = None, **kw: Any) -> FakeOpenAI:
        """A double configured as `vllm serve` with these arguments (and environment) would be."""

        def value(flag: str) -> str | None:
            for i, a in enumerate(argv):
                if a == flag and i + 1 < len(argv):
                    return argv[i + 1]
                if a.startswith(flag + "="):
                    return a.split("=", 1)[1]
            return None

        names = value("--served-model-name") or value("--model") or (argv[0] if argv else "")
        max_len = value("--max-model-len")
        dev_mode = (env or {}).get("VLLM_SERVER_DEV_MODE") == "1"
        return cls(
            model=names.split(",")[0],
            served_models=names.split(","),
            auto_tool_choice="--enable-auto-tool-choice" in argv and value("--tool-call-parser") is not None,
            max_model_len=int(max_len) if max_len else None,
            sleep_mode="--enable-sleep-mode" in argv and dev_mode,
            **kw,
        )

    # ---- lifecycle ----------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The base URL an OpenAI client wants (ends in /v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- what tests look at -----------------------------------------------------------

    def wait_for_request(
        self, index: int = -1, *, count: int | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """The recorded body at `index`, once `count` requests (default: enough for `index`) arrived."""
        need = count if count is not None else (index + 1 if index >= 0 else 1)
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= need, timeout):
                raise TimeoutError(f"{len(self.requests)} chat requests after {timeout:.0f}s, wanted {need}")
            return self.requests[index]

    def reply_for(self, body: dict[str, Any]) -> str:
        return self.reply(body) if callable(self.reply) else self.reply

    def _record(self, method: str, path: str, body: dict[str, Any] | None) -> None:
        with self._cond:
            self.paths.append((method, path))
            if body is not None:
                self.requests.append(body)
            self._cond.notify_all()


def vllm_error(status: int, err_type: str, message: str) -> dict[str, Any]:
    """vLLM's error body (`ErrorResponse`)."""
    return {"error": {"message": message, "type": err_type, "param": None, "code": status}}


def refusal(api: FakeOpenAI, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """What vLLM would answer instead of a completion, or None when it would serve it."""
    if api.sleeping:
        # a sleeping engine has no weights on the GPU: vLLM fails the request
        return 500, vllm_error(500, "InternalServerError", "the engine is sleeping (call /wake_up first)")
    model = body.get("model")
    if model not in api.served_models:
        return 404, vllm_error(404, "NotFoundError", f"The model `{model}` does not exist.")
    choice = body.get("tool_choice", "auto" if body.get("tools") else "none")
    if body.get("tools") and choice == "auto" and not api.auto_tool_choice:
        return 400, vllm_error(
            400,
            "BadRequestError",
            '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
        )
    if api.max_model_len is not None:
        prompt = max(1, len(json.dumps(body.get("messages", []))) // 4)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if max_tokens is None:
            max_tokens = api.max_model_len - prompt
        if prompt + max_tokens > api.max_model_len:
            return 400, vllm_error(
                400,
                "BadRequestError",
                f"This model's maximum context length is {api.max_model_len} tokens. However, you requested "
                f"{prompt + max_tokens} tokens ({prompt} in the messages, {max_tokens} in the completion). "
                "Please reduce the length of the messages or completion.",
            )
    return None


def _handler(api: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; streamed bodies use chunked encoding

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _json(self, status: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _empty(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            api._record("GET", path, None)
            if path in ("/v1/models", "/models"):
                self._json(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {
                                "id": name,
                                "object": "model",
                                "created": 0,
                                "owned_by": "fake-openai",
                                "max_model_len": api.max_model_len,
                            }
                            for name in api.served_models
                        ],
                    },
                )
            elif path == "/health":
                self._empty(200)
            elif path == "/is_sleeping" and api.sleep_mode:
                self._json(200, {"is_sleeping": bool(api.sleeping)})
            else:
                self._json(404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}})

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if api.sleep_mode and path in ("/sleep", "/wake_up"):
                api._record("POST", path, None)
                if path == "/sleep":
                    query = self.path.partition("?")[2]
                    level = int(dict(q.partition("=")[::2] for q in query.split("&") if q).get("level", "1"))
                    api.sleeping = level
                    api.sleeps.append(level)
                else:
                    api.sleeping = 0
                    api.wakes += 1
                self._empty(200)
                return
            if path not in ("/v1/chat/completions", "/chat/completions"):
                api._record("POST", path, None)
                self._json(404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}})
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                api._record("POST", path, None)
                self._json(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
                return
            api._record("POST", path, body)
            if api.fail_with:
                self._json(api.fail_with, {"error": {"message": "fake failure", "type": "server_error"}})
                return
            refused = refusal(api, body)
            if refused is not None:
                self._json(*refused)
                return
            text = api.reply_for(body)
            cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
            created = int(time.time())
            model = body.get("model") or api.model
            if not body.get("stream"):
                self._json(
                    200,
                    {
                        "id": cid,
                        "object": "chat.completion",
                        "created": created,
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def event(delta: dict[str, Any], finish: str | None = None) -> None:
                chunk = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())

            try:
                event({"role": "assistant", "content": ""})
                step = max(1, api.chunk_chars)
                for i in range(0, len(text), step):
                    if api.chunk_delay:
                        time.sleep(api.chunk_delay)
                    event({"content": text[i : i + step]})
                event({}, "stop")
                self._chunk(b"data: [DONE]\n\n")
                self._chunk(b"")  # end of the chunked body
            except (BrokenPipeError, ConnectionResetError):  # the client hung up (a barge-in)
                self.close_connection = True

    return Handler
