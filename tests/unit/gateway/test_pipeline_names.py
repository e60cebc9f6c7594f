"""The pipeline names the gateway accepts are the orchestrator's pipelines."""

from services.orchestrator.pipeline import PIPELINES
from shared.protocol import PIPELINE_NAMES


def test_the_gateway_knows_every_pipeline_and_no_other():
    assert set(PIPELINES) == PIPELINE_NAMES
