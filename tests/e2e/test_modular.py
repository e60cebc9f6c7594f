"""The modular end-to-end runner, in both modes, as part of the suite."""

import pytest

from tests import runner_modular_e2e as runner
from tests.support.speech import have_espeak

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and sox make the test speech")


def test_plumbing(tmp_path):
    report = runner.run(plumbing=True, workdir=tmp_path)
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
