"""Rate-limited logging: one record per cause per interval, with a count of the rest."""

import logging

from shared.ratelog import RateLimitedLog


def test_one_record_per_cause_per_interval(caplog):
    log = RateLimitedLog(logging.getLogger("t"), every_s=60)
    with caplog.at_level(logging.WARNING):
        for _ in range(1000):
            log.warning("a", "bad frame")
        log.warning("b", "other cause")
    assert [r.getMessage() for r in caplog.records] == ["bad frame", "other cause"]
    log._last["a"] = (1.0, 999)  # the interval passed
    with caplog.at_level(logging.WARNING):
        log.warning("a", "bad frame")
    assert "999 more like it" in caplog.records[-1].getMessage()
