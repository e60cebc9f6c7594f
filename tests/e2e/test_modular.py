"""The modular end-to-end runner, in both modes, as part of the suite: the plumbing on stub
models, and the CPU profile's real models under the resource service's arbitration (a simulated
GPU on which a pipeline switch forces an eviction and a load)."""

import pytest

from jarvis.redis_topologies import flush
from tests import runner_modular_e2e as runner
from tests.support.speech import have_espeak

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and sox make the test speech")


def test_plumbing(tmp_path):
    report = runner.run(plumbing=True, workdir=tmp_path)
    print(report.summary())
    assert report.ok, report.summary()


def test_plumbing_on_a_redis_cluster(tmp_path, redis_cluster_url):
    flush(redis_cluster_url)
    report = runner.run(plumbing=True, workdir=tmp_path, redis_url=redis_cluster_url)
    print(report.summary())
    assert report.ok, report.summary()


@pytest.mark.models
def test_full_cpu_profile(tmp_path):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("piper")
    pytest.importorskip("llama_cpp")
    report = runner.run(plumbing=False, workdir=tmp_path, timeout=240)
    print(report.summary())
    assert report.ok, report.summary()
    # the models ran under arbitration: LOADING, the eviction on the pipeline switch, the turn after it
    passed = {name for name, ok, _ in report.checks if ok}
    assert set(runner.ARBITRATION_CHECKS) <= passed, report.summary()
