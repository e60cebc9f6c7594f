"""Settings of the resource service (env prefix `JARVIS_RESOURCE_`) and its model registry.

The registry maps a model id to how its server is started (a Docker container, a local
process, or a simulated one for tests), what GPU memory it takes, and how it may be
evicted. It comes from, in order: `JARVIS_RESOURCE_REGISTRY` (inline JSON), the file
named by `JARVIS_RESOURCE_REGISTRY_FILE` (`.json` or `.toml`), else `DEFAULT_REGISTRY`.

Footprints: a model's GPU footprint is the calibrated figure from the calibration file
that `jarvis calibrate` writes (plus `calibration_margin_pct`), else the declared
`footprint_mib`.

Groups (after llama-swap's groups, documented in docs/RESOURCE.md):
- models of one group may live together; when space is needed the planner evicts idle
  models of *other* groups before idle models of the requesting models' own groups;
- `swap = true`: at most one member resident at a time (loading one evicts the others);
- `exclusive = true`: loading a member evicts every idle, evictable model of other groups,
  even when memory would allow them to stay (a big model that wants the GPU alone);
- `persistent = true`: members are never evicted to make room for another group (they still
  expire on keep-alive and may be swapped within their own group).
A model with no group is its own group. `sticky` models are never evicted and never expire
(only an explicit unload removes them).
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

OWNER_LABEL = "jarvis.owner"
MODEL_LABEL = "jarvis.model"
DEVICE_LABEL = "jarvis.device"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DockerSpec(_Spec):
    """A model server in a container (docker SDK)."""

    kind: Literal["docker"] = "docker"
    image: str
    command: list[str] | str | None = None
    entrypoint: list[str] | str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    # container port -> host port (None: a random host port), e.g. {"8000/tcp": 8000}
    ports: dict[str, int | None] = Field(default_factory=dict)
    # GPU device request: "device" (the planner's device), "all", a count, or a list of
    # device ids/UUIDs; None: no GPU
    gpus: Literal["device", "all"] | int | list[str] | None = "device"
    volumes: list[str] = Field(default_factory=list)  # "host:container[:ro]"
    network: str | None = None
    name: str | None = None  # container name; default "jarvis-<model id>"
    labels: dict[str, str] = Field(default_factory=dict)
    shm_size: str | None = None
    # Health: an HTTP URL that answers 2xx when ready, else a command run inside the
    # container (exit 0 = ready), else the image's own HEALTHCHECK, else "running".
    health_url: str | None = None
    health_cmd: list[str] | None = None


class ProcessSpec(_Spec):
    """A model server as a local process (its own process group)."""

    kind: Literal["process"] = "process"
    argv: list[str]
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    health_url: str | None = None  # None: ready as soon as it runs ("running")

    @field_validator("argv")
    @classmethod
    def _argv(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("argv must not be empty")
        # "{python}" stands for the interpreter running the resource service
        return [sys.executable if a == "{python}" else a for a in v]


class SimulatedSpec(_Spec):
    """A pretend server for tests: pairs with `SimulatedGpu`."""

    kind: Literal["simulated"] = "simulated"
    start_s: float = 0.0  # time to become healthy
    fail: bool = False  # never becomes healthy
    ready_fraction: float = Field(default=1.0, ge=0.0, le=1.0)  # of the footprint taken at ready
    release_s: float = 0.0  # memory lingers this long after a stop (like a CUDA context teardown)


RuntimeSpec = Annotated[DockerSpec | ProcessSpec | SimulatedSpec, Field(discriminator="kind")]


class ModelSpec(_Spec):
    runtime: RuntimeSpec
    footprint_mib: int = Field(ge=0)  # declared; calibration overrides it
    sticky: bool = False
    keep_alive_s: float | None = None  # None: settings default; < 0: never expires; 0: unload once idle
    group: str | None = None  # None: its own group (named like the model)
    reload_cost_s: float = Field(default=10.0, ge=0.0)  # expected time to start; ETA and eviction order
    device: int | None = None  # GPU index; None: settings.device
    preload: bool = False  # start at service start (prewarm priority)
    # In-process adapter for `jarvis calibrate` ("module:Class"); None: calibrate via the runtime.
    adapter: str | None = None


class GroupSpec(_Spec):
    swap: bool = False
    exclusive: bool = False
    persistent: bool = False


class Registry(_Spec):
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    groups: dict[str, GroupSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _groups_known(self) -> Registry:
        for mid, m in self.models.items():
            if m.group is not None and m.group in self.models and m.group != mid:
                raise ValueError(f"model {mid!r}: group name {m.group!r} is also a model id")
        return self

    def group_of(self, model: str) -> str:
        return self.models[model].group or model

    def group_spec(self, group: str) -> GroupSpec:
        return self.groups.get(group, GroupSpec())

    @classmethod
    def load(cls, path: Path) -> Registry:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        return cls.model_validate(data)


# The GPU profile: edit or replace with a registry file. Footprints are rough defaults
# until `jarvis calibrate` measures them on the actual GPU.
DEFAULT_REGISTRY: dict[str, Any] = {
    "models": {
        "whisper": {
            "runtime": {
                "kind": "process",
                "argv": ["{python}", "-m", "services.stt"],
                "env": {"JARVIS_STT_DEVICE": "cuda", "JARVIS_STT_COMPUTE_TYPE": "float16"},
            },
            "footprint_mib": 1500,
            "group": "speech",
            "reload_cost_s": 8,
            "adapter": "services.stt.whisper:WhisperStt",
        },
        "chatterbox": {
            "runtime": {
                "kind": "process",
                "argv": ["{python}", "-m", "services.tts"],
                "env": {"JARVIS_TTS_ENGINE": "chatterbox"},
            },
            "footprint_mib": 4000,
            "group": "speech",
            "reload_cost_s": 15,
            "adapter": "services.tts.chatterbox:ChatterboxTts",
        },
        "llm": {
            "runtime": {
                "kind": "docker",
                "image": "vllm/vllm-openai:latest",
                "command": [
                    "--model", "Qwen/Qwen2.5-7B-Instruct-AWQ",
                    "--gpu-memory-utilization", "0.45",
                    "--max-model-len", "8192",
                ],
                "ports": {"8000/tcp": 8000},
                "shm_size": "2g",
                "volumes": ["~/.cache/huggingface:/root/.cache/huggingface"],
                "health_url": "http://127.0.0.1:8000/health",
            },
            "footprint_mib": 11000,
            "group": "chat",
            "reload_cost_s": 60,
        },
    },
    "groups": {"speech": {}, "chat": {}},
}


def default_calibration_file() -> Path:
    return Path("~/.cache/jarvis/calibration.json").expanduser()


def default_log_dir() -> Path:
    return Path("~/.cache/jarvis/logs").expanduser()


class ResourceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JARVIS_RESOURCE_", extra="ignore")

    service_id: str = "resource"  # Docker label jarvis.owner=<service_id>; one per GPU host
    gpu_backend: Literal["nvml", "simulated", "auto"] = "auto"
    simulated_gpu_mib: int = Field(default=24576, ge=0)
    simulated_foreign_mib: int = Field(default=0, ge=0)
    device: int = Field(default=0, ge=0)
    calibration_file: Path = Field(default_factory=default_calibration_file)
    calibration_margin_pct: float = Field(default=10.0, ge=0.0)
    registry_file: Path | None = None
    registry: Registry | None = None  # inline JSON; wins over registry_file
    reserve_mib: int = Field(default=512, ge=0)  # never handed out: CUDA contexts, fragmentation
    keep_alive_s: float = 300.0  # default for models without their own
    hold_ttl_s: float = Field(default=120.0, gt=0)  # a holder's pin expires unless renewed
    release_wait_s: float = Field(default=30.0, ge=0)  # wait for NVML to show a stop's memory free
    busy_wait_s: float = Field(default=30.0, ge=0)  # a request blocked by held models waits this long
    health_timeout_s: float = Field(default=600.0, gt=0)  # a start must be healthy within this
    health_interval_s: float = Field(default=5.0, gt=0)  # periodic liveness of resident models
    health_request_timeout_s: float = Field(default=3.0, gt=0)  # one health probe
    stop_grace_s: float = Field(default=10.0, ge=0)  # SIGTERM / docker stop, then kill
    max_restarts: int = Field(default=3, ge=0)  # restarts of a dead model within restart_window_s
    restart_window_s: float = 600.0
    adopt: bool = True  # on start: adopt our leftover containers/processes (else remove them)
    stop_on_exit: bool = True  # stop every model when the service exits
    log_dir: Path = Field(default_factory=default_log_dir)  # process runtime stdout/stderr
    state_dir: Path = Field(default_factory=lambda: Path("~/.cache/jarvis/resource").expanduser())
    heartbeat_ttl_s: float = Field(default=5.0, gt=0)
    request_max_age_s: float = 60.0  # requests older than this (service was down) are dropped
    reply_ttl_s: int = 300  # reply streams expire

    def load_registry(self) -> Registry:
        if self.registry is not None:
            return self.registry
        if self.registry_file is not None:
            return Registry.load(Path(self.registry_file).expanduser())
        return Registry.model_validate(DEFAULT_REGISTRY)
