"""The gateway's batching publisher: an entry that can't be encoded fails alone at `put`,
an entry Redis refuses is dropped alone, and while Redis is away the buffer stays bounded."""

from __future__ import annotations

import time

import pytest
from redis.exceptions import ResponseError

from services.gateway.publisher import Publisher, Unencodable
from shared import codec
from shared.messages import Audio, Command


class FakeBus:
    def __init__(self, refuse: set[bytes] | None = None) -> None:
        self.written: list[tuple[str, bytes]] = []
        self.refuse = refuse or set()

    async def add_encoded(self, items):
        if any(payload in self.refuse for _, payload, _ in items):
            raise ResponseError("refused")
        self.written += [(s, payload) for s, payload, _ in items]


async def test_an_unencodable_entry_fails_alone():
    bus = FakeBus()
    pub = Publisher(bus)  # type: ignore[arg-type]
    pub.put("in:a", Audio(b"\x00\x00", 1.0), 10)
    with pytest.raises(Unencodable):
        pub.put("in:b", Command({"type": "config", "options": {"voice": "\ud800"}}, 1.0), 10)
    pub.put("in:a", Audio(b"\x01\x00", 2.0), 10)
    await pub.flush()
    assert [s for s, _ in bus.written] == ["in:a", "in:a"]


async def test_a_refused_entry_is_dropped_alone():
    bad = codec.encode(Command({"type": "stop"}, 1.0))
    bus = FakeBus(refuse={bad})
    pub = Publisher(bus)  # type: ignore[arg-type]
    pub.put("in:a", Audio(b"\x00\x00", 1.0), 10)
    pub.put("in:b", Command({"type": "stop"}, 1.0), 10)
    pub.put("in:c", Audio(b"\x00\x00", 1.0), 10)
    await pub.flush()
    assert [s for s, _ in bus.written] == ["in:a", "in:c"]


def test_stale_audio_is_dropped_while_redis_is_away():
    pub = Publisher(FakeBus(), max_age_s=0.05)  # type: ignore[arg-type]
    for _ in range(100):
        pub.put("in:a", Audio(b"\x00\x00", 1.0), 10)
    pub.put("in:a", Command({"type": "stop"}, 1.0), 10)
    time.sleep(0.1)
    pub._expire()
    assert len(pub._items) == 1 and pub.dropped == 100  # commands are kept, stale audio is not
