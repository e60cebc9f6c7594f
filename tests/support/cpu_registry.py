"""The CPU profile's real models as the resource service's registry, on a simulated GPU.

What a user writes to arbitrate the CPU models (a registry file plus the orchestrator's role map),
made here for a stack under test: each model is a process-runtime server with a GPU footprint,
the device is simulated (there is no GPU to measure), and it is sized so that the `sts`
pipeline fits but switching to `vision` must evict the idle chat model to load its own:

    model            runtime                                       footprint
    whisper          python -m services.stt (Whisper base)           600 MiB
    smollm2          llama.cpp's server, SmolLM2-135M (sts, chat)    800 MiB
    smollm2-vision   a second such server (the vision pipeline)      800 MiB
    piper            python -m services.tts (Piper)                  300 MiB

    GPU 2560 MiB, reserve 512: sts needs 1700 of 2048; vision beside it needs 2500.

The CPU profile has no vision model: the vision pipeline's `vlm` role is served by SmolLM2 from
a server of its own, so its turns must be text-only (no image), which is all arbitration needs,
a model that the other pipeline does not use. The STT and TTS workers have no health endpoint:
they count as ready once running, and join their job streams when their model has loaded (jobs
wait in the stream meanwhile).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jarvis.redis_server import free_port
from services.llm.llamacpp import MODEL_ALIAS, server_command

ROOT = Path(__file__).resolve().parents[2]

GPU_MIB = 2560
RESERVE_MIB = 512
FOOTPRINTS = {"whisper": 600, "smollm2": 800, "smollm2-vision": 800, "piper": 300}
TURN_MODELS = {"stt": "whisper", "llm": "smollm2", "vlm": "smollm2-vision", "tts": "piper"}
LLM_START_S = 8.0  # a llama.cpp server with SmolLM2 on 2 busy cores: imports, then the GGUF


def registry(llm_port: int, vlm_port: int) -> dict[str, Any]:
    """The registry (as `JARVIS_RESOURCE_REGISTRY_FILE` reads it) with the LLM servers on these ports."""

    def worker(module: str, *args: str) -> dict[str, Any]:
        return {"kind": "process", "argv": ["{python}", "-m", module, *args], "cwd": str(ROOT)}

    def llm_server(port: int) -> dict[str, Any]:
        return {
            "kind": "process",
            # a request that arrives while another streams waits for it, instead of cutting it short
            "argv": [*server_command(port, python="{python}"), "--interrupt_requests", "False"],
            "cwd": str(ROOT),
            # It listens only once the model has loaded. Not /v1/models: every model route takes the
            # model's lock, so the resource service's periodic probe would wait behind a streamed
            # reply, or (interrupt_requests on, llama-cpp-python's default) cut it off.
            "health_url": f"http://127.0.0.1:{port}/openapi.json",
        }

    runtimes = {
        "whisper": worker("services.stt", "--concurrency", "2"),  # a partial never holds up the final
        "smollm2": llm_server(llm_port),
        "smollm2-vision": llm_server(vlm_port),
        "piper": worker("services.tts"),
    }
    return {
        "models": {
            model: {
                "runtime": runtimes[model],
                "footprint_mib": FOOTPRINTS[model],
                "reload_cost_s": LLM_START_S if model.startswith("smollm2") else 1.0,
            }
            for model in FOOTPRINTS
        }
    }


def arbitrated_env(workdir: Path) -> dict[str, str]:
    """Write the registry under `workdir` (free ports for its LLM servers) and return the stack's
    environment: the resource service on the simulated GPU with that registry (its logs and state
    under `workdir`), the orchestrator's role map, and the LLM and VLM workers pointed at the
    servers it starts (SmolLM2 settings: words, not tools, at a low temperature)."""
    llm_port, vlm_port = free_port(), free_port()
    path = Path(workdir) / "registry.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(registry(llm_port, vlm_port), indent=2))
    env = {
        "JARVIS_RESOURCE_GPU_BACKEND": "simulated",
        "JARVIS_RESOURCE_SIMULATED_GPU_MIB": str(GPU_MIB),
        "JARVIS_RESOURCE_RESERVE_MIB": str(RESERVE_MIB),
        "JARVIS_RESOURCE_REGISTRY_FILE": str(path),
        "JARVIS_RESOURCE_LOG_DIR": str(Path(workdir) / "logs"),
        "JARVIS_RESOURCE_STATE_DIR": str(Path(workdir) / "resource"),
        "JARVIS_RESOURCE_CALIBRATION_FILE": str(Path(workdir) / "resource" / "calibration.json"),
        "JARVIS_RESOURCE_STOP_GRACE_S": "3",  # its models stop well within the launcher's grace
        "JARVIS_TURN_MODELS": json.dumps(TURN_MODELS),
    }
    for prefix, port in (("JARVIS_LLM_", llm_port), ("JARVIS_VLM_", vlm_port)):
        env[f"{prefix}BASE_URL"] = f"http://127.0.0.1:{port}/v1"
        env[f"{prefix}MODEL"] = MODEL_ALIAS
        env[f"{prefix}TOOLS_ENABLED"] = "false"  # SmolLM2-135M calls tools at random when offered them
        env[f"{prefix}TEMPERATURE"] = "0.2"  # and stays coherent only at a low temperature
    return env


def state_file(workdir: Path) -> Path:
    """Where the resource service records the pids of the servers it runs (service id `resource`)."""
    return Path(workdir) / "resource" / "processes-resource.json"
