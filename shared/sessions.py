"""The session store: a conversation's history and context, saved as one JSON file per session.

Writes are atomic (temp file in the same folder, fsync, rename), so a crash never leaves
a half-written session. Session ids are validated so no id can name a path outside the
sessions folder.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class BadSessionId(ValueError):
    pass


def validate_id(sid: str) -> str:
    if not isinstance(sid, str) or not _ID.fullmatch(sid):
        raise BadSessionId("session ids are 1-64 characters of letters, digits, '-' and '_'")
    return sid


def new_id() -> str:
    return "s" + secrets.token_hex(8)


def new_secret() -> tuple[str, str]:
    """A session's resume secret and the hash kept of it (only the client holds the secret)."""
    secret = secrets.token_urlsafe(24)
    return secret, hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def secret_matches(secret: str | None, digest: str | None) -> bool:
    """Constant-time check of a resume secret against its stored hash."""
    if not secret or not digest:
        return False
    return hmac.compare_digest(hash_secret(secret), digest)


def stream_id(eid: bytes | str) -> str:
    """A Redis stream id as text."""
    return eid.decode() if isinstance(eid, bytes) else eid


def id_order(eid: bytes | str) -> tuple[int, int]:
    """Sort key of a stream id ("ms-seq")."""
    ms, _, seq = stream_id(eid).partition("-")
    return int(ms or 0), int(seq or 0)


class TurnRecord(BaseModel):
    turn: int
    user: str
    assistant: str = ""
    interrupted: bool = False
    pipeline: str = "sts"
    image: bool = False  # the user's turn carried an image
    metrics: dict[str, Any] = Field(default_factory=dict)
    ts: float = Field(default_factory=time.time)


class Session(BaseModel):
    id: str
    pipeline: str = "sts"
    history: list[TurnRecord] = Field(default_factory=list)
    context: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)  # trigger, client_vad, sample_rate, options
    instructions: str | None = None  # the session's own system prompt (`instructions`)
    # the `in:{sid}` id the history is complete up to: a new owner replays input after it only
    cursor: str = "0-0"
    secret_hash: str | None = None  # SHA-256 of the resume secret (the client holds the secret)
    created: float = Field(default_factory=time.time)
    updated: float = Field(default_factory=time.time)

    @staticmethod
    def path(root: str | Path, sid: str) -> Path:
        root = Path(root).resolve()
        p = (root / f"{validate_id(sid)}.json").resolve()
        if p.parent != root:  # belt and braces: the id regex already forbids separators
            raise BadSessionId("session id escapes the sessions folder")
        return p

    @classmethod
    def load(cls, root: str | Path, sid: str) -> Session | None:
        """The saved session, or None if there is none."""
        try:
            data = cls.path(root, sid).read_bytes()
        except FileNotFoundError:
            return None
        return cls.model_validate_json(data)

    def save(self, root: str | Path) -> Path:
        """Write atomically: readers see the old file or the new one, never a mix."""
        target = self.path(root, self.id)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.updated = time.time()
        data = self.model_dump_json(indent=1).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.id}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return target

    def messages(self, window: int) -> list[dict[str, str]]:
        """The history's chat messages, oldest first (a side a `forget` emptied, or a reply the
        user did not ask for, has no message), at most the last `window` of them.

        The window moves in hops of half its length, not one turn at a time: it is cut at a
        multiple of `window // 2` from the history's start, so its first message, hence the
        LLM prompt's prefix, stays the same for several turns and the server's prompt cache
        holds (llama.cpp's server, vLLM's prefix caching): only the newest messages are
        evaluated. It holds `window // 2 + 1` to `window` messages once the history is longer
        (docs/BENCHMARKS.md, "Long sessions")."""
        if window <= 0:
            return []
        msgs: list[dict[str, str]] = []
        for t in self.history:
            if t.user:
                msgs.append({"role": "user", "content": t.user})
            if t.assistant:
                msgs.append({"role": "assistant", "content": t.assistant})
        cut = len(msgs) - window
        if cut > 0:
            hop = max(1, window // 2)
            cut = -(-cut // hop) * hop
        return msgs[max(cut, 0) :]
