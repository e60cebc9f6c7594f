"""Which resource service (GPU host) the client asks for each model of a request."""

from __future__ import annotations

import pytest

from services.resource.client import UnknownModelError, route
from services.resource.messages import ServiceRecord


def host(sid: str, models: list[str], resident: dict[str, str] | None = None) -> ServiceRecord:
    return ServiceRecord(
        service_id=sid,
        instance="i",
        host=sid,
        pid=1,
        backend="simulated",
        started=0,
        beat=0,
        models=models,
        resident=resident or {},
    )


def test_each_model_goes_to_the_host_that_manages_it():
    a, b = host("gpu-a", ["whisper", "chatterbox"]), host("gpu-b", ["llm"])
    assert route([b, a], ["whisper", "llm", "chatterbox"]) == {
        "gpu-a": ["whisper", "chatterbox"],
        "gpu-b": ["llm"],
    }


def test_a_resident_copy_wins_then_the_turns_other_models_host_then_the_first_by_id():
    a = host("gpu-a", ["whisper", "llm"])
    b = host("gpu-b", ["whisper", "llm"], resident={"llm": "sleeping"})
    assert route([a, b], ["llm"]) == {"gpu-b": ["llm"]}  # resident (even asleep) on B
    assert route([a, b], ["llm", "whisper"]) == {"gpu-b": ["llm", "whisper"]}  # kept together
    assert route([b, a], ["whisper"]) == {"gpu-a": ["whisper"]}  # nowhere resident: the first by id


def test_a_model_nobody_manages_is_a_clear_error():
    with pytest.raises(UnknownModelError, match="no running resource service manages 'vlm'.*gpu-a"):
        route([host("gpu-a", ["llm"])], ["llm", "vlm"])


def test_a_model_asked_twice_is_asked_once():
    assert route([host("gpu-a", ["llm"])], ["llm", "llm"]) == {"gpu-a": ["llm"]}
