"""Small parts: the priority lock, holds, the health probe, NVML parsing, Docker arguments, messages."""

from __future__ import annotations

import asyncio
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from services.resource import messages as m
from services.resource.config import DockerSpec, ResourceSettings
from services.resource.gpu import MIB, NvmlGpu, SimulatedGpu, SimulatedOOM, open_gpu
from services.resource.holds import HoldTable
from services.resource.locks import HOUSEKEEPING, PREWARM, TURN, PriorityLock
from services.resource.runtimes import StartFailed
from services.resource.runtimes.docker import DockerRuntime, device_requests
from services.resource.runtimes.health import http_ok, wait_until
from shared import codec
from tests.unit.resource.helpers import FakeClock

# ---- lock ---------------------------------------------------------------------------


async def test_priority_lock_serves_turns_first():
    lock = PriorityLock()
    order: list[str] = []
    await lock.acquire(TURN)

    async def want(name: str, prio: int) -> None:
        async with lock.hold(prio):
            order.append(name)

    tasks = [asyncio.create_task(want("house", HOUSEKEEPING)), asyncio.create_task(want("pre1", PREWARM))]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(want("turn", TURN)), asyncio.create_task(want("pre2", PREWARM))]
    await asyncio.sleep(0)
    assert lock.waiting() == 4
    lock.release()
    await asyncio.gather(*tasks)
    assert order == ["turn", "pre1", "pre2", "house"]
    assert not lock.locked()


async def test_priority_lock_cancelled_waiter_leaves_the_queue():
    lock = PriorityLock()
    await lock.acquire()
    waiter = asyncio.create_task(lock.acquire(TURN))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    lock.release()
    assert not lock.locked()
    async with lock.hold():
        assert lock.locked()


# ---- holds --------------------------------------------------------------------------


def test_holds_expire_and_renew():
    clock = FakeClock()
    t = HoldTable(10, clock)
    t.acquire("a", ["x", "y"])
    t.acquire("b", ["y"], ttl_s=100)
    assert t.holders_of("y") == ["a", "b"]
    clock.advance(11)
    assert not t.is_held("x") and t.holders_of("y") == ["b"]
    assert not t.renew("a")
    assert [h.holder for h in t.expire()] == ["a"]
    assert t.release("b") == {"y"} and t.all() == []


# ---- health probe -------------------------------------------------------------------


async def test_http_ok_against_a_tiny_server():
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        status = b"200 OK" if b" /ok " in line else b"503 Service Unavailable"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await http_ok(f"http://127.0.0.1:{port}/ok")
        assert not await http_ok(f"http://127.0.0.1:{port}/loading")
    finally:
        server.close()
        await server.wait_closed()
    assert not await http_ok(f"http://127.0.0.1:{port}/ok", timeout_s=0.5)  # nobody listens
    with pytest.raises(ValueError):
        await http_ok("ftp://x/")


async def test_wait_until_reports_progress_and_times_out():
    seen: list[float] = []

    async def progress(frac: float, msg: str) -> None:
        seen.append(frac)

    async def never() -> bool:
        return False

    from services.resource.runtimes import HealthTimeout

    with pytest.raises(HealthTimeout):
        await wait_until(never, timeout_s=0.3, expected_s=0.2, progress=progress, first_delay_s=0.01)
    assert seen and max(seen) <= 0.95 and seen == sorted(seen)


# ---- GPU ----------------------------------------------------------------------------


def test_simulated_gpu_counts_foreign_and_refuses_overcommit():
    g = SimulatedGpu(1000, foreign_mib=100)
    g.allocate("a", 800)
    assert g.info_now().free_mib == 100
    with pytest.raises(SimulatedOOM):
        g.allocate("b", 101)
    assert len(g.overcommits) == 1
    g.free("a")
    assert g.info_now().used_mib == 100 and g.peak() == 900


def fake_pynvml(monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> None:
    mod = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def init() -> None:
        if fail:
            raise NVMLError("Driver Not Loaded")

    mod.NVMLError = NVMLError
    mod.nvmlInit = init
    mod.nvmlShutdown = lambda: None
    mod.nvmlDeviceGetCount = lambda: 1
    mod.nvmlDeviceGetHandleByIndex = lambda i: ("h", i)
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(
        total=80 * 1024 * MIB, used=1000 * MIB, free=(80 * 1024 - 1000) * MIB
    )
    mod.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    mod.nvmlDeviceGetUUID = lambda h: "GPU-1234"
    mod.nvmlSystemGetDriverVersion = lambda: "550.54"
    mod.nvmlDeviceGetComputeRunningProcesses = lambda h: [
        types.SimpleNamespace(pid=10, usedGpuMemory=500 * MIB),
        types.SimpleNamespace(pid=11, usedGpuMemory=None),
    ]
    mod.nvmlDeviceGetGraphicsRunningProcesses = lambda h: [
        types.SimpleNamespace(pid=10, usedGpuMemory=20 * MIB)
    ]
    monkeypatch.setitem(sys.modules, "pynvml", mod)


async def test_nvml_gpu_reads_memory_and_processes(monkeypatch):
    fake_pynvml(monkeypatch)
    gpu = await NvmlGpu().open()
    info = await gpu.info(0)
    assert (info.name, info.total_mib, info.used_mib, info.free_mib) == (
        "NVIDIA H100 80GB HBM3",
        81920,
        1000,
        80920,
    )
    assert info.uuid == "GPU-1234" and info.driver == "550.54"
    assert await gpu.process_usage(0) == {10: 520}
    await gpu.close()
    assert (await open_gpu("nvml")).backend == "nvml"


async def test_no_gpu_is_a_clear_error_never_a_silent_simulation(monkeypatch):
    """Problem 3: without NVML the service used to plan against a pretend 24 GiB GPU."""
    fake_pynvml(monkeypatch, fail=True)
    from services.resource.gpu import GpuUnavailable

    with pytest.raises(
        GpuUnavailable, match="Driver Not Loaded.*NVIDIA GPU.*JARVIS_RESOURCE_GPU_BACKEND=simulated"
    ):
        await open_gpu("nvml")
    assert ResourceSettings().gpu_backend == "nvml"  # the default: the real GPU
    with pytest.raises(ValueError):
        await open_gpu("auto")
    gpu = await open_gpu("simulated", simulated_mib=4096)  # only when asked for
    assert isinstance(gpu, SimulatedGpu) and (await gpu.info(0)).total_mib == 4096


def test_the_service_refuses_to_start_without_a_gpu(tmp_path):
    """`python -m services.resource` on a machine without NVML: a message and exit status 2."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[3]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JARVIS_")}
    env.update(
        JARVIS_RESOURCE_GPU_BACKEND="nvml",
        JARVIS_REDIS_URL="redis://127.0.0.1:1/0",
        PYTHONPATH=str(root),
        JARVIS_RESOURCE_STATE_DIR=str(tmp_path),
    )
    code = (
        "import sys, types\n"
        "m = types.ModuleType('pynvml')\n"
        "class NVMLError(Exception): pass\n"
        "def init(): raise NVMLError('Driver Not Loaded')\n"
        "m.NVMLError = NVMLError; m.nvmlInit = init\n"
        "sys.modules['pynvml'] = m\n"
        "import runpy; runpy.run_module('services.resource', run_name='__main__')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2, out.stderr
    assert "no usable GPU" in out.stderr and "Driver Not Loaded" in out.stderr


# ---- Docker arguments (a fake client: no engine needed) ----------------------------


def test_device_requests():
    assert device_requests(None, 0) == []
    (r,) = device_requests("device", 1)
    assert r["DeviceIDs"] == ["1"] and r["Capabilities"] == [["gpu"]]
    assert device_requests("all", 0)[0]["Count"] == -1
    assert device_requests(2, 0)[0]["Count"] == 2
    assert device_requests(["GPU-abc"], 0)[0]["DeviceIDs"] == ["GPU-abc"]


class _FakeContainers:
    def __init__(self) -> None:
        self.run_kwargs: dict[str, Any] = {}
        self.existing: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        import docker

        if name in self.existing:
            return self.existing[name]
        raise docker.errors.NotFound("no")

    def run(self, image: str, **kw: Any) -> Any:
        self.run_kwargs = {"image": image, **kw}
        return types.SimpleNamespace(id="c0ffee" * 8, short_id="c0ffee", labels=kw["labels"])


class _FakeImages:
    def get(self, image: str) -> Any:
        import docker

        if image.startswith("missing"):
            raise docker.errors.ImageNotFound("no")
        return object()

    def pull(self, image: str) -> Any:
        import docker

        raise docker.errors.APIError("dial tcp: lookup registry-1.docker.io: no such host")


async def test_docker_start_arguments_and_ownership():
    containers = _FakeContainers()
    client = types.SimpleNamespace(containers=containers, images=_FakeImages(), close=lambda: None)
    rt = DockerRuntime("resource-host1", client_factory=lambda: client)
    spec = DockerSpec(
        image="vllm/vllm-openai:latest",
        command=["--model", "x"],
        ports={"8000/tcp": 8000},
        env={"A": "1"},
        volumes=["~/hf:/root/.cache/huggingface"],
        shm_size="2g",
    )
    h = await rt.start("llm", spec, 1)
    kw = containers.run_kwargs
    assert h.kind == "docker" and h.device == 1 and kw["name"] == "jarvis-llm" and kw["detach"]
    assert kw["labels"] == {"jarvis.owner": "resource-host1", "jarvis.model": "llm", "jarvis.device": "1"}
    assert kw["device_requests"][0]["DeviceIDs"] == ["1"]
    assert kw["ports"] == {"8000/tcp": 8000} and kw["environment"] == {"A": "1"}
    assert kw["volumes"][0].endswith("/hf:/root/.cache/huggingface") and not kw["volumes"][0].startswith("~")

    containers.existing["jarvis-llm"] = types.SimpleNamespace(labels={"jarvis.owner": "someone-else"})
    with pytest.raises(StartFailed, match="do not own"):
        await rt.start("llm", spec, 0)
    with pytest.raises(StartFailed, match="not present locally and could not be pulled"):
        await rt.start("other", DockerSpec(image="missing/image"), 0)


# ---- messages -----------------------------------------------------------------------


def test_messages_round_trip_through_the_codec():
    msgs = [
        m.EnsureModels("r1", ["stt", "llm"], "turn", "turn-7", m.reply_stream("r1"), 30.0, 1.5),
        m.ReleaseModels("turn-7", 2.0),
        m.RenewHold("turn-7", 60.0, 2.5),
        m.Status("resource:reply:x", "x", 3.0),
        m.Load("llm", "resource:reply:y", "y", 4.0),
        m.Unload("llm", "resource:reply:z", "z", True, 5.0),
        m.ModelProgress("r1", "llm", "loading", 0.5, 12.0, "waiting", 6.0),
        m.EnsureDone("r1", False, "short", "wont_fit", [], ["a"], 1.25, 7.0),
        m.StatusReply(
            "x", "resource", [{"index": 0}], [{"model": "llm"}], [], {"llm": {"footprint_mib": 1}}, 8.0
        ),
        m.ModelEvent("llm", "ready", "", "resource", 9.0),
    ]
    for msg in msgs:
        assert codec.from_entry(codec.entry(msg)) == msg


def test_container_health_url_is_the_containers_address_not_our_own_loopback():
    """Problem 3: in compose the resource service probed 127.0.0.1, its own container's loopback."""
    from services.resource.runtimes.docker import container_url

    attrs = {
        "NetworkSettings": {
            "Networks": {"jarvis_default": {"IPAddress": "172.18.0.5"}},
            "Ports": {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8100"}]},
        }
    }
    url = "http://container:8000/health"
    assert container_url(url, attrs, "jarvis_default") == "http://172.18.0.5:8000/health"  # same network
    assert container_url(url, attrs, None) == "http://127.0.0.1:8100/health"  # on a host: the published port
    assert container_url(url, {"NetworkSettings": {}}, None) is None  # not reachable (yet)
    assert container_url("http://10.0.0.2:9000/h", attrs, None) == "http://10.0.0.2:9000/h"  # explicit: as is
