"""Every orchestrator on one Redis uses one session folder: a second host naming a folder of its
own is refused at start (it would adopt sessions without their history); the same folder, seen
from another host (here: another path to it), is accepted."""

from __future__ import annotations

import pytest

from jarvis.launcher import Stack
from jarvis.redis_server import free_port
from services.orchestrator import shared_folder
from shared.bus import Bus


def test_a_folder_keeps_one_id(tmp_path):
    first = shared_folder.folder_id(tmp_path / "sessions")
    assert first == shared_folder.folder_id(tmp_path / "sessions")
    assert first != shared_folder.folder_id(tmp_path / "elsewhere")
    assert [p.name for p in (tmp_path / "sessions").iterdir()] == [shared_folder.MARKER]  # no temp left


async def test_one_folder_per_redis(bus: Bus, tmp_path):
    shared, own = tmp_path / "nfs", tmp_path / "local"
    (tmp_path / "mnt").symlink_to(shared, target_is_directory=True)
    await shared_folder.check(bus, shared, shared_folder.folder_id(shared))
    # host B mounts the same volume elsewhere: the same folder
    await shared_folder.check(bus, tmp_path / "mnt", shared_folder.folder_id(tmp_path / "mnt"))
    with pytest.raises(shared_folder.FolderMismatch, match="must name one folder shared by every host"):
        await shared_folder.check(bus, own, shared_folder.folder_id(own))
    assert 0 < await bus.redis.pttl(shared_folder.KEY) <= shared_folder.KEEP_MS
    await bus.redis.delete(shared_folder.KEY)  # every orchestrator gone a minute: forgotten
    await shared_folder.check(bus, own, shared_folder.folder_id(own))


def test_an_orchestrator_with_a_folder_of_its_own_does_not_start(redis_url, tmp_path):
    import redis

    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    hosts = [
        Stack(
            profile="stub",
            port=free_port(),
            workdir=tmp_path / name,
            roles=("orchestrator",),
            redis_url=redis_url,
            sessions_dir=tmp_path / name / "sessions",  # each its own: wrong
        )
        for name in ("a", "b")
    ]
    try:
        hosts[0].start(timeout=60)
        with pytest.raises(RuntimeError, match="orchestrator exited"):
            hosts[1].start(timeout=60)
        log = (tmp_path / "b" / "logs" / "orchestrator.log").read_text()
        assert "must name one folder shared by every host" in log
    finally:
        for h in hosts:
            h.stop()
        r.flushdb()
        r.close()
