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
    ) -> None:
        self.reply = reply
        self.model = model
        self.chunk_chars = chunk_chars
        self.chunk_delay = chunk_delay
        self.fail_with = fail_with
        self.requests: list[dict[str, Any]] = []  # chat completion bodies, in arrival order
        self.paths: list[tuple[str, str]] = []  # (method, path) of every request
        self._cond = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

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

    def wait_for_request(self, index: int = -1, *, count: int | None = None, timeout: float = 30.0) -> dict[str, Any]:
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

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            api._record("GET", path, None)
            if path in ("/v1/models", "/models"):
                self._json(200, {"object": "list", "data": [
                    {"id": api.model, "object": "model", "created": 0, "owned_by": "fake-openai"}]})
            else:
                self._json(404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}})

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
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
            text = api.reply_for(body)
            cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
            created = int(time.time())
            model = body.get("model") or api.model
            if not body.get("stream"):
                self._json(200, {
                    "id": cid, "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                })
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def event(delta: dict[str, Any], finish: str | None = None) -> None:
                chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
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
