"""Settings, the registry (JSON / TOML / inline env), calibration and footprints."""

from __future__ import annotations

import json
import sys

import pytest
from pydantic import ValidationError

from services.resource.calibration import Calibration, Measurement, footprints
from services.resource.config import DEFAULT_REGISTRY, ProcessSpec, Registry, ResourceSettings

TOML = """
[groups.speech]
swap = false

[models.whisper]
footprint_mib = 1500
group = "speech"
sticky = true
reload_cost_s = 8
[models.whisper.runtime]
kind = "process"
argv = ["{python}", "-m", "services.stt"]
env = { JARVIS_STT_DEVICE = "cuda" }

[models.llm]
footprint_mib = 11000
keep_alive_s = 600
[models.llm.runtime]
kind = "docker"
image = "vllm/vllm-openai:latest"
command = ["--model", "Qwen/Qwen2.5-7B-Instruct-AWQ"]
ports = { "8000/tcp" = 8000 }
health_url = "http://127.0.0.1:8000/health"
"""


def test_default_registry_is_valid():
    reg = Registry.model_validate(DEFAULT_REGISTRY)
    assert {"whisper", "chatterbox", "llm"} <= set(reg.models)
    assert reg.models["llm"].runtime.kind == "docker" and reg.models["llm"].runtime.gpus == "device"
    assert reg.models["whisper"].runtime.argv[0] == sys.executable  # "{python}" resolved
    assert reg.group_of("whisper") == "speech" == reg.group_of("chatterbox")


def test_registry_from_toml_and_json(tmp_path):
    t = tmp_path / "models.toml"
    t.write_text(TOML)
    reg = Registry.load(t)
    assert reg.models["whisper"].sticky and reg.models["whisper"].runtime.env == {"JARVIS_STT_DEVICE": "cuda"}
    assert reg.models["llm"].runtime.ports == {"8000/tcp": 8000}
    assert reg.group_of("llm") == "llm"  # no group: its own
    j = tmp_path / "models.json"
    j.write_text(json.dumps(reg.model_dump()))
    assert Registry.load(j) == reg


def test_settings_from_env(monkeypatch, tmp_path):
    reg = {"models": {"a": {"runtime": {"kind": "simulated"}, "footprint_mib": 5}}}
    monkeypatch.setenv("JARVIS_RESOURCE_REGISTRY", json.dumps(reg))
    monkeypatch.setenv("JARVIS_RESOURCE_GPU_BACKEND", "simulated")
    monkeypatch.setenv("JARVIS_RESOURCE_SIMULATED_GPU_MIB", "8192")
    monkeypatch.setenv("JARVIS_RESOURCE_RESERVE_MIB", "0")
    monkeypatch.setenv("JARVIS_RESOURCE_CALIBRATION_FILE", str(tmp_path / "c.json"))
    s = ResourceSettings()
    assert s.gpu_backend == "simulated" and s.simulated_gpu_mib == 8192 and s.reserve_mib == 0
    assert list(s.load_registry().models) == ["a"]
    monkeypatch.delenv("JARVIS_RESOURCE_REGISTRY")
    f = tmp_path / "r.toml"
    f.write_text(TOML)
    monkeypatch.setenv("JARVIS_RESOURCE_REGISTRY_FILE", str(f))
    assert set(ResourceSettings().load_registry().models) == {"whisper", "llm"}


def test_bad_specs_are_rejected():
    with pytest.raises(ValidationError):
        Registry.model_validate({"models": {"a": {"runtime": {"kind": "ftp"}, "footprint_mib": 1}}})
    with pytest.raises(ValidationError):
        Registry.model_validate({"models": {"a": {"runtime": {"kind": "simulated"}, "footprint_mib": -1}}})
    with pytest.raises(ValidationError):
        ProcessSpec(argv=[])
    with pytest.raises(ValidationError):  # a group named like a model is ambiguous
        Registry.model_validate(
            {
                "models": {
                    "a": {"runtime": {"kind": "simulated"}, "footprint_mib": 1, "group": "b"},
                    "b": {"runtime": {"kind": "simulated"}, "footprint_mib": 1},
                }
            }
        )


def test_calibration_round_trip_and_footprints(tmp_path):
    reg = Registry.model_validate(DEFAULT_REGISTRY)
    path = tmp_path / "sub" / "calibration.json"
    assert Calibration.read(path).models == {}  # missing file: empty
    c = Calibration(models={"whisper": Measurement(footprint_mib=1000, method="adapter")})
    c.write(path)
    again = Calibration.read(path)
    assert again.models["whisper"].footprint_mib == 1000
    fps = footprints(reg, again, margin_pct=10)
    assert fps["whisper"] == 1100  # calibrated + 10 %
    assert fps["llm"] == reg.models["llm"].footprint_mib  # declared
    path.write_text("{not json")
    assert Calibration.read(path).models == {}
