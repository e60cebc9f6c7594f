"""The gateway: one WebSocket per client session, bridged to the session's Redis streams.

In: JSON commands are validated against `shared.protocol`; `start` goes to the `ctl`
stream (an orchestrator takes the session), everything else and every audio/image
frame goes to `in:{sid}` in arrival order, batched into one pipelined round trip per tick.
Out: one XREAD over every connected session's `out:{sid}` (plus a wake-up stream for
joins) forwards events and reply audio in order, each JSON event carrying its stream id
so a client can resume where it left off. Bad input gets an `error` event; it never
closes another session or crashes the process.

Security: browsers' `Origin` is checked against an allow-list at the handshake; session ids
are issued here, each with a resume secret (told once, in `ready`; only its hash is kept), and
resuming a session takes that secret: no one else gets its history or its event replay.
Bounds: a connection must `start` within `JARVIS_START_TIMEOUT_S`, options are size-capped,
audio may run ahead of real time by `JARVIS_AUDIO_BURST_S` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mimetypes
import re
import time
import uuid
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from services.gateway.auth import allowed, token_of
from services.gateway.conn import Conn
from services.gateway.edge import EdgeVad
from services.gateway.publisher import Publisher, Unencodable
from services.gateway.realtime import PATH as REALTIME_PATH
from services.gateway.realtime.handler import serve_realtime
from shared import codec
from shared import protocol as p
from shared.bus import Bus
from shared.config import Settings
from shared.messages import (
    CTL,
    Audio,
    Command,
    Detached,
    Image,
    ScoredAudio,
    SessionStart,
    Wake,
    in_stream,
    out_stream,
    secret_key,
    sid_of,
    wake_stream,
)
from shared.ratelog import RateLimitedLog
from shared.sessions import (
    BadSessionId,
    Session,
    hash_secret,
    new_id,
    new_secret,
    secret_matches,
    validate_id,
)
from shared.vad import SileroVad

log = logging.getLogger("jarvis.gateway")
_log = RateLimitedLog(log)

FRAMES_IN = Counter("jarvis_gateway_frames_in_total", "Frames from clients", ["kind"])
ERRORS = Counter("jarvis_gateway_errors_total", "Error events sent to clients", ["code"])
CONNECTIONS = Gauge("jarvis_gateway_connections", "Open client connections")
_IN_TEXT, _IN_BINARY = FRAMES_IN.labels("text"), FRAMES_IN.labels("binary")  # bound once: per-frame path
OUT_LAG = Histogram(
    "jarvis_gateway_out_lag_seconds",
    "Redis entry written -> handed to the socket",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
)

WEB_DIR = Path(__file__).parent / "web"
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
MIN_SECRET = 16  # characters of a resume secret a client chooses itself
_IMAGE_MAGIC = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG": "image/png"}


class Gateway:
    def __init__(self, settings: Settings, bus: Bus) -> None:
        self.settings = settings
        self.bus = bus
        self.id = f"gw-{uuid.uuid4().hex[:8]}"
        self.wake = wake_stream(self.id)
        self.publisher = Publisher(bus, max_age_s=settings.publish_buffer_s)
        self.edge: EdgeVad | None = None  # Silero at the edge (loaded at start unless turned off)
        self.conns: dict[str, Conn] = {}
        self._client_vad: dict[str, bool] = {}  # sid -> its start announced client VAD
        self._reader: asyncio.Task | None = None
        self.origins = allowed_origins(settings)

    # ---- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self.publisher.start()
        if self.settings.edge_vad:
            try:
                vad = await asyncio.to_thread(SileroVad)
            except (FileNotFoundError, OSError, ValueError) as exc:
                log.warning("no Silero VAD here (%s): audio goes on frame by frame", exc)
            else:
                self.edge = EdgeVad(vad, self.settings, self._put_scored)
                self.edge.start()
        self._reader = asyncio.create_task(self._read_out(), name="out-reader")

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
        if self.edge is not None:
            await self.edge.close()
        await self.publisher.close()
        await self.bus.redis.delete(self.wake)

    # ---- HTTP side: auth at the handshake, the web client, health ------------------

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if request.headers.get("Upgrade", "").lower() != "websocket":
            if path == "/healthz":
                return await self._health(connection)
            return self._http(connection, path)
        origin = request.headers.get("Origin")
        if origin is not None and "*" not in self.origins and origin.lower() not in self.origins:
            # a page of another site driving this gateway from a user's browser (cross-site
            # WebSocket hijacking); clients that are not browsers send no Origin
            _log.warning("origin", "refused a connection from origin %r (JARVIS_ALLOWED_ORIGINS)", origin)
            return connection.respond(HTTPStatus.FORBIDDEN, "origin not allowed\n")
        if not allowed(self.settings.auth_token, token_of(request.path, request.headers)):
            _log.warning(
                "token",
                "refused a connection without a valid token",
                extra={"peer": str(connection.remote_address)},
            )
            return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
        return None

    async def _health(self, connection: ServerConnection) -> Response:
        """Healthy when Redis answers: without it no session can work."""
        try:
            await asyncio.wait_for(self.bus.redis.ping(), 1.0)
        except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
            return connection.respond(
                HTTPStatus.SERVICE_UNAVAILABLE, f"redis unreachable: {type(exc).__name__}\n"
            )
        return connection.respond(HTTPStatus.OK, "ok\n")

    def _http(self, connection: ServerConnection, path: str) -> Response:
        name = "index.html" if path in ("/", "") else path.lstrip("/")
        target = (WEB_DIR / name).resolve()
        if WEB_DIR.resolve() not in target.parents or not target.is_file():
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        body = target.read_bytes()
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".js":
            ctype = "text/javascript"
        headers = Headers(
            [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", "no-cache")]
        )
        return Response(HTTPStatus.OK.value, "OK", headers, body)

    # ---- one connection ---------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.path.split("?", 1)[0] == REALTIME_PATH:
            await serve_realtime(self, ws)
            return
        conn = Conn(ws)
        async with self.connection(conn):
            async for frame in ws:
                try:
                    if type(frame) is bytes:
                        _IN_BINARY.inc()
                        self._on_binary(conn, frame)
                    else:
                        _IN_TEXT.inc()
                        await self._on_text(conn, frame if isinstance(frame, str) else frame.decode())
                except p.ProtocolError as exc:
                    self._error(conn, exc.code, exc.message)
                except Exception as exc:
                    _log.error(
                        f"frame:{type(exc).__name__}",
                        "failed handling a client frame",
                        exc_info=True,
                        extra={"session": conn.sid},
                    )
                    self._error(conn, p.ErrorCode.INTERNAL, "internal error handling that message")

    @contextlib.asynccontextmanager
    async def connection(self, conn: Conn) -> AsyncIterator[Conn]:
        """A connection's lifetime, whatever its protocol: its writer runs, and when the socket
        closes its session is told the client is gone (it stays resumable)."""
        CONNECTIONS.inc()
        writer = asyncio.create_task(conn.write())
        deadline = asyncio.create_task(self._start_deadline(conn))
        try:
            yield conn
        except ConnectionClosed:
            pass
        finally:
            CONNECTIONS.dec()
            writer.cancel()
            deadline.cancel()
            if conn.sid and self.conns.get(conn.sid) is conn:
                del self.conns[conn.sid]
                self._client_vad.pop(conn.sid, None)
                if self.edge is not None:
                    self.edge.end(conn.sid)
                self.publisher.put(in_stream(conn.sid), Detached(time.time()), self.settings.in_maxlen)

    async def _start_deadline(self, conn: Conn) -> None:
        """Close a connection that opens no session in time (it would hold a socket forever)."""
        await asyncio.sleep(self.settings.start_timeout_s)
        if not conn.started:
            with contextlib.suppress(Exception):
                await conn.ws.close(1008, f"no session started within {self.settings.start_timeout_s:.0f}s")

    def command(self, sid: str, msg: BaseModel, ts: float | None = None) -> None:
        """A validated client command into the session's input (ProtocolError if it can't be
        written: that message alone fails)."""
        body = msg.model_dump(mode="json")
        edge = self.edge
        if edge is not None:
            if isinstance(msg, p.Stop):
                self._client_vad.pop(sid, None)
                edge.end(sid)
            elif isinstance(msg, p.Config) and msg.trigger is not None:
                edge.end(sid)  # the new trigger decides whether the gateway scores this session
                if msg.trigger is not p.Trigger.MANUAL and not self._client_vad.get(sid, False):
                    edge.open(sid)
            else:
                edge.drain(sid)  # the audio before this command reaches the session before it
        try:
            self.publisher.put(in_stream(sid), Command(body, ts or time.time()), self.settings.in_maxlen)
        except Unencodable as exc:
            raise p.ProtocolError(p.ErrorCode.INVALID, f"this message can't be relayed: {exc}") from None

    def audio(self, sid: str, pcm: bytes, ts: float | None = None, conn: Conn | None = None) -> None:
        """PCM16 at the session's rate into the session's input; audio faster than real time
        beyond the burst allowance is refused (ProtocolError)."""
        if conn is not None and not conn.admit_audio(
            len(pcm) // 2, self.settings.sample_rate, self.settings.audio_burst_s
        ):
            raise p.ProtocolError(
                p.ErrorCode.RATE_LIMITED,
                f"audio is arriving faster than real time (more than {self.settings.audio_burst_s:.0f}s "
                "ahead); this frame was dropped",
            )
        edge = self.edge
        if edge is not None and edge.has(sid):
            edge.audio(sid, pcm, ts or time.time())
        else:
            self.publisher.put(in_stream(sid), Audio(pcm, ts or time.time()), self.settings.in_maxlen)

    def _put_scored(self, sid: str, msg: ScoredAudio) -> None:
        self.publisher.put(in_stream(sid), msg, self.settings.in_maxlen)

    def _edge_session(self, sid: str, msg: p.Start) -> None:
        """Score `sid`'s audio here if it uses server VAD (its trigger, or its pipeline's)."""
        self._client_vad[sid] = msg.client_vad
        if self.edge is None:
            return
        self.edge.end(sid)
        trigger = msg.trigger or p.PIPELINE_TRIGGERS.get(msg.pipeline, p.Trigger.VAD)
        if trigger is not p.Trigger.MANUAL and not msg.client_vad:
            self.edge.open(sid)

    def check_options(self, options: dict) -> None:
        size = len(json.dumps(options, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        if size > self.settings.max_options_bytes:
            raise p.ProtocolError(
                p.ErrorCode.INVALID,
                f"options of {size} bytes are over the {self.settings.max_options_bytes}-byte limit",
            )

    def _error(self, conn: Conn, code: p.ErrorCode, message: str) -> None:
        ERRORS.labels(code.value).inc()
        conn.send(p.dump(p.Error(code=code, message=message)))

    async def _on_text(self, conn: Conn, raw: str) -> None:
        msg = p.parse_client_frame(raw)
        if isinstance(msg, p.Start):
            await self.start_session(conn, msg)
            return
        if conn.sid is None:
            raise p.ProtocolError(p.ErrorCode.NO_SESSION, f"send 'start' before '{msg.type}'")
        if isinstance(msg, p.Config):
            self.check_options(msg.options)
            if msg.pipeline is not None and msg.pipeline not in p.PIPELINE_NAMES:
                raise p.ProtocolError(
                    p.ErrorCode.UNKNOWN_PIPELINE,
                    f"unknown pipeline {msg.pipeline!r}; have {sorted(p.PIPELINE_NAMES)}",
                )
        self.command(conn.sid, msg)
        if isinstance(msg, p.Stop):
            self.conns.pop(conn.sid, None)
            conn.sid = None

    async def start_session(self, conn: Conn, msg: p.Start) -> None:
        """Open or resume the session `msg` names on `conn` (an orchestrator takes it from `ctl`)."""
        if conn.sid is not None:
            raise p.ProtocolError(
                p.ErrorCode.SESSION_ACTIVE, "this connection already has a session; send 'stop' first"
            )
        if msg.sample_rate != self.settings.sample_rate:
            raise p.ProtocolError(
                p.ErrorCode.BAD_RATE,
                f"audio must be PCM16 mono at {self.settings.sample_rate} Hz, not {msg.sample_rate}",
            )
        if msg.pipeline not in p.PIPELINE_NAMES:
            raise p.ProtocolError(
                p.ErrorCode.UNKNOWN_PIPELINE,
                f"unknown pipeline {msg.pipeline!r}; have {sorted(p.PIPELINE_NAMES)}",
            )
        self.check_options(msg.options)
        if msg.last_event_id is not None and not _STREAM_ID.fullmatch(msg.last_event_id):
            raise p.ProtocolError(p.ErrorCode.INVALID, "last_event_id must look like '1700000000000-0'")
        if msg.session_id:
            sid = await self._check_resume(msg.session_id, msg.resume_secret)
            secret = msg.resume_secret
        else:  # ids are issued here: a client can't pick one (nor guess another's)
            sid = new_id()
            secret, digest = new_secret()
            if msg.resume_secret:  # the client's own (the Realtime endpoint's query parameter)
                if len(msg.resume_secret) < MIN_SECRET:
                    raise p.ProtocolError(
                        p.ErrorCode.INVALID, f"a resume_secret of your own needs {MIN_SECRET}+ characters"
                    )
                secret, digest = msg.resume_secret, hash_secret(msg.resume_secret)
            await self.bus.retry(
                lambda: self.bus.redis.set(secret_key(sid), digest, ex=self.settings.resume_ttl_s, nx=True)
            )
        try:
            start = SessionStart(
                sid=sid,
                pipeline=msg.pipeline,
                trigger=msg.trigger.value if msg.trigger else None,
                sample_rate=msg.sample_rate,
                client_vad=msg.client_vad,
                options=msg.options,
                resume=msg.session_id is not None,
                ts=time.time(),
            )
            payload = codec.encode(start)
        except (ValueError, TypeError) as exc:  # e.g. a lone surrogate in the options
            raise p.ProtocolError(p.ErrorCode.INVALID, f"this start can't be relayed: {exc}") from None
        out = out_stream(sid)
        if msg.last_event_id:
            start_id: bytes | str = msg.last_event_id
        else:  # only what comes after this start
            last = await self.bus.retry(lambda: self.bus.redis.xrevrange(out, count=1))
            start_id = last[0][0] if last else "0-0"
        previous = self.conns.get(sid)
        if previous is not None and previous is not conn:
            previous.sid = None
            # not awaited: a dead peer would hold this start up for the close timeout
            asyncio.ensure_future(previous.ws.close(4001, "session taken over by another connection"))
        conn.sid, conn.last_id, conn.secret, conn.started = sid, start_id, secret, True
        self.conns[sid] = conn
        self._edge_session(sid, msg)
        await self.bus.add_encoded([(self.wake, codec.encode(Wake("join")), 16), (CTL, payload, 10000)])
        log.info("session started", extra={"session": sid, "resume": start.resume})

    async def _check_resume(self, session_id: str, secret: str | None) -> str:
        """The session id, if it names a session and `secret` is its resume secret."""
        try:
            sid = validate_id(session_id)
        except BadSessionId as exc:
            raise p.ProtocolError(p.ErrorCode.BAD_SESSION_ID, str(exc)) from None
        raw = await self.bus.retry(lambda: self.bus.redis.get(secret_key(sid)))
        digest = raw.decode() if raw is not None else await self._saved_digest(sid)
        if digest is None:
            raise p.ProtocolError(
                p.ErrorCode.BAD_SESSION_ID,
                "no session with that id (ids are issued by the server: start without one for a new session)",
            )
        if not secret_matches(secret, digest):
            _log.warning(
                "resume-secret", "refused a resume without the session's secret", extra={"session": sid}
            )
            raise p.ProtocolError(p.ErrorCode.UNAUTHORIZED, "resuming this session needs its resume_secret")
        return sid

    async def _saved_digest(self, sid: str) -> str | None:
        """The secret's hash from the session file, where this gateway can read the sessions
        folder (`jarvis up`) and Redis no longer has it; put back in Redis for the next time."""
        try:
            session = await asyncio.to_thread(Session.load, self.settings.sessions_dir, sid)
        except (ValueError, OSError):
            return None
        if session is None or not session.secret_hash:
            return None
        digest = session.secret_hash
        await self.bus.retry(
            lambda: self.bus.redis.set(secret_key(sid), digest, ex=self.settings.resume_ttl_s)
        )
        return digest

    def _on_binary(self, conn: Conn, frame: bytes) -> None:
        if conn.sid is None:
            raise p.ProtocolError(p.ErrorCode.NO_SESSION, "send 'start' before audio or images")
        if len(frame) > self.settings.max_frame_bytes:
            raise p.ProtocolError(
                p.ErrorCode.FRAME_TOO_LARGE,
                f"frame of {len(frame)} bytes is over the {self.settings.max_frame_bytes}-byte limit; "
                "it was dropped",
            )
        if len(frame) < 2:
            raise p.ProtocolError(p.ErrorCode.BAD_FRAME, "binary frames are a 1-byte kind tag and a payload")
        kind, payload = frame[0], frame[1:]
        now = time.time()
        if kind == p.AUDIO:
            if len(payload) % 2:
                raise p.ProtocolError(
                    p.ErrorCode.BAD_FRAME, "audio must be whole PCM16 samples (even byte count)"
                )
            self.audio(conn.sid, payload, now, conn)
        elif kind == p.IMAGE:
            mime = next((m for magic, m in _IMAGE_MAGIC.items() if payload.startswith(magic)), None)
            if mime is None:
                raise p.ProtocolError(p.ErrorCode.BAD_FRAME, "images must be JPEG or PNG")
            self.publisher.put(in_stream(conn.sid), Image(bytes(payload), mime, now), self.settings.in_maxlen)
        else:
            raise p.ProtocolError(
                p.ErrorCode.BAD_FRAME, f"unknown binary kind 0x{kind:02x} (0x01 audio, 0x02 image)"
            )

    # ---- out streams -> sockets ----------------------------------------------------

    async def _read_out(self) -> None:
        wake_id: bytes | str = "$"
        while True:
            streams: dict[str, bytes | str] = {self.wake: wake_id}
            for sid, conn in self.conns.items():
                streams[out_stream(sid)] = conn.last_id
            try:
                entries = await self.bus.read(streams, block_ms=self.settings.block_ms, count=512)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("out reader failed; retrying")
                await asyncio.sleep(0.2)
                continue
            now_ms = time.time() * 1000
            for stream, eid, msg in entries:
                if stream == self.wake:
                    wake_id = eid
                    continue
                OUT_LAG.observe(max(0.0, now_ms - int(eid.split(b"-")[0])) / 1000)
                target = self.conns.get(sid_of(stream))
                if target is None:
                    continue
                conn = target
                conn.last_id = eid
                conn.deliver(eid, msg)


def allowed_origins(settings: Settings) -> frozenset[str]:
    """Origins whose pages may open a WebSocket: JARVIS_ALLOWED_ORIGINS, else the gateway's own
    (as the web client it serves is loaded from: its host, localhost, 127.0.0.1 on its port)."""
    if settings.allowed_origins:
        return frozenset(
            o.strip().rstrip("/").lower() for o in settings.allowed_origins.split(",") if o.strip()
        )
    hosts = {settings.host, "localhost", "127.0.0.1", "[::1]"}
    return frozenset(f"{scheme}://{h}:{settings.port}".lower() for h in hosts for scheme in ("http", "https"))


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    bus = Bus.from_settings(settings)
    await bus.wait_ready(timeout=60)
    gw = Gateway(settings, bus)
    await gw.start()
    async with ws_serve(
        gw.handler,
        settings.host,
        settings.port,
        process_request=gw.process_request,
        compression=None,  # permessage-deflate on raw PCM costs CPU and latency for nothing
        max_size=settings.hard_frame_bytes,
        max_queue=64,
        ping_interval=20,
        ping_timeout=20,
        server_header="jarvis",
    ) as server:
        ports = [s.getsockname()[1] for s in server.sockets]
        log.info(
            "listening",
            extra={"host": settings.host, "ports": ports, "auth": settings.auth_token is not None},
        )
        await stop.wait()
    await gw.close()
    await bus.close()
