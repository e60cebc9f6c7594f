"""Settings of the resource service (env prefix `JARVIS_RESOURCE_`) and its model registry.

The registry maps a model id to how its server is started (a Docker container, a local
process, or a simulated one for tests), what GPU memory it takes, and how it may be
evicted. It comes from, in order: `JARVIS_RESOURCE_REGISTRY` (inline JSON), the file
named by `JARVIS_RESOURCE_REGISTRY_FILE` (`.json` or `.toml`), else `DEFAULT_REGISTRY`.

Footprints: a model's GPU footprint is the calibrated figure from the calibration file
that `jarvis calibrate` writes (plus `calibration_margin_pct`), else the declared
`footprint_mib`.

Placeholders in a runtime's `command` / `argv` are filled in when the server starts:
`{gpu_memory_utilization}` (the model's footprint as a fraction of the device's total
memory, for vLLM's `--gpu-memory-utilization`, which is such a fraction and not a size),
`{footprint_mib}` and `{device}`.

Sleep (`sleep`, for vLLM started with `--enable-sleep-mode` and `VLLM_SERVER_DEV_MODE=1`):
instead of stopping an idle model, the planner may put it to sleep (level 1: weights to
host RAM, KV cache dropped) when host memory allows; a sleeping server still holds some
GPU memory (CUDA context, allocator pools: `held_mib`, measured by NVML once asleep), and
wakes in about a second instead of a cold start.

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
    ipc_mode: str | None = None  # "host": what vLLM's image asks for (torch shared memory)
    # Health: an HTTP URL that answers 2xx when ready, else a command run inside the
    # container (exit 0 = ready), else the image's own HEALTHCHECK, else "running".
    # `http://container:<port>/path` names the container's own port: the runtime reaches it
    # at the container's address on the network it shares with this service (in compose),
    # else at the port published on loopback (`ports`), never at its own loopback.
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
    sleep_held_mib: int = Field(default=1024, ge=1)  # what it really holds asleep (the planner estimates)
    wake_s: float = 0.0  # time a wake takes


RuntimeSpec = Annotated[DockerSpec | ProcessSpec | SimulatedSpec, Field(discriminator="kind")]


class SleepSpec(_Spec):
    """A server that can sleep (vLLM's sleep mode: POST /sleep?level=N, /wake_up, GET /is_sleeping)."""

    level: Literal[1, 2] = 1  # 1: weights to host RAM (fast wake); 2: weights dropped (reloaded from disk)
    # GPU memory a sleeping server still holds, until NVML has measured it (reports: 1-7 GiB;
    # never zero: the CUDA context and the allocator's pools stay)
    held_mib: int = Field(default=2048, gt=0)
    host_mib: int = Field(default=0, ge=0)  # host RAM a level-1 sleep takes (the weights); 0: footprint
    wake_s: float = Field(default=1.0, ge=0.0)  # expected wake time (ETA; eviction order)
    # After a wake, one short request so the first real one is not several times slower.
    warmup: bool = True


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
    sleep: SleepSpec | None = None  # None: it cannot sleep (it is stopped when evicted)


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

    @classmethod
    def load(cls, path: Path) -> Registry:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        return cls.model_validate(data)


# The LLM server of the GPU profile. Its host port is not 8000, where a vLLM of the user's
# own often listens; `JARVIS_LLM_BASE_URL` of the GPU profile (services/llm/config.py) points here.
VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"
VLLM_MODEL = "Qwen/Qwen2.5-7B-Instruct-AWQ"
LLM_SERVED_NAME = "jarvis-llm"
LLM_HOST_PORT = 8100
LLM_CONTAINER_PORT = 8000


def vllm_command(
    model: str = VLLM_MODEL,
    served_name: str = LLM_SERVED_NAME,
    max_model_len: int = 8192,
    tool_parser: str | None = "hermes",
) -> list[str]:
    """`vllm serve` arguments for one registry model: its share of the GPU filled in at start,
    tool calling on (the LLM client offers tools by default, and vLLM answers HTTP 400 to
    tools without these flags), sleep mode on."""
    argv = [
        "--model",
        model,
        "--served-model-name",
        served_name,
        "--host",
        "0.0.0.0",
        "--port",
        str(LLM_CONTAINER_PORT),
        "--gpu-memory-utilization",
        "{gpu_memory_utilization}",
        "--max-model-len",
        str(max_model_len),
        "--enable-sleep-mode",
    ]
    if tool_parser:
        argv += ["--enable-auto-tool-choice", "--tool-call-parser", tool_parser]
    return argv


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
            # two replicas (JARVIS_TTS_CHATTERBOX_REPLICAS): two sessions synthesise at once
            "footprint_mib": 7000,
            "group": "speech",
            "reload_cost_s": 15,
            "adapter": "services.tts.chatterbox:ChatterboxTts",
        },
        "llm": {
            "runtime": {
                "kind": "docker",
                "image": VLLM_IMAGE,
                "command": vllm_command(),
                "env": {"VLLM_SERVER_DEV_MODE": "1"},  # serves /sleep, /wake_up, /is_sleeping
                "ports": {f"{LLM_CONTAINER_PORT}/tcp": LLM_HOST_PORT},
                "ipc_mode": "host",
                "volumes": ["~/.cache/huggingface:/root/.cache/huggingface"],
                "health_url": f"http://container:{LLM_CONTAINER_PORT}/health",
            },
            "footprint_mib": 11000,
            "group": "chat",
            "reload_cost_s": 60,
            "sleep": {"level": 1, "held_mib": 2048, "host_mib": 6000, "wake_s": 1.0},
        },
    },
    "groups": {"speech": {}, "chat": {}},
}


def compose_gpu_registry(tag: str = "latest", project: str = "jarvis") -> dict[str, Any]:
    """The gpu profile under compose: every GPU model server is a container the resource service
    starts on the stack's network (jarvis/gpu for Whisper and Chatterbox, vLLM's image), so all
    of them are arbitrated; the workers reach Redis as `redis`, the LLM worker vLLM as `jarvis-llm`."""
    worker_env = {"JARVIS_REDIS_URL": "redis://redis:6379/0", "JARVIS_PROFILE": "gpu"}
    return {
        "models": {
            "whisper": {
                "runtime": {
                    "kind": "docker",
                    "image": f"jarvis/gpu:{tag}",
                    "command": ["python", "-m", "services.stt"],
                    "env": {**worker_env, "JARVIS_STT_DEVICE": "cuda", "JARVIS_STT_COMPUTE_TYPE": "float16"},
                    "volumes": [f"{project}_models:/models"],
                },
                **{
                    k: DEFAULT_REGISTRY["models"]["whisper"][k]
                    for k in ("footprint_mib", "group", "reload_cost_s")
                },
            },
            "chatterbox": {
                "runtime": {
                    "kind": "docker",
                    "image": f"jarvis/gpu:{tag}",
                    "command": ["python", "-m", "services.tts"],
                    "env": {**worker_env, "JARVIS_TTS_ENGINE": "chatterbox", "HF_HOME": "/hf"},
                    "volumes": [f"{project}_hf-cache:/hf"],
                },
                **{
                    k: DEFAULT_REGISTRY["models"]["chatterbox"][k]
                    for k in ("footprint_mib", "group", "reload_cost_s")
                },
            },
            "llm": {
                "runtime": {
                    **DEFAULT_REGISTRY["models"]["llm"]["runtime"],
                    "name": LLM_SERVED_NAME,
                    "ports": {},
                    "volumes": [f"{project}_hf-cache:/root/.cache/huggingface"],
                },
                **{
                    k: DEFAULT_REGISTRY["models"]["llm"][k]
                    for k in ("footprint_mib", "group", "reload_cost_s", "sleep")
                },
            },
        },
        "groups": DEFAULT_REGISTRY["groups"],
    }


REGISTRY_PRESETS = {"host-gpu": lambda: DEFAULT_REGISTRY, "compose-gpu": compose_gpu_registry}


def default_calibration_file() -> Path:
    return Path("~/.cache/jarvis/calibration.json").expanduser()


def default_log_dir() -> Path:
    return Path("~/.cache/jarvis/logs").expanduser()


class ResourceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JARVIS_RESOURCE_", extra="ignore")

    service_id: str = "resource"  # Docker label jarvis.owner=<service_id>; one per GPU host
    # nvml: the real GPU (the service refuses to start without one); simulated: a pretend
    # device of `simulated_gpu_mib`, only when asked for (tests, the GPU check without a GPU)
    gpu_backend: Literal["nvml", "simulated"] = "nvml"
    simulated_gpu_mib: int = Field(default=24576, ge=0)
    simulated_foreign_mib: int = Field(default=0, ge=0)
    simulated_host_mib: int = Field(default=65536, ge=0)  # host RAM free for level-1 sleeps
    device: int = Field(default=0, ge=0)
    calibration_file: Path = Field(default_factory=default_calibration_file)
    calibration_margin_pct: float = Field(default=10.0, ge=0.0)
    registry_file: Path | None = None
    registry: Registry | None = None  # inline JSON; wins over registry_file
    # without a registry or a file: host-gpu (DEFAULT_REGISTRY: local processes + vLLM's
    # container, for `jarvis up`), or compose-gpu (every server a container on the stack's network)
    registry_preset: Literal["host-gpu", "compose-gpu"] = "host-gpu"
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
    # The Docker network model containers join. "auto": the network of the container this
    # service runs in (compose), so it reaches them at their address there; "": none (the
    # engine's default bridge; reached through the ports they publish on loopback).
    docker_network: str = "auto"
    # Host RAM that must stay free after a level-1 sleep moves a model's weights there.
    host_reserve_mib: int = Field(default=4096, ge=0)
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
        return Registry.model_validate(REGISTRY_PRESETS[self.registry_preset]())
