"""scripts/gpu-check.sh on the simulated GPU, as CI runs it (so the script does not rot):
it exits 0 and its JSON report shows every step passed with the figures that prove it.
On a GPU host the same script runs against NVML and real CUDA allocations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_gpu_check_passes_on_the_simulated_gpu(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JARVIS_")}
    env["PYTHON"] = sys.executable
    out = subprocess.run(
        [str(ROOT / "scripts" / "gpu-check.sh"), "--simulated", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["ok"] and report["mode"] == "simulated" and report["gpu"]["backend"] == "simulated"
    steps = {s["name"].split(";")[0]: s for s in report["steps"]}
    assert all(s["ok"] for s in report["steps"]) and len(steps) == 4
    evict = steps["never overcommit"]["details"]
    assert evict["first_evicted"] == ["a"] and evict["second_evicted"] == ["c"]
    assert evict["peak_used_mib"] <= evict["total_mib"] and evict["overcommits"] == []
    sleep = steps["sleep instead of stop"]["details"]
    assert sleep["slept"] == ["s"] and sleep["held_mib_measured"] > 0 and sleep["status_shows_sleeping"]
    assert sleep["swap_s"] <= sleep["wake_s"] + 1.5
    timeout = next(s for s in report["steps"] if "stage timeout" in s["name"])["details"]
    assert timeout["load_s"] > 2.0 > timeout["max_gap_s"] and timeout["first_eta_s"] > 0
    calib = next(s for s in report["steps"] if "calibrate" in s["name"])["details"]
    assert calib["footprint_mib"] >= calib["base_mib"] + calib["grow_mib"] > calib["loaded_mib"]
    table = (tmp_path / "gpu-check.md").read_text()
    assert table.count("| pass |") == 4 and "scripts/gpu-check.sh" in table
