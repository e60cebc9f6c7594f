"""`jarvis models status|load|unload` against a running resource service (real Redis)."""

from __future__ import annotations

import argparse
import json

from jarvis import models_cmd
from tests.integration.resource.conftest import Running


def ns(url: str, **kw) -> argparse.Namespace:
    return argparse.Namespace(redis_url=url, **kw)


async def test_models_load_status_unload(service: Running, redis_url: str, capsys):
    assert await models_cmd.load(ns(redis_url, model="llm")) == 0
    out = capsys.readouterr().out
    assert "llm: queued" in out and "llm: ready" in out and "llm: resident" in out

    assert await models_cmd.status(ns(redis_url, json=False)) == 0
    out = capsys.readouterr().out
    assert "resource service: test-resource" in out and "GPU 0 (simulated)" in out
    assert "llm" in out and "5,000 MiB" in out and "not loaded:" in out

    assert await models_cmd.status(ns(redis_url, json=True)) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in data["service"]["residents"]] == ["llm"]

    assert await models_cmd.unload(ns(redis_url, model="llm", force=False)) == 0
    assert "llm: unloaded" in capsys.readouterr().out
    assert await models_cmd.load(ns(redis_url, model="huge")) == 1
    assert "short by" in capsys.readouterr().err


async def test_models_without_a_service(redis_url: str, bus, capsys):
    assert await models_cmd.load(ns(redis_url, model="llm")) == models_cmd.EXIT_NO_SERVICE
    assert "not running" in capsys.readouterr().err
    assert await models_cmd.status(ns(redis_url, json=False)) == 0
    out = capsys.readouterr().out
    assert "resource service: not running" in out and "configured models:" in out


async def test_models_status_shows_sleeping_models_and_what_they_hold(
    service: Running, redis_url: str, capsys
):
    assert await models_cmd.load(ns(redis_url, model="nap")) == 0
    assert await models_cmd.load(ns(redis_url, model="vlm")) == 0  # 5000 + 6000 > 10000: nap sleeps
    capsys.readouterr()
    assert await models_cmd.status(ns(redis_url, json=False)) == 0
    out = capsys.readouterr().out
    nap = next(line for line in out.splitlines() if line.startswith("nap "))
    assert "sleeping" in nap and "700 MiB" in nap
    assert "sleeping models hold 700 MiB" in out
    assert await models_cmd.status(ns(redis_url, json=True)) == 0
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out)["service"]["residents"]}
    assert rows["nap"]["sleeping"] and rows["nap"]["held_mib"] == 700 and not rows["vlm"]["sleeping"]
