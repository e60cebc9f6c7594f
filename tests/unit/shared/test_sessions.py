import os
from pathlib import Path

import pytest

from shared.sessions import BadSessionId, Session, TurnRecord, new_id, validate_id


def test_save_and_load_round_trip(tmp_path):
    s = Session(id=new_id(), context={"name": "Ada"})
    s.history.append(TurnRecord(turn=1, user="hi", assistant="hello"))
    s.save(tmp_path)
    back = Session.load(tmp_path, s.id)
    assert back.history[0].assistant == "hello"
    assert back.context == {"name": "Ada"}


def test_missing_session_is_none(tmp_path):
    assert Session.load(tmp_path, "nobody") is None


@pytest.mark.parametrize(
    "sid", ["../etc/passwd", "a/b", "..", "", "x" * 65, "with space", "-leading", "a\x00b", "é"]
)
def test_ids_cannot_escape_the_folder(sid, tmp_path):
    with pytest.raises(BadSessionId):
        validate_id(sid)
    with pytest.raises(BadSessionId):
        Session.path(tmp_path, sid)


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    s = Session(id="keep")
    s.history.append(TurnRecord(turn=1, user="first"))
    s.save(tmp_path)
    s.history.append(TurnRecord(turn=2, user="second"))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        s.save(tmp_path)
    back = Session.load(tmp_path, "keep")
    assert [t.user for t in back.history] == ["first"]
    assert [p.name for p in Path(tmp_path).iterdir()] == ["keep.json"]  # no temp file left


def test_history_window():
    s = Session(id="w")
    for i in range(5):
        s.history.append(TurnRecord(turn=i + 1, user=f"u{i}", assistant=f"a{i}"))
    msgs = s.messages(4)
    # 10 messages, a window of 4 in hops of 2: cut at 6
    assert [m["content"] for m in msgs] == ["u3", "a3", "u4", "a4"]
    assert [m["content"] for m in Session(id="x").messages(4)] == []


def test_the_history_window_hops_so_the_prompt_prefix_stays_put_for_several_turns():
    s = Session(id="h")
    firsts = []
    for turn in range(1, 31):
        window = s.messages(20)
        assert 11 <= len(window) <= 20 or len(window) == 2 * (turn - 1)
        if window:
            assert window[-1]["content"] == f"a{turn - 1}"  # the newest words always go
            firsts.append(window[0]["content"])
        s.history.append(TurnRecord(turn=turn, user=f"u{turn}", assistant=f"a{turn}"))
    changes = [t for t in range(1, len(firsts)) if firsts[t] != firsts[t - 1]]
    assert len(changes) <= 4  # over 30 turns, a sliding window would have moved it 19 times
    # turn 20's prompt starts as turn 19's did: the server evaluates only the newest turn
    assert firsts[18] == firsts[17]
