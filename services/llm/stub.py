"""Stub LLM for plumbing runs: streams an echo of the prompt, word by word."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from shared.model import LlmDelta, LlmRequest, Model


def last_user_text(messages: list[dict]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):  # multimodal parts
                return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
            return str(content or "")
    return ""


class StubLlm(Model[LlmRequest, LlmDelta]):
    name = "stub-llm"

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.delay_s = delay_s

    async def infer(self, request: LlmRequest) -> AsyncIterator[LlmDelta]:
        words = f"You said: {last_user_text(request.messages).strip()}.".split()
        for i, w in enumerate(words):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield LlmDelta(("" if i == 0 else " ") + w)
