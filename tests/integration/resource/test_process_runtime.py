"""The process runtime for real: small HTTP servers on loopback, started, probed, killed.

Every process a test starts is killed by its pid (its process group) in teardown, even
when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

from services.resource.config import ProcessSpec, Registry, ResourceSettings
from services.resource.gpu import SimulatedGpu
from services.resource.housekeeping import Housekeeper
from services.resource.planner import ModelFailed, Planner
from services.resource.runtimes import HealthTimeout, RuntimeSet, StartFailed
from services.resource.runtimes.process import ProcessRuntime, group_pids, pid_alive


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_server(port: int) -> ProcessSpec:
    return ProcessSpec(
        argv=[sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        health_url=f"http://127.0.0.1:{port}/",
    )


@pytest.fixture
def started_pids():
    """Pids to kill (as process groups) at teardown, whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def runtime(tmp_path: Path) -> ProcessRuntime:
    return ProcessRuntime(
        tmp_path / "logs", tmp_path / "state" / "processes.json", health_request_timeout_s=1.0
    )


async def wait_for(cond, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await cond():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_start_health_external_kill_is_detected(runtime, started_pids):
    spec = http_server(free_port())
    h = await runtime.start("web", spec, 0)
    started_pids.append(int(h.ref))
    await runtime.wait_healthy(h, spec, timeout_s=20, expected_s=1)
    assert await runtime.probe(h, spec)
    assert os.getpgid(int(h.ref)) == int(h.ref)  # its own process group

    os.kill(int(h.ref), signal.SIGKILL)  # dies behind our back
    assert await wait_for(lambda: _not(runtime.alive(h)))
    assert not await runtime.probe(h, spec)
    await runtime.stop(h, grace_s=1)  # cleaning up a dead one is fine


async def _not(coro) -> bool:
    return not await coro


async def test_stop_removes_the_process_and_its_group(runtime, started_pids, tmp_path):
    port = free_port()
    # a server with a child in the same group: both must go
    script = tmp_path / "srv.py"
    script.write_text(
        textwrap.dedent(f"""
        import http.server, subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port={port}, bind="127.0.0.1")
    """)
    )
    spec = ProcessSpec(argv=[sys.executable, str(script)], health_url=f"http://127.0.0.1:{port}/")
    h = await runtime.start("web", spec, 0)
    pid = int(h.ref)
    started_pids.append(pid)
    await runtime.wait_healthy(h, spec, timeout_s=20, expected_s=1)
    assert await wait_for(lambda: _async(len(group_pids(pid)) >= 2))
    await runtime.stop(h, grace_s=5)
    assert not pid_alive(pid)
    assert await wait_for(lambda: _async(not group_pids(pid)))
    assert not await runtime.probe(h, spec)


async def _async(v):
    return v


async def test_sigterm_ignored_then_sigkill(runtime, started_pids):
    spec = ProcessSpec(
        argv=[
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
        ]
    )
    h = await runtime.start("stubborn", spec, 0)
    started_pids.append(int(h.ref))
    await runtime.wait_healthy(h, spec, timeout_s=5, expected_s=1)  # "running" is healthy
    await asyncio.sleep(0.3)  # let it install its handler
    t0 = time.monotonic()
    await runtime.stop(h, grace_s=0.5)
    assert time.monotonic() - t0 < 5
    assert not pid_alive(int(h.ref))


async def test_health_timeout_and_early_exit(runtime, started_pids):
    port = free_port()
    silent = ProcessSpec(
        argv=[sys.executable, "-c", "import time; time.sleep(600)"], health_url=f"http://127.0.0.1:{port}/"
    )
    h = await runtime.start("silent", silent, 0)
    started_pids.append(int(h.ref))
    with pytest.raises(HealthTimeout):
        await runtime.wait_healthy(h, silent, timeout_s=0.5, expected_s=1)
    await runtime.stop(h, grace_s=1)

    crash = ProcessSpec(
        argv=[sys.executable, "-c", "raise SystemExit(3)"], health_url=f"http://127.0.0.1:{port}/"
    )
    h = await runtime.start("crash", crash, 0)
    started_pids.append(int(h.ref))
    with pytest.raises(StartFailed, match="exited"):
        await runtime.wait_healthy(h, crash, timeout_s=20, expected_s=1)


async def test_a_server_does_not_inherit_the_services_metrics_port(runtime, started_pids, monkeypatch):
    """The resource service serves Prometheus on JARVIS_METRICS_PORT; a worker it starts with that
    port would fail to bind it and exit. Only a port the spec names reaches the server."""
    monkeypatch.setenv("JARVIS_METRICS_PORT", "9464")
    monkeypatch.setenv("JARVIS_REDIS_URL", "redis://127.0.0.1:1/0")
    show = "import os; print(os.environ.get('JARVIS_METRICS_PORT'), os.environ.get('JARVIS_REDIS_URL'))"
    for model, env, want in [("plain", {}, "None"), ("own", {"JARVIS_METRICS_PORT": "9999"}, "9999")]:
        spec = ProcessSpec(argv=[sys.executable, "-c", show], env=env)
        h = await runtime.start(model, spec, 0)
        started_pids.append(int(h.ref))
        await h.obj.wait()
        out = (runtime.log_dir / f"{model}.log").read_text().split()
        assert out == [want, "redis://127.0.0.1:1/0"]  # the rest of the environment is inherited


async def test_missing_binary_is_a_start_failure(runtime):
    with pytest.raises(StartFailed):
        await runtime.start("nope", ProcessSpec(argv=["/nonexistent/server"]), 0)


async def test_restarted_service_adopts_its_processes(runtime, started_pids, tmp_path):
    spec = http_server(free_port())
    h = await runtime.start("web", spec, 0)
    started_pids.append(int(h.ref))
    await runtime.wait_healthy(h, spec, timeout_s=20, expected_s=1)

    again = ProcessRuntime(tmp_path / "logs", runtime.state_file)  # a new resource service
    adopted = await again.adopt()
    assert [(a.model, a.ref, a.adopted) for a in adopted] == [("web", h.ref, True)]
    assert await again.probe(adopted[0], spec)
    await again.stop(adopted[0], grace_s=2)
    assert await wait_for(lambda: _async(not pid_alive(int(h.ref))))
    assert await again.adopt() == []


async def test_planner_with_real_processes(tmp_path, started_pids):
    """ensure -> a real server; it dies -> the held model is restarted on a new pid."""
    port = free_port()
    registry = Registry.model_validate(
        {
            "models": {
                "web": {
                    "runtime": {
                        "kind": "process",
                        "argv": [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                        "health_url": f"http://127.0.0.1:{port}/",
                    },
                    "footprint_mib": 1000,
                    "reload_cost_s": 1,
                }
            }
        }
    )
    settings = ResourceSettings(
        registry=registry,
        gpu_backend="simulated",
        reserve_mib=0,
        stop_grace_s=2,
        health_timeout_s=20,
        release_wait_s=0.1,
    )
    rt = ProcessRuntime(tmp_path / "logs", tmp_path / "state.json")
    planner = Planner(registry, {"web": 1000}, SimulatedGpu(4000), RuntimeSet({"process": rt}), settings)
    try:
        await planner.ensure(["web"], "turn", "turn-1")
        first = int(planner.residents["web"].handle.ref)
        started_pids.append(first)
        os.kill(first, signal.SIGKILL)
        assert await wait_for(lambda: _async(not pid_alive(first)))
        assert await Housekeeper(planner).check_health() == ["web"]
        await asyncio.gather(*planner.tasks)
        second = int(planner.residents["web"].handle.ref)
        started_pids.append(second)
        assert second != first and pid_alive(second)
        planner.release("turn-1")
    finally:
        await planner.stop_all()
    assert planner.residents == {}


async def test_planner_reports_a_server_that_never_gets_healthy(tmp_path, started_pids):
    registry = Registry.model_validate(
        {
            "models": {
                "dud": {
                    "runtime": {
                        "kind": "process",
                        "argv": [sys.executable, "-c", "raise SystemExit(1)"],
                        "health_url": f"http://127.0.0.1:{free_port()}/",
                    },
                    "footprint_mib": 10,
                }
            }
        }
    )
    settings = ResourceSettings(
        registry=registry, gpu_backend="simulated", health_timeout_s=20, reserve_mib=0
    )
    planner = Planner(
        registry,
        {"dud": 10},
        SimulatedGpu(100),
        RuntimeSet({"process": ProcessRuntime(tmp_path, None)}),
        settings,
    )
    with pytest.raises(ModelFailed, match="exited before becoming healthy"):
        await planner.ensure(["dud"])
    assert planner.residents == {}
