"""A Realtime API connection on the gateway:
`/v1/realtime[?model=…&session_id=…&resume_secret=…]`.

The socket's JSON events go through the connection's `Translator`; what it asks of Jarvis
goes out through the gateway's own machinery (`Gateway.start_session`, `command`, `audio`),
and the session's `out:{sid}` entries come back through `RealtimeConn.deliver`, read by the
gateway's one out-stream reader like every other connection's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from pydantic import ValidationError
from websockets.asyncio.server import ServerConnection

from services.gateway.conn import Conn
from services.gateway.realtime import events as rt
from services.gateway.realtime.translate import Translator
from shared import protocol as p
from shared.messages import AudioOut, ClientEvent
from shared.sessions import BadSessionId, validate_id

if TYPE_CHECKING:
    from services.gateway.server import Gateway

log = logging.getLogger("jarvis.gateway.realtime")

DEFAULT_MODEL = "jarvis"


class RealtimeConn(Conn):
    def __init__(
        self, ws: ServerConnection, gw: Gateway, translator: Translator, resume_secret: str | None = None
    ) -> None:
        super().__init__(ws)
        self.gw = gw
        self.tr = translator
        self.resume_secret = resume_secret

    def deliver(self, eid: bytes, msg: object) -> None:
        try:
            if isinstance(msg, AudioOut):
                self.tr.on_audio(msg.pcm)
            elif isinstance(msg, ClientEvent):
                self.tr.on_event(p.server_event.validate_json(msg.json))
        except ValidationError:
            log.warning("unreadable session event dropped", extra={"session": self.sid})
        except Exception:
            log.exception("failed translating a session event", extra={"session": self.sid})
        self.flush_events()

    def flush_events(self) -> None:
        for ev in self.tr.take()[0]:
            self.send(ev.dump())

    def error(self, exc: rt.RealtimeError) -> None:
        self.send(rt.error_event(exc).dump())

    async def on_frame(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            raise rt.RealtimeError(
                "invalid_event", "binary frames are not used: send input_audio_buffer.append events"
            )
        limit = self.gw.settings.max_frame_bytes
        if len(frame) > limit:
            raise rt.RealtimeError(
                "frame_too_large",
                f"an event of {len(frame)} characters is over the {limit} limit; it was dropped",
            )
        self.tr.on_client(rt.parse_client_event(frame))
        events, commands = self.tr.take()
        for ev in events:
            self.send(ev.dump())
        for cmd in commands:
            if isinstance(cmd, p.Start):
                await self._open(cmd)
            elif self.sid is None:
                continue
            elif isinstance(cmd, bytes):
                try:
                    self.gw.audio(self.sid, cmd, conn=self)
                except p.ProtocolError as exc:
                    raise rt.RealtimeError(exc.code.value, exc.message) from None
            else:
                try:
                    self.gw.command(self.sid, cmd)
                except p.ProtocolError as exc:
                    raise rt.RealtimeError(exc.code.value, exc.message) from None

    async def _open(self, start: p.Start) -> None:
        # the query's resume_secret: the one a resumed session takes, or the one a new session
        # gets (the Realtime protocol has no event to tell the client one the server made)
        start = start.model_copy(update={"resume_secret": self.resume_secret})
        try:
            await self.gw.start_session(self, start)
        except p.ProtocolError as exc:
            self.tr.open_failed()
            raise rt.RealtimeError(exc.code.value, exc.message, "session_id") from None
        assert self.sid is not None
        self.tr.opened(self.sid)
        self.flush_events()


async def serve_realtime(gw: Gateway, ws: ServerConnection) -> None:
    """One Realtime connection, from `session.created` to the socket's close."""
    assert ws.request is not None
    query = parse_qs(urlsplit(ws.request.path).query)
    model = (query.get("model") or [DEFAULT_MODEL])[0]
    resume = query["session_id"][0] if query.get("session_id") else None
    secret = query["resume_secret"][0] if query.get("resume_secret") else None
    if resume is not None:
        try:
            validate_id(resume)
        except BadSessionId as exc:
            await ws.send(rt.error_event(rt.RealtimeError("bad_session_id", str(exc), "session_id")).dump())
            await ws.close(1008, "bad session_id")
            return
    conn = RealtimeConn(ws, gw, Translator(model, gw.settings.sample_rate, resume), secret)
    async with gw.connection(conn):
        conn.send(conn.tr.created().dump())
        async for frame in ws:
            try:
                await conn.on_frame(frame)
            except rt.RealtimeError as exc:
                conn.error(exc)
            except Exception:
                log.exception("failed handling a Realtime event", extra={"session": conn.sid})
                conn.error(
                    rt.RealtimeError("internal", "internal error handling that event", kind="server_error")
                )
