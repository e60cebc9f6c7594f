"""Settings shared by every service, read from the environment with the `JARVIS_` prefix.

Each service adds its own settings class beside its code (e.g. `services/stt/config.py`,
prefix `JARVIS_STT_`); this module holds what several services must agree on.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Profile = Literal["stub", "cpu", "gpu"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JARVIS_", extra="ignore")

    # Which models the workers run: stub (plumbing), cpu (real, offline), gpu (deployment).
    profile: Profile = "cpu"

    # redis://host:port/db (one instance), redis+sentinel://host:port[,host:port...]/service[/db]
    # (the primary Sentinel names `service`, followed across failovers) or
    # redis+cluster://host:port[,host:port...] (a Redis Cluster); see shared/redis_url.py
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Redis socket timeout in seconds; must exceed the longest blocking read (block_ms).
    redis_socket_timeout: float = 30.0
    block_ms: int = 1000

    # Gateway
    host: str = "127.0.0.1"
    port: int = 8765
    auth_token: SecretStr | None = None
    max_frame_bytes: int = 4 << 20  # larger frames get an error event and are dropped
    hard_frame_bytes: int = 16 << 20  # the WebSocket layer closes the connection past this
    sample_rate: int = 16000  # the client's audio rate this deployment accepts
    # browser origins allowed to open a WebSocket (comma-separated; "*" any); default: the
    # gateway's own (http(s)://host:port, localhost and 127.0.0.1). Clients sending no Origin
    # header (not browsers) are not affected.
    allowed_origins: str | None = None
    start_timeout_s: float = 10.0  # a connection that sends no `start` by then is closed
    max_options_bytes: int = 16384  # `options` of a start / config, as JSON
    # audio faster than real time is refused beyond this many seconds ahead of the clock
    audio_burst_s: float = 10.0
    # the most audio one turn is made of: a manual / client-VAD recording is ended at this length,
    # and a server-VAD turn the user continued to this length is answered as it is (speech over
    # it begins the next turn; a turn may hold one stretch of speech more, docs/ARCHITECTURE.md)
    max_recording_s: float = 60.0
    publish_buffer_s: float = 10.0  # while Redis is away, client input older than this is dropped
    # Silero at the edge: the gateway scores its server-VAD sessions' audio (batched across
    # them) and sends it onward only around speech; off, every frame goes on as it came.
    # The gate must cover the turn's settings: `edge_gate` <= JARVIS_TURN_NEG_THRESHOLD, the
    # pre-roll >= JARVIS_TURN_PRE_ROLL_MS, the hangover > the longest pause a turn waits
    # (JARVIS_TURN_END_OF_TURN__CEILING_MS) plus JARVIS_TURN_POST_ROLL_MS.
    edge_vad: bool = True
    edge_gate: float = Field(default=0.3, ge=0, le=1)  # a window this likely speech opens the gate
    edge_pre_roll_ms: float = Field(default=480, ge=0)  # audio kept back to send when the gate opens
    edge_hangover_ms: float = Field(default=2560, ge=0)  # the gate stays open this long after speech
    edge_silence_ms: float = Field(default=1024, gt=0)  # silent windows reported in one entry
    resume_ttl_s: int = 30 * 86400  # a session's resume secret (hashed) is kept this long unused

    # Session storage
    sessions_dir: Path = Path("var/sessions")

    # Streams
    in_maxlen: int = 6000  # ~2 minutes of 20 ms frames; more of audio the gateway scored (32 ms+ entries)
    out_maxlen: int = 4000
    jobs_maxlen: int = 10000
    session_ttl_s: int = 3600  # streams of a session idle this long expire

    # Ownership and reliability
    lease_ms: int = 3000
    job_min_idle_ms: int = 60000  # reclaim a job pending this long (longer than the slowest honest job)
    max_deliveries: int = 3  # then it goes to the dead-letter stream
    # every worker process stamps `workers:{kind}` this often (from a thread of its own); one
    # silent for worker_dead_ms is dead: its jobs are run again and its consumer deleted
    worker_heartbeat_ms: int = 200
    worker_dead_ms: int = 1000
    worker_gone_s: float = 3.0  # a turn waiting on a kind with no live worker this long ends with an error
    # each job kind's stream is split in this many shards (`jobs:{kind}`, `jobs:{kind}:1`...): a
    # session's jobs go to one, every worker reads all; more than 1 spreads them over a cluster's
    # nodes. Every process of a deployment must agree on it.
    job_shards: int = Field(default=1, ge=1, le=64)
    jobs_keep_s: int = 300  # job entries older than this are trimmed (acked ones are deleted at once)

    # Orchestrator
    pipeline: str = "sts"
    # past messages sent to the LLM at most; the window moves in hops of half this
    # (`Session.messages`), so the LLM server's prompt cache holds from turn to turn
    history_window: int = 20

    log_level: str = "INFO"
    metrics_port: int = Field(default=0, description="Prometheus port for this process; 0 = off")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
