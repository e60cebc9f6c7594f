"""`python -m bench.worker_hop`: each of the three workers (Jarvis's LLM worker, a bare redis-py
loop, a bare RESP loop) answers every job on its own redis-server, at each gap between jobs, and
the table names them all."""

import json

from bench import worker_hop


def test_every_worker_answers_every_job(tmp_path):
    out = tmp_path / "hop.json"
    assert worker_hop.main(["--jobs", "10", "--warm", "2", "--gap-ms", "20,2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["workers"]) == set(result["by_gap"]) == set(worker_hop.WORKERS)
    for kind, runs in result["by_gap"].items():
        assert set(runs) == {"20", "2"}
        assert result["workers"][kind] == runs["20"]  # the idle gap's figures are the headline
        for r in runs.values():
            assert r["first_token_ms"]["n"] == 10
            assert 0 < r["first_token_ms"]["p50"] <= r["tts_job_ms"]["p50"]
    table = worker_hop.render(result)
    assert all(kind in table for kind in worker_hop.WORKERS)
