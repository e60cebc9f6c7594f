"""`jarvis up` runs one host's share of a deployment: which roles run here, the address the
gateway binds, the shared Redis and the shared session folder reach every service it starts."""

from __future__ import annotations

import argparse

import pytest

from jarvis import cli
from jarvis.launcher import Stack, parse_roles


def test_roles_parse_and_unknown_ones_are_refused():
    assert parse_roles("gateway, workers") == {"gateway", "workers"}
    with pytest.raises(ValueError, match="subset of gateway, orchestrator, workers, resource"):
        parse_roles("gateway,webserver")
    with pytest.raises(ValueError):
        parse_roles(" , ")
    with pytest.raises(ValueError, match="unknown roles"):
        Stack(profile="stub", roles=("gpu",))


def test_a_host_without_workers_runs_no_resource_service_or_vlm(tmp_path):
    front = Stack(profile="gpu", workdir=tmp_path, roles=("gateway", "orchestrator"))
    assert not front.resource and not front.vlm
    gpu_host = Stack(profile="gpu", workdir=tmp_path, roles=("workers",))
    assert gpu_host.resource  # a GPU host's workers come with its resource service
    asked = Stack(profile="stub", workdir=tmp_path, roles=("resource",))
    assert asked.resource
    assert Stack(profile="stub", workdir=tmp_path).roles == {"gateway", "orchestrator", "workers"}


def test_bind_address_redis_and_session_folder_reach_the_services(tmp_path, monkeypatch):
    monkeypatch.delenv("JARVIS_REDIS_URL", raising=False)
    monkeypatch.delenv("JARVIS_SESSIONS_DIR", raising=False)
    shared = tmp_path / "nfs" / "sessions"
    s = Stack(
        profile="stub",
        host="127.0.0.2",
        port=9000,
        workdir=tmp_path / "a",
        redis_url="redis://10.0.0.5:6379/0",
        sessions_dir=shared,
    )
    s._redis()  # an external Redis: nothing is started
    assert s.redis is None and s.redis_url == "redis://10.0.0.5:6379/0"
    env = s._env()
    assert env["JARVIS_HOST"] == "127.0.0.2" and env["JARVIS_REDIS_URL"] == "redis://10.0.0.5:6379/0"
    assert env["JARVIS_SESSIONS_DIR"] == str(shared.resolve())
    assert s.url == "ws://127.0.0.2:9000/ws"


def test_the_session_folder_comes_from_the_environment_too(tmp_path, monkeypatch):
    monkeypatch.setenv("JARVIS_SESSIONS_DIR", str(tmp_path / "shared"))
    assert Stack(profile="stub", workdir=tmp_path / "a").sessions_dir == (tmp_path / "shared").resolve()
    monkeypatch.delenv("JARVIS_SESSIONS_DIR")
    assert Stack(profile="stub", workdir=tmp_path / "a").sessions_dir == (tmp_path / "a" / "sessions")


def test_jarvis_up_passes_one_hosts_share_to_the_launcher(monkeypatch):
    got: dict = {}

    def fake_up(profile, port, orchestrators, **kw):
        got.update(profile=profile, port=port, orchestrators=orchestrators, **kw)
        return 0

    monkeypatch.setattr("jarvis.launcher.up", fake_up)
    argv = [
        "up",
        "--stub",
        "--host",
        "127.0.0.3",
        "--roles",
        "gateway,orchestrator",
        "--redis-url",
        "redis://127.0.0.1:7000/0",
        "--sessions-dir",
        "/srv/jarvis/sessions",
        "--workdir",
        "/tmp/b",
    ]
    assert cli.main(argv) == 0
    assert got["profile"] == "stub" and got["host"] == "127.0.0.3"
    assert got["roles"] == {"gateway", "orchestrator"}
    assert got["redis_url"] == "redis://127.0.0.1:7000/0"
    assert got["sessions_dir"] == "/srv/jarvis/sessions" and got["workdir"] == "/tmp/b"


def test_jarvis_up_refuses_an_unknown_role(capsys):
    with pytest.raises(SystemExit):
        cli.main(["up", "--stub", "--roles", "gateway,db"])
    assert "subset of gateway" in capsys.readouterr().err
    assert isinstance(cli._roles("workers"), frozenset)
    with pytest.raises(argparse.ArgumentTypeError):
        cli._roles("nope")
