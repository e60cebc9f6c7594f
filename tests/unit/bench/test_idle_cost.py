"""`python -m bench.idle_cost`: the Silero call is timed at every gap asked for, and the table shows
each gap beside the back-to-back figure it is compared with."""

import json

from bench import idle_cost


def test_every_gap_is_timed_and_shown(tmp_path):
    out = tmp_path / "idle.json"
    assert idle_cost.main(["--calls", "5", "--gap-ms", "0,1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["silero_us"]) == {"0", "1"}
    for r in result["silero_us"].values():
        assert r["n"] == 5 and r["p50"] > 0
    table = idle_cost.render(result).splitlines()
    assert [line.split()[0] for line in table[2:]] == ["0", "1"]
