"""OpenAI-compatible streaming chat client: the LLM worker's model adapter.

Owns: turning an `LlmRequest` into a chat-completions call (system prompt, history window,
sampling settings, image parts passed through for VLMs), streaming the reply as
`LlmDelta`s, and the tool loop: tool calls streamed by the model are assembled, run
(`services.llm.tools`), answered with `role: tool` messages, and the model is called
again, for at most `max_tool_rounds` rounds; `remember` yields a `ContextUpdate` for the
orchestrator to persist. A preemptive request (the user's turn has not ended yet) stops at the
first tool call with side effects, unrun (`LlmStopped("tool")`); a reply cut at `max_tokens`
ends with `LlmStopped("length")`, so its last, unfinished sentence can be dropped. Server
failures (refused connection, timeout, HTTP 4xx/5xx) surface as `LlmUnavailable`, whose message
names the URL and never the API key.

Works against vLLM, Ollama, llama.cpp's server (see `services.llm.llamacpp`) and OpenAI.
Compatibility choices: an assistant turn that only carries tool calls is sent with
`content: ""` (llama-cpp-python's server rejects null content), and tool-call names
repeated in every stream chunk (llama-cpp-python does that) are not concatenated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import openai

from services.llm.config import LlmSettings
from services.llm.tools import MEMORY_PREFIX, ToolResult, has_side_effects, run_tool, tool_schemas
from shared.model import ContextUpdate, LlmDelta, LlmRequest, LlmStopped, Model

log = logging.getLogger(__name__)

MAX_MEMORY_FACTS_IN_PROMPT = 20


class LlmUnavailable(RuntimeError):
    """The LLM server could not be reached or refused the request."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


@dataclass(slots=True)
class ToolCallRecord:
    """One tool call the model made (handed to `on_tool_call` observers)."""

    name: str
    arguments: str
    result: ToolResult


@dataclass(slots=True)
class _PendingCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


def _merge_tool_call_delta(calls: dict[int, _PendingCall], delta: Any) -> None:
    index = getattr(delta, "index", None)
    call_id = getattr(delta, "id", None)
    if index is None:  # servers that omit the index: a new id starts a new call
        known = {c.id: i for i, c in calls.items()}
        if call_id and call_id not in known:
            index = len(calls)  # a new id starts a new call
        else:
            index = known.get(call_id or "", max(calls, default=0))
    entry = calls.setdefault(index, _PendingCall())
    if getattr(delta, "id", None) and not entry.id:
        entry.id = delta.id
    fn = getattr(delta, "function", None)
    if fn is None:
        return
    if fn.name and fn.name != entry.name:  # some servers repeat the full name in every chunk
        entry.name += fn.name
    if fn.arguments:
        entry.arguments += fn.arguments


class OpenAIChat(Model[LlmRequest, LlmDelta | ContextUpdate | LlmStopped]):
    """Streaming chat client. `OpenAIChat(settings=None, *, client=None, on_tool_call=None, **overrides)`.

    `overrides` are LlmSettings fields; `client` an existing `openai.AsyncOpenAI`;
    `on_tool_call(ToolCallRecord)` is called after each tool runs (metrics, logs, tests).
    """

    name = "openai-chat"

    def __init__(
        self,
        settings: LlmSettings | None = None,
        *,
        client: openai.AsyncOpenAI | None = None,
        on_tool_call: Callable[[ToolCallRecord], None] | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        base = settings or LlmSettings()
        if overrides:
            data = base.model_dump()
            data["api_key"] = base.api_key.get_secret_value()
            base = LlmSettings.model_validate({**data, **overrides})
        self.settings = base
        self._client = client
        self._model_name: str | None = base.model or None
        self.on_tool_call = on_tool_call
        self.last_first_token_s: float | None = None  # request sent -> first text delta, last reply

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return self.settings.base_url

    def _make_client(self) -> openai.AsyncOpenAI:
        s = self.settings
        return openai.AsyncOpenAI(
            base_url=s.base_url,
            api_key=s.api_key.get_secret_value(),
            timeout=openai.Timeout(s.timeout_s, connect=s.connect_timeout_s),
            max_retries=s.max_retries,
        )

    async def load(self) -> None:
        """Create the HTTP client. The server is not contacted (it may start later): see health()."""
        if self._client is None:
            self._client = self._make_client()
        await super().load()

    async def unload(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        await super().unload()

    async def warm(self, wait_s: float = 60.0) -> bool:
        """One short reply to a greeting, once the server answers (within `wait_s`): the server's
        first request is slow (buffers, kernels), and its prompt cache then holds the system
        prompt that begins every request (llama.cpp's server, vLLM's prefix caching). True
        when it answered; never raises (a server that starts later warms on its first turn)."""
        deadline = time.monotonic() + wait_s
        messages = self.build_messages([{"role": "user", "content": "Hello."}])
        while True:
            try:
                await self._one_token(messages)
                return True
            except LlmUnavailable as exc:
                if exc.status is not None or time.monotonic() > deadline:
                    log.info("LLM warm-up skipped: %s", exc)
                    return False
                await asyncio.sleep(1.0)

    async def _one_token(self, messages: list[dict[str, Any]]) -> None:
        request: dict[str, Any] = {"model": await self.model_name(), "messages": messages, "max_tokens": 1}
        await self._call(lambda c: c.chat.completions.create(**request))

    async def health(self) -> bool:
        """True when the server answers GET /models."""
        try:
            await self._call(lambda c: c.models.list())
            return True
        except LlmUnavailable:
            return False

    # ------------------------------------------------------------------ errors

    def _unavailable(self, exc: BaseException) -> LlmUnavailable:
        url = self.settings.base_url
        if isinstance(exc, openai.APITimeoutError):
            msg, status = f"LLM server at {url} timed out", None
        elif isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            msg, status = f"cannot reach the LLM server at {url}: {type(cause).__name__}: {cause}", None
        elif isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = str(getattr(exc, "message", "") or exc).strip().splitlines()[0][:300] if str(exc) else ""
            msg = f"LLM server at {url} answered HTTP {status}: {detail}"
        else:
            msg, status = f"LLM server at {url} failed: {type(exc).__name__}: {exc}", None
        key = self.settings.api_key.get_secret_value()
        if key:
            msg = msg.replace(key, "***")
        return LlmUnavailable(msg, url=url, status=status)

    async def _call(self, fn: Callable[[openai.AsyncOpenAI], Any]) -> Any:
        if self._client is None:
            self._client = self._make_client()
        try:
            return await fn(self._client)
        except openai.APIError as exc:
            raise self._unavailable(exc) from None

    async def model_name(self) -> str:
        """The configured model, or the server's first model when none is configured."""
        if self._model_name is None:
            page = await self._call(lambda c: c.models.list())
            models = [m.id for m in page.data]
            if not models:
                raise LlmUnavailable(f"LLM server at {self.url} serves no models", url=self.url)
            self._model_name = models[0]
        return self._model_name

    # ------------------------------------------------------------------ messages

    def build_messages(
        self, messages: list[dict[str, Any]], context: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """System prompt + the last `history_messages` non-system messages at most.

        The orchestrator sends a history window that already moves in hops for the server's
        prompt cache (`shared.sessions.Session.messages`); this cap sits above it (its window
        plus the question), so in the stack it never cuts: a cut here would move the prompt's
        prefix every turn. A system message in `messages` replaces the configured system
        prompt. Facts saved by `remember` (context keys `memory.*`) are added to the system
        prompt. Content lists (text + image parts) are passed through unchanged.
        """
        s = self.settings
        system = s.system_prompt
        rest: list[dict[str, Any]] = []
        for msg in messages:
            if msg.get("role") == "system":
                system = msg.get("content") or system
            else:
                rest.append(msg)
        window = rest[-s.history_messages :]
        while window and window[0].get("role") == "tool":  # its assistant tool_calls turn was cut off
            window = window[1:]
        facts = [
            (k[len(MEMORY_PREFIX) :], v) for k, v in (context or {}).items() if k.startswith(MEMORY_PREFIX)
        ]
        if facts and s.tools_enabled and isinstance(system, str):
            lines = "; ".join(f"{k}: {v}" for k, v in facts[:MAX_MEMORY_FACTS_IN_PROMPT])
            system = f"{system}\n\nWhat you remember about the user: {lines}"
        out = [{"role": "system", "content": system}] if system else []
        for msg in window:
            if msg.get("role") == "assistant" and msg.get("content") is None:
                msg = {**msg, "content": ""}
            out.append(msg)
        return out

    def _tools(self) -> list[dict[str, Any]] | None:
        s = self.settings
        if not s.tools_enabled or s.tool_choice == "none":
            return None
        return tool_schemas(s.tools) or None

    def _tool_choice(self, first_round: bool) -> Any:
        choice = self.settings.tool_choice
        if choice in ("auto", "required"):
            return choice if first_round or choice == "auto" else "auto"
        # a tool name: force it on the first round only, so the model can then answer
        return {"type": "function", "function": {"name": choice}} if first_round else "auto"

    # ------------------------------------------------------------------ inference

    async def _stream_round(
        self,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        tool_choice: Any,
        calls: dict[int, _PendingCall],
        t0: float,
        finish: list[str],
    ) -> AsyncIterator[str]:
        s = self.settings
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": True,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
        }
        if tools:
            kwargs["tools"] = tools
            kwargs["tool_choice"] = tool_choice
        if s.extra_body:
            kwargs["extra_body"] = s.extra_body
        stream = await self._call(lambda c: c.chat.completions.create(**kwargs))
        try:
            async for chunk in stream:
                if not chunk.choices:
                    continue
                if chunk.choices[0].finish_reason:
                    finish.append(chunk.choices[0].finish_reason)
                delta = chunk.choices[0].delta
                if delta is None:
                    continue
                for tc in delta.tool_calls or []:
                    _merge_tool_call_delta(calls, tc)
                if delta.content:
                    if self.last_first_token_s is None:
                        self.last_first_token_s = time.perf_counter() - t0
                    yield delta.content
        except openai.APIError as exc:
            raise self._unavailable(exc) from None
        finally:
            await stream.close()

    async def infer(self, request: LlmRequest) -> AsyncIterator[LlmDelta | ContextUpdate | LlmStopped]:
        s = self.settings
        model = await self.model_name()
        context = dict(request.context)  # tools see their own writes within this reply
        messages = self.build_messages(request.messages, request.context)
        tools = self._tools()
        self.last_first_token_s = None
        t0 = time.perf_counter()
        rounds = 0
        while True:
            offer = tools if rounds < s.max_tool_rounds else None
            calls: dict[int, _PendingCall] = {}
            text: list[str] = []
            finish: list[str] = []
            async for piece in self._stream_round(
                model, messages, offer, self._tool_choice(rounds == 0), calls, t0, finish
            ):
                text.append(piece)
                yield LlmDelta(piece)
            pending = [c for _, c in sorted(calls.items()) if c.name]
            if not offer or not pending:
                if "length" in finish:
                    yield LlmStopped("length")
                return
            held = next((c.name for c in pending if has_side_effects(c.name)), None)
            if request.preemptive and held is not None:
                log.info("preemptive reply stops at tool %s (side effects): not run", held)
                yield LlmStopped("tool", held)
                return
            rounds += 1
            for i, call in enumerate(pending):
                call.id = call.id or f"call_{rounds}_{i}"
            messages.append(
                {
                    "role": "assistant",
                    "content": "".join(text),
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments or "{}"},
                        }
                        for c in pending
                    ],
                }
            )
            for call in pending:
                result = await asyncio.to_thread(run_tool, call.name, call.arguments, context, s.tools)
                log.info("tool %s(%s) -> %s", call.name, call.arguments, result.content)
                if self.on_tool_call is not None:
                    self.on_tool_call(ToolCallRecord(call.name, call.arguments, result))
                for update in result.updates:
                    yield update
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result.content})
