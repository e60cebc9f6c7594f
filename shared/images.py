"""Images as OpenAI-compatible chat content parts (what vLLM and Ollama accept for VLMs).

The orchestrator builds the vision pipeline's user message with it; the LLM worker sends it
unchanged."""

from __future__ import annotations

import base64
from typing import Any


def image_part(data: bytes, mime: str = "image/jpeg") -> dict[str, Any]:
    """A content part carrying an image inline: put it in a user message's content list."""
    if not mime.startswith("image/"):
        raise ValueError(f"not an image MIME type: {mime!r}")
    return {
        "type": "image_url",
        "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"},
    }
