"""The resource service in a running stack (simulated GPU): a pipeline whose models don't all
fit beside what is resident forces an eviction, the turn still completes, and the client saw
LOADING with per-model progress."""

import json
import time

import pytest

from services.resource.messages import alive_key
from shared import redis_url
from tests.support.client import Client
from tests.support.stack import running_stack

GPU_MIB = 10_000
REGISTRY = {
    "models": {
        name: {
            "runtime": {"kind": "simulated", "start_s": start},
            "footprint_mib": mib,
            "reload_cost_s": start,
        }
        for name, mib, start in [
            ("whisper", 2000, 0.3),
            ("llm", 4000, 0.6),
            ("tts", 2000, 0.3),
            ("vlm", 5000, 0.8),
        ]
    }
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    env = {
        "JARVIS_RESOURCE_GPU_BACKEND": "simulated",
        "JARVIS_RESOURCE_SIMULATED_GPU_MIB": str(GPU_MIB),
        "JARVIS_RESOURCE_RESERVE_MIB": "0",
        "JARVIS_RESOURCE_REGISTRY": json.dumps(REGISTRY),
        "JARVIS_RESOURCE_STATE_DIR": str(tmp_path_factory.mktemp("res-state")),
        "JARVIS_RESOURCE_CALIBRATION_FILE": str(tmp_path_factory.mktemp("res-cal") / "none.json"),
        "JARVIS_TURN_MODELS": json.dumps({"stt": "whisper", "llm": "llm", "tts": "tts", "vlm": "vlm"}),
    }
    with running_stack(tmp_path_factory.mktemp("loading"), profile="stub", resource=True, env=env) as s:
        r = redis_url.sync_client(s.redis_url)
        for _ in range(100):  # the resource service's heartbeat
            if r.exists(alive_key("resource")):
                break
            time.sleep(0.1)
        r.close()
        yield s


async def test_eviction_then_the_turn_completes(stack):
    c = await Client.open(stack.url)
    await c.start(pipeline="sts")
    await c.wait_for("state", state="LISTENING", timeout=30)
    # session start prewarmed sts: whisper + llm + tts (8000 of 10000 MiB)
    await c.send({"type": "text", "text": "hello there", "speak": True})
    await c.wait_for("metrics", timeout=30)

    # vision needs whisper + vlm + tts = 9000: the idle llm must go
    await c.send({"type": "config", "pipeline": "vision"})
    await c.wait_for("ready", count=2)
    n_loading = len(c.of("loading"))
    await c.send(bytes((0x02,)) + b"\xff\xd8\xff\xe0" + bytes(64))  # a (tiny) JPEG
    await c.send({"type": "text", "text": "what do you see", "speak": True})
    m = await c.wait_for("metrics", count=2, timeout=30)
    assert m["turn"] == 2
    assert c.of("reply", final=True)[-1]["text"] == "You said: what do you see."

    loading = c.of("loading")[n_loading:]
    assert loading, "the client saw no LOADING events for the vision models"
    vlm = [mm for ev in loading for mm in ev["models"] if mm["model"] == "vlm"]
    assert vlm and vlm[-1]["state"] == "ready" and vlm[-1]["progress"] == 1.0
    assert any(0 <= mm["progress"] < 1.0 for mm in vlm)  # progress was shown on the way
    assert any(ev.get("eta_s") is not None for ev in loading)
    states = [e["state"] for e in c.of("state")]
    assert "LOADING" in states[states.index("SPEAKING") :]  # LOADING again for the second pipeline

    from services.resource import messages  # noqa: F401 - registers the resource messages
    from shared import codec

    r = redis_url.sync_client(stack.redis_url)
    events = [codec.from_entry(fields) for _, fields in r.xrange("resource:events")]
    r.close()
    assert ("llm", "unloaded") in [(e.model, e.state) for e in events]  # the eviction
    assert ("vlm", "ready") in [(e.model, e.state) for e in events]
    await c.close()
