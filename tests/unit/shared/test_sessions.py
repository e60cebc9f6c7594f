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
    assert [m["content"] for m in msgs] == ["u3", "a3", "u4", "a4"]
