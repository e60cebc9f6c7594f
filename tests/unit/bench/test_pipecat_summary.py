"""`--scenario b,pipecat`: both run in one command, b first, and the summary puts the measured
Pipecat density beside b's instead of the figure from the issue."""

from __future__ import annotations

from bench import report
from bench.__main__ import SCENARIOS, parse_args


def _b(density: int) -> dict:
    return {"steps": [], "density": density, "first_failing_n": None}


def test_b_and_pipecat_are_one_command_b_first():
    args = parse_args(["--scenario", "b,pipecat", "--ns", "5,10"])
    assert args.scenario == "b,pipecat"
    assert SCENARIOS.index("b") < SCENARIOS.index("pipecat")
    assert "pipecat" not in parse_args([]).scenario.split(",")  # not in `make bench`


def test_the_summary_prints_the_measured_pipecat_density_when_both_ran():
    both = report.render_summary({"scenarios": {"b": _b(100), "pipecat": {**_b(7), "scenario": "pipecat"}}})
    row = next(line for line in both.splitlines() if line.startswith("density"))
    assert "100" in row and "7 (measured, same sitting)" in row and "9 / 10" not in row


def test_without_pipecat_the_summary_keeps_the_figure_from_the_issue():
    only_b = report.render_summary({"scenarios": {"b": _b(100)}})
    row = next(line for line in only_b.splitlines() if line.startswith("density"))
    assert "9 / 10" in row


def test_pipecat_alone_gets_its_own_row():
    alone = report.render_summary({"scenarios": {"pipecat": {**_b(7), "scenario": "pipecat"}}})
    assert any(line.startswith("Pipecat 1.14 density") and " 7 " in line for line in alone.splitlines())
