"""The resource service's Redis API: stream/key names, typed messages (shared codec), and the
record each service publishes of itself.

One resource service runs per GPU host, each with its own `service_id`
(`JARVIS_RESOURCE_SERVICE_ID`) and managing only the models of its own registry. Each one
keeps `resource:alive:{service_id}` fresh (a TTL key holding its `ServiceRecord`, JSON: which
models it manages and which are resident there, and its instance id) and names itself in the set
`resource:services`. Requests go to the service's own stream `resource:req:{service_id}`
(consumer group `resource`); the client (`client.py`) reads the records and sends each model's
request to the service that manages it, preferring one where it is already resident. Replies are
XADDed to the `reply_to` stream the request names (the client makes one per request; every
service it asked replies there; it expires after `reply_ttl_s`). Model lifecycle events go to
`resource:events`. No live record: no resource service, nothing to arbitrate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from shared.codec import message

SERVICES = "resource:services"  # set of service ids (a member whose alive key is gone is dead)
GROUP = "resource"
EVENTS = "resource:events"


def alive_key(service_id: str) -> str:
    return f"resource:alive:{service_id}"


def requests_stream(service_id: str) -> str:
    return f"resource:req:{service_id}"


def reply_stream(request_id: str) -> str:
    return f"resource:reply:{request_id}"


class ServiceRecord(BaseModel):
    """What a resource service says of itself on every heartbeat (`alive_key`, JSON)."""

    service_id: str
    instance: str  # random per process: a changed one means the service restarted
    host: str  # the machine's name
    pid: int
    backend: str  # the GPU backend: nvml | simulated
    started: float  # wall clock
    beat: float  # wall clock of this beat
    models: list[str]  # the registry's models: the ones this service manages
    resident: dict[str, str] = Field(default_factory=dict)  # model -> starting | ready | sleeping | stopping


# ---- requests (client -> resource:req) ----------------------------------------------


@message("res.ensure")
@dataclass(slots=True)
class EnsureModels:
    """Make `models` resident; with a `holder`, pin them for it until ReleaseModels / expiry."""

    request_id: str
    models: list[str]
    priority: str  # "turn" | "prewarm"
    holder: str | None
    reply_to: str
    ttl_s: float = 0.0  # the hold's lifetime; 0: the service default (hold_ttl_s)
    ts: float = 0.0


@message("res.release")
@dataclass(slots=True)
class ReleaseModels:
    holder: str
    ts: float = 0.0


@message("res.renew")
@dataclass(slots=True)
class RenewHold:
    """Extend a holder's pin (a turn that runs longer than its hold's TTL)."""

    holder: str
    ttl_s: float = 0.0
    ts: float = 0.0


@message("res.status")
@dataclass(slots=True)
class Status:
    reply_to: str
    request_id: str = ""
    ts: float = 0.0


@message("res.load")
@dataclass(slots=True)
class Load:
    """Load one model at prewarm priority, pinned by nobody (replies like EnsureModels)."""

    model: str
    reply_to: str
    request_id: str = ""
    ts: float = 0.0


@message("res.unload")
@dataclass(slots=True)
class Unload:
    model: str
    reply_to: str
    request_id: str = ""
    force: bool = False  # unload even while a holder pins it
    ts: float = 0.0


# ---- replies (resource service -> reply_to) ----------------------------------------


@message("res.progress")
@dataclass(slots=True)
class ModelProgress:
    request_id: str
    model: str
    state: str  # queued | evicting | starting | loading | ready | failed
    progress: float  # 0..1
    eta_s: float  # seconds until this model is expected ready
    message: str = ""
    ts: float = 0.0


@message("res.done")
@dataclass(slots=True)
class EnsureDone:
    """The end of an EnsureModels / Load / Unload."""

    request_id: str
    ok: bool
    error: str = ""
    # "" when ok; else wont_fit | busy | conflict | unknown_model | start_failed | in_use | stale | error
    code: str = ""
    started: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    ts: float = 0.0


@message("res.status.reply")
@dataclass(slots=True)
class StatusReply:
    request_id: str
    service_id: str
    gpus: list[dict[str, Any]]  # index, name, backend, total/used/free/available/reserve_mib, queued
    residents: list[dict[str, Any]]  # model, device, state, footprint_mib, held_by, expires_in_s, ...
    holders: list[dict[str, Any]]  # holder, models, expires_in_s
    models: dict[str, dict[str, Any]]  # the registry: footprint_mib, sticky, group, runtime
    ts: float = 0.0


# ---- events (resource service -> resource:events) ----------------------------------


@message("res.event")
@dataclass(slots=True)
class ModelEvent:
    model: str
    state: str  # ready | unloaded | failed | restarting
    message: str
    service_id: str
    ts: float = 0.0
