"""Session saves on a busy host: one save per turn, many in flight at once. Each write holds the
whole history serialized, so a session's writes go one at a time, in order, and the saves asked
for meanwhile are coalesced into the next write; every save returns with its turn on disk."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from services.orchestrator.config import TurnSettings
from services.orchestrator.service import Orchestrator
from services.orchestrator.session import SessionRunner
from shared.bus import Bus
from shared.config import Settings
from shared.sessions import Session, TurnRecord

TURNS = 60


async def test_saves_piling_up_are_written_one_at_a_time_in_order_and_none_is_lost(
    redis_url, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    settings = Settings(redis_url=redis_url, sessions_dir=tmp_path)
    bus = Bus(redis_url, socket_timeout=10)
    writes: list[int] = []  # the turns each write held
    inflight, most = 0, 0
    guard = threading.Lock()
    save = Session.save

    def slow_save(self: Session, root):  # a loaded disk: each write takes a while
        nonlocal inflight, most
        with guard:
            inflight += 1
            most = max(most, inflight)
        try:
            time.sleep(0.02)
            writes.append(len(self.history))
            return save(self, root)
        finally:
            with guard:
                inflight -= 1

    monkeypatch.setattr(Session, "save", slow_save)
    try:
        orch = Orchestrator(settings, bus)
        runner = SessionRunner(orch, Session(id="saves-1"), 1, "0-0", settings, TurnSettings())
        orch.runners[runner.sid] = runner

        async def turn(n: int) -> None:
            runner.session.history.append(TurnRecord(turn=n, user=f"question {n}", assistant="answer"))
            await orch.save(runner)
            on_disk = Session.load(tmp_path, runner.sid)
            assert on_disk is not None and len(on_disk.history) >= n  # its turn was written

        tasks = []
        for n in range(1, TURNS + 1):  # a turn ends every few ms: saves pile up
            tasks.append(asyncio.create_task(turn(n)))
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)

        assert most == 1  # one serialized history at a time
        assert writes == sorted(writes) and writes[-1] == TURNS  # in order, the last one whole
        assert len(writes) < TURNS // 3  # coalesced: not one write per turn
        saved = Session.load(tmp_path, runner.sid)
        assert saved is not None and [t.turn for t in saved.history] == list(range(1, TURNS + 1))
        assert orch._saving == {}  # nothing kept per session once its saves are done
    finally:
        await bus.close()
