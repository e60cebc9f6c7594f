"""10,000 generated client messages (JSON of every shape, garbage text, binary frames of every
kind) against a live gateway while a well-behaved session talks: no process dies, and every
turn of that session is answered."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from shared import protocol as p
from tests.faults.conftest import Talker, question

pytestmark = pytest.mark.faults

MESSAGES = 10_000
BATCH = 50  # messages per generated example
FIELDS = sorted(
    {
        name
        for model in (p.Start, p.Config, p.Text, p.Vad, p.Turn, p.Forget, p.Truncate)
        for name in model.model_fields
    }
    | {"id", "speak", "text", "audio_end_ms"}
)

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=24)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=6,
)
objects = st.builds(
    lambda kind, body: {**body, "type": kind},
    st.sampled_from(sorted(p.CLIENT_TYPES)) | json_values,
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), json_values, max_size=5),
)
text_frames = objects.map(json.dumps) | st.text(max_size=64) | json_values.map(json.dumps)
binary_frames = st.builds(
    lambda tag, body: bytes([tag]) + body, st.sampled_from([1, 1, 1, 2, 0, 3, 255]), st.binary(max_size=700)
)
frames = text_frames | binary_frames


class Fuzzer:
    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: ClientConnection | None = None
        self.sent = 0
        self.reconnects = 0

    def send(self, frame: str | bytes) -> None:
        for _ in range(3):
            if self.ws is None:
                self.ws = connect(self.url, compression=None, max_size=None, open_timeout=10)
                self.reconnects += 1
            try:
                self.ws.send(frame)
                self.sent += 1
                if self.sent % 50 == 0:
                    self._drain()
                return
            except ConnectionClosed:
                self.ws = None

    def _drain(self) -> None:
        assert self.ws is not None
        try:
            while self.ws.recv(timeout=0) is not None:
                pass
        except TimeoutError:
            pass

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()


def _good_session(stack, out: dict) -> None:
    async def run() -> None:
        t = await Talker(stack).open()
        try:
            for i in range(3):
                q, _ = await question(i)
                t.ask(q)
                await t.wait_for("metrics", turn=i + 1, timeout=60)
            out["turns"] = len(t.events("metrics"))
        finally:
            await t.close()

    try:
        asyncio.run(run())
    except Exception as exc:  # noqa: BLE001 - reported by the test
        out["error"] = repr(exc)


def test_fuzzed_clients_never_hurt_the_gateway_or_a_good_session(stack):
    fuzzer = Fuzzer(stack.url)
    restarts = {proc.name: len(proc.restarts) for proc in stack.procs}
    good: dict = {}
    talker = threading.Thread(target=_good_session, args=(stack, good))
    talker.start()

    @settings(
        max_examples=MESSAGES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    @given(frames)
    def fuzz(frame: str | bytes) -> None:
        fuzzer.send(frame)

    try:
        fuzz()
    finally:
        fuzzer.close()
        talker.join(120)
    assert fuzzer.sent >= MESSAGES
    assert good.get("turns") == 3, good
    dead = [
        (proc.name, proc.returncode)
        for proc in stack.procs
        if not proc.alive() or len(proc.restarts) != restarts[proc.name]
    ]
    assert not dead, dead
