"""How `jarvis talk` and `jarvis talk --mic` show a server event on the terminal: one line each."""

from __future__ import annotations

import json
from typing import Any


def print_event(ev: dict[str, Any]) -> None:
    kind = ev.get("type")
    if kind == "state":
        line = f"[state] {ev['state']}"
    elif kind == "transcript":
        line = f"[{'you' if ev['final'] else 'you…'}] {ev['text']}"
    elif kind == "reply":
        if not ev.get("final"):
            return
        line = f"[jarvis] {ev.get('text', '')}"
    elif kind == "metrics":
        keys = ("end_of_turn_ms", "transcript_ms", "first_token_ms", "first_audio_ms", "total_ms")
        line = "[metrics] " + ", ".join(f"{k[:-3]}={ev[k]:.0f}ms" for k in keys if ev.get(k) is not None)
    elif kind == "error":
        line = f"[error] {ev['code']}: {ev['message']}"
    else:
        line = f"[{kind}] " + json.dumps({k: v for k, v in ev.items() if k not in ("type", "id")})
    print(line, flush=True)
