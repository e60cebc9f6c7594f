"""Images as OpenAI-compatible chat content parts (what vLLM and Ollama accept for VLMs)."""

from __future__ import annotations

import base64


def image_part(data: bytes, mime: str = "image/jpeg") -> dict:
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode()}"}}
