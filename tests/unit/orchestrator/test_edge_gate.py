"""The orchestrator warns when the gateway's VAD gate cannot cover what a turn slices (the
default settings do)."""

from __future__ import annotations

import logging

import pytest

from services.orchestrator.config import EndOfTurnConfig, EndpointSettings
from services.orchestrator.service import _check_edge_gate
from shared.config import Settings


def test_the_default_gate_covers_the_default_turn(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        _check_edge_gate(Settings(), EndpointSettings())
    assert not caplog.records


@pytest.mark.parametrize(
    ("settings", "endpoint", "names"),
    [
        (Settings(edge_gate=0.6), EndpointSettings(), "JARVIS_EDGE_GATE"),
        (Settings(edge_pre_roll_ms=100), EndpointSettings(), "JARVIS_EDGE_PRE_ROLL_MS"),
        (
            Settings(),
            EndpointSettings(end_of_turn=EndOfTurnConfig(ceiling_ms=3000)),
            "JARVIS_EDGE_HANGOVER_MS",
        ),
    ],
)
def test_a_gate_that_cannot_cover_the_turn_is_reported(caplog, settings, endpoint, names) -> None:
    with caplog.at_level(logging.WARNING):
        _check_edge_gate(settings, endpoint)
    assert names in caplog.text
