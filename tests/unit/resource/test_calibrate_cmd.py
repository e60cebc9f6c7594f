"""`jarvis calibrate` without an NVIDIA GPU says so and exits non-zero; the CLI wiring."""

from __future__ import annotations

import argparse

from jarvis import calibrate_cmd, models_cmd
from tests.unit.resource.test_parts import fake_pynvml


def test_calibrate_without_gpu_exits_non_zero(monkeypatch, capsys):
    fake_pynvml(monkeypatch, fail=True)
    from jarvis.cli import main

    assert main(["calibrate"]) == calibrate_cmd.EXIT_NO_GPU == 2
    err = capsys.readouterr().err
    assert "no NVIDIA GPU" in err and "Driver Not Loaded" in err


def test_parsers():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command")
    models_cmd.add_parser(sub)
    calibrate_cmd.add_parser(sub)
    a = ap.parse_args(["models", "unload", "llm", "--force"])
    assert a.func is models_cmd.unload and a.model == "llm" and a.force
    a = ap.parse_args(["models", "status", "--json"])
    assert a.func is models_cmd.status and a.json
    a = ap.parse_args(["calibrate", "whisper", "--settle", "1"])
    assert a.func is calibrate_cmd.run and a.models == ["whisper"] and a.settle == 1.0


# ---- calibration includes inference (GPU issue, problem 5) ----------------------------


async def test_calibration_measures_the_peak_of_a_realistic_request_not_the_memory_after_load():
    """A server that takes 40% of its memory at load and the rest on its first request
    (KV cache, CUDA graphs): measured after load only it would look 2.5x smaller."""
    from services.resource.config import Registry
    from services.resource.gpu import SimulatedGpu
    from services.resource.runtimes import RuntimeSet
    from services.resource.runtimes.simulated import SimulatedRuntime

    registry = Registry.model_validate(
        {"models": {"llm": {"runtime": {"kind": "simulated", "ready_fraction": 0.4}, "footprint_mib": 5000}}}
    )
    gpu = SimulatedGpu(24576, foreign_mib=700)
    rts = RuntimeSet({"simulated": SimulatedRuntime(gpu, lambda m: 5000)})
    got = await calibrate_cmd.measure_runtime(
        "llm",
        registry.models["llm"],
        0,
        gpu,
        rts,
        settle_s=0.3,
        timeout_s=10,
        stop_grace_s=0,
        footprint_mib=5000,
    )
    assert got["loaded_mib"] == 2000  # what the old calibration stored
    assert got["footprint_mib"] == 5000 and got["peak_mib"] == 5000
    assert gpu.info_now().used_mib == 700  # stopped afterwards


def test_adapter_warm_up_requests_are_realistic():
    from shared.model import SttRequest, TtsRequest

    stt = calibrate_cmd.warmup_request("services.stt.whisper")
    assert isinstance(stt, SttRequest) and len(stt.pcm) == 2 * 16000 * 5
    tts = calibrate_cmd.warmup_request("services.tts.chatterbox")
    assert isinstance(tts, TtsRequest) and tts.text.count(".") >= 2
    assert calibrate_cmd.warmup_request("somewhere.else") is None


def test_the_adapter_child_runs_its_request_before_it_reports(tmp_path):
    """`--hold-adapter` loads, says so, runs the warm-up request, says so, unloads at EOF."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    pkg = tmp_path / "services" / "tts"
    pkg.mkdir(parents=True)
    (tmp_path / "services" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "fake.py").write_text(
        "class Fake:\n"
        "    async def load(self): print('loading', flush=True)\n"
        "    async def infer(self, req):\n"
        "        print('infer', req.text[:4], flush=True)\n"
        "        yield b''\n"
        "    async def unload(self): print('unloaded', flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "jarvis.calibrate_cmd", "--hold-adapter", "services.tts.fake:Fake"],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env={"PYTHONPATH": f"{tmp_path}:{root}", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert (
        lines.index(calibrate_cmd.READY_LINE)
        < lines.index("infer")
        < lines.index(calibrate_cmd.INFERRED_LINE)
    )
    assert lines[-1] == "unloaded"
