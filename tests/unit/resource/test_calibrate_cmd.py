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
