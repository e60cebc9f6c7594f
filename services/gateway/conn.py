"""One client connection's link to its session: the send queue, and how the session's
`out:{sid}` entries reach the socket (`Conn.deliver`; the Jarvis protocol's framing here,
the Realtime endpoint's translation in `services.gateway.realtime`)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field

from prometheus_client import Counter
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from shared import protocol as p
from shared.messages import AudioOut, ClientEvent

log = logging.getLogger("jarvis.gateway")

FRAMES_OUT = Counter("jarvis_gateway_frames_out_total", "Frames to clients", ["kind"])
_OUT_EVENT, _OUT_AUDIO = FRAMES_OUT.labels("event"), FRAMES_OUT.labels("audio")  # bound once: per-frame path
SEND_QUEUE = 2000  # events + audio chunks buffered for a slow client before it is dropped


@dataclass(eq=False)
class Conn:
    ws: ServerConnection
    sid: str | None = None
    last_id: bytes | str = "0-0"
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(SEND_QUEUE))
    secret: str | None = None  # the session's resume secret, told to this client in `ready`
    started: bool = False  # a session was opened on this connection
    # audio pacing: stream time this client sent ahead of the wall clock (seconds)
    _audio_clock: float = 0.0

    def admit_audio(self, samples: int, rate: int, burst_s: float) -> bool:
        """Whether `samples` more audio keep this client within real time plus `burst_s`
        seconds of allowance (a client may catch up after a stall, not flood)."""
        now = time.monotonic()
        clock = max(self._audio_clock, now)
        ahead = clock + samples / rate - now
        if ahead > burst_s:
            return False
        self._audio_clock = clock + samples / rate
        return True

    def send(self, item: str | bytes) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("client too slow; closing so it can resume", extra={"session": self.sid})
            asyncio.ensure_future(self.ws.close(4008, "client too slow; reconnect and resume"))

    async def write(self) -> None:
        """Hand queued frames to the socket, in order, until it closes."""
        try:
            while True:
                await self.ws.send(await self.queue.get())
        except ConnectionClosed:
            pass

    def deliver(self, eid: bytes, msg: object) -> None:
        """An entry of the session's `out:{sid}` stream, read at stream id `eid`."""
        if isinstance(msg, ClientEvent):
            # the stream id is the event's resume cursor
            _OUT_EVENT.inc()
            head = '{"id":"' + eid.decode() + '",'
            if self.secret is not None and msg.json.startswith('{"type":"ready"'):
                head += '"resume_secret":' + json.dumps(self.secret) + ","
            self.send(head + msg.json[1:])
        elif isinstance(msg, AudioOut):
            _OUT_AUDIO.inc()
            self.send(bytes((p.AUDIO,)) + msg.pcm)
