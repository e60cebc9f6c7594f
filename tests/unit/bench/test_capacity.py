"""Per-process scheduler figures, Redis's INFO deltas and the Redis capacity projection
(bench/monitor.py, bench/report.py)."""

from __future__ import annotations

import os

import pytest
from redis._parsers.helpers import parse_info

from bench import monitor, report
from bench.monitor import Mark, ProcMonitor, RedisSample, Sched
from bench.report import RedisStep, redis_capacity

STATUS = """Name:\tpython
State:\tS (sleeping)
Threads:\t3
voluntary_ctxt_switches:\t1520
nonvoluntary_ctxt_switches:\t37
"""


def test_parse_ctxt_reads_both_counters():
    assert monitor.parse_ctxt(STATUS) == (1520, 37)
    assert monitor.parse_ctxt("Name:\tx\n") == (0, 0)


def test_parse_schedstat_reads_run_wait_and_periods():
    assert monitor.parse_schedstat("401474 3432087 12\n") == (401474, 3432087, 12)
    with pytest.raises(ValueError):
        monitor.parse_schedstat("12 34")


def test_read_sched_of_this_process_counts_its_threads():
    s = monitor.read_sched(os.getpid())
    assert s is not None
    assert s.threads >= 1
    assert s.voluntary + s.involuntary > 0
    assert s.run_periods > 0


def test_read_sched_of_a_process_that_is_gone_is_none():
    assert monitor.read_sched(2**22 + 12345) is None


def _mark(wall: float, cpu: float, sched: Sched) -> Mark:
    return Mark(wall, {"orchestrator": cpu}, {}, {"orchestrator-1": cpu}, {"orchestrator-1": sched})


def test_activity_gives_rates_per_second_and_per_session():
    a = _mark(100.0, 10.0, Sched(1000, 100, 1200, 1.0, 4))
    b = _mark(110.0, 15.0, Sched(6000, 600, 7000, 2.0, 5))
    act = ProcMonitor.activity(a, b, sessions=50)["orchestrator-1"]
    assert act["cpu_cores"] == pytest.approx(0.5)
    assert act["cores_per_session"] == pytest.approx(0.01)
    assert act["voluntary_cs_per_s"] == pytest.approx(500.0)
    assert act["involuntary_cs_per_s"] == pytest.approx(50.0)
    assert act["wakeups_per_s"] == act["voluntary_cs_per_s"]
    assert act["wakeups_per_s_per_session"] == pytest.approx(10.0)
    assert act["run_periods_per_s"] == pytest.approx(580.0)
    assert act["runqueue_wait_cores"] == pytest.approx(0.1)
    assert act["threads"] == 5


def test_activity_skips_a_process_missing_at_the_first_mark():
    a = Mark(0.0, {}, {}, {}, {})
    b = _mark(1.0, 1.0, Sched())
    assert ProcMonitor.activity(a, b, sessions=1) == {}


INFO_0 = (
    "# Memory\r\nused_memory:1048576\r\nused_memory_rss:8388608\r\n"
    "# Stats\r\ntotal_commands_processed:1000\r\n"
    "# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:2.5\r\n"
    "# Commandstats\r\n"
    "cmdstat_xadd:calls=100,usec=500,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n"
    "cmdstat_client|setname:calls=4,usec=4,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n"
)
INFO_1 = (
    "# Memory\r\nused_memory:11534336\r\nused_memory_rss:20971520\r\n"
    "# Stats\r\ntotal_commands_processed:21000\r\n"
    "# CPU\r\nused_cpu_sys:2.5\r\nused_cpu_user:3.5\r\n"
    "# Commandstats\r\n"
    "cmdstat_xadd:calls=10100,usec=50500,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n"
    "cmdstat_evalsha:calls=2000,usec=40000,usec_per_call=20.00,rejected_calls=0,failed_calls=0\r\n"
    "cmdstat_client|setname:calls=4,usec=4,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n"
)


def test_redis_sample_reads_info_as_redis_py_parses_it():
    s = RedisSample.from_info(parse_info(INFO_0), wall=5.0)
    assert s.used_memory == 1 << 20
    assert s.commands == 1000
    assert s.cpu_s == pytest.approx(4.0)
    assert s.calls == {"xadd": (100, 500), "client|setname": (4, 4)}


def test_redis_usage_deltas_over_the_window_per_session():
    a = RedisSample.from_info(parse_info(INFO_0), wall=100.0)
    b = RedisSample.from_info(parse_info(INFO_1), wall=110.0)
    u = monitor.redis_usage(a, b, sessions=10)
    assert u["info_cpu_cores"] == pytest.approx(0.2)  # 2 CPU seconds over 10 s
    assert u["commands_per_s"] == pytest.approx(2000.0)
    assert u["commands_per_s_per_session"] == pytest.approx(200.0)
    assert u["cpu_us_per_command"] == pytest.approx(100.0)  # 0.2 cores / 2000 per s
    assert u["used_memory_mib_per_session"] == pytest.approx(1.0)  # 10 MiB over 10 sessions
    busiest = u["commands"]
    assert [c["command"] for c in busiest] == ["xadd", "evalsha"]  # by CPU; unchanged ones left out
    assert busiest[0]["calls_per_s_per_session"] == pytest.approx(100.0)
    assert busiest[1]["usec_per_call"] == pytest.approx(20.0)
    assert busiest[0]["cpu_share"] == pytest.approx(0.005)


def test_redis_usage_memory_is_from_the_idle_sample():
    idle = RedisSample(0.0, 0, 0, 0, 0.0, {})
    a = RedisSample.from_info(parse_info(INFO_0), wall=100.0)
    b = RedisSample.from_info(parse_info(INFO_1), wall=110.0)
    u = monitor.redis_usage(a, b, sessions=11, idle=idle)
    assert u["used_memory_mib_per_session"] == pytest.approx(1.0)  # 11 MiB from nothing


def test_capacity_splits_marginal_and_fixed_cost():
    # cores = 0.02 + 0.002 N, commands/s = 100 + 40 N: one core carries (1 - 0.02) / 0.002
    steps = [RedisStep(n, 0.02 + 0.002 * n, 100 + 40.0 * n, 0.5) for n in (10, 25, 50)]
    cap = redis_capacity(steps)
    assert cap is not None
    assert cap["cores_per_session"] == pytest.approx(0.002)
    assert cap["fixed_cores"] == pytest.approx(0.02)
    assert cap["commands_per_s_per_session"] == pytest.approx(40.0)
    assert cap["sessions_per_core_by_cpu"] == 490
    assert cap["second_redis_beyond_sessions"] == 340  # (0.7 - 0.02) / 0.002
    assert cap["used_memory_mib_at_that"] == pytest.approx(0.5 * cap["second_redis_beyond_sessions"])
    # by commands: one core runs 1e6 / us_per_command commands per second
    us = 1e6 * sum(s.cores for s in steps) / sum(s.commands_per_s for s in steps)
    assert cap["cpu_us_per_command"] == pytest.approx(us, rel=1e-3)
    assert cap["sessions_per_core_by_commands"] == int((1e6 / us - 100) / 40)


def test_capacity_from_one_step_counts_everything_per_session():
    cap = redis_capacity([RedisStep(25, 0.1, 5000.0)])
    assert cap is not None
    assert cap["fixed_cores"] == 0
    assert cap["cores_per_session"] == pytest.approx(0.004)
    assert cap["sessions_per_core_by_cpu"] == 250
    assert cap["second_redis_beyond_sessions"] == 175
    assert cap["mib_per_session"] is None


def test_capacity_counts_only_the_steps_that_kept_up():
    steps = [
        RedisStep(10, 0.04, 500.0),
        RedisStep(20, 0.06, 900.0),
        RedisStep(100, 0.05, 950.0, kept_up=False),  # starved: moved less than 100 sessions' audio
    ]
    cap = redis_capacity(steps)
    assert cap is not None
    assert cap["from_steps"] == [10, 20]
    assert cap["from_steps_that_fell_behind"] is False
    assert cap["cores_per_session"] == pytest.approx(0.002)
    assert cap["fixed_cores"] == pytest.approx(0.02)


def test_capacity_when_no_step_kept_up_is_the_smallest_step_flagged():
    steps = [RedisStep(25, 0.08, 2450.0, kept_up=False), RedisStep(10, 0.07, 1450.0, kept_up=False)]
    cap = redis_capacity(steps)
    assert cap is not None
    assert cap["from_steps"] == [10]
    assert cap["from_steps_that_fell_behind"] is True
    assert cap["cores_per_session"] == pytest.approx(0.007)


def test_capacity_without_steps_is_none():
    assert redis_capacity([]) is None
    assert redis_capacity([RedisStep(0, 0.1, 10.0)]) is None


def test_render_b_shows_processes_baseline_and_redis():
    step = {
        "sessions": 10,
        "framework_ms": {"p50": 10.0, "p99": 20.0},
        "overhead_ms": {"p50": 40.0, "p99": 60.0},
        "late_decision_frames": 0,
        "decision_frames": 120,
        "missed_turns": 0,
        "false_turns": 0,
        "processes": {"gateway": {"cpu_cores": 0.1}, "redis": {"cpu_cores": 0.05}},
        "stack_cpu_cores": 0.3,
        "mib_per_session": 0.2,
        "verdict": {"ok": True, "reasons": []},
        "activity": {
            "gateway": {"cpu_cores": 0.1, "cores_per_session": 0.01, "voluntary_cs_per_s": 800.0},
            "loadgen": {"cpu_cores": 0.2, "cores_per_session": 0.02},
        },
        "redis": monitor.redis_usage(
            RedisSample.from_info(parse_info(INFO_0), 0.0),
            RedisSample.from_info(parse_info(INFO_1), 10.0),
            10,
        ),
    }
    b = {
        "steps": [step],
        "density": 10,
        "first_failing_n": None,
        "baseline": {"cores_per_session": 0.002, "cpu_sessions": 50},
        "redis_capacity": redis_capacity([RedisStep(10, 0.05, 2000.0, 1.0, kept_up=False)]),
    }
    text = report.render_b(b)
    assert "stack (no loadgen)" in text
    assert "x5.0" in text  # 0.1 cores / 10 sessions against 0.002 in-process
    assert "in-process baseline: 2.0 millicores per session" in text
    assert "one Redis core carries 200 sessions by CPU" in text
    assert "FELL BEHIND: a bound, not a measure" in text
    assert "xadd" in text
