"""Smart Turn v3.2: the features the model was trained on, batching that changes no answer,
clear errors when the model is missing, and a batcher that keeps sessions apart."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from services.orchestrator import smart_turn as st_mod
from services.orchestrator.smart_turn import (
    N_FRAMES,
    N_MELS,
    N_SAMPLES,
    SmartTurn,
    SmartTurnBatcher,
    SmartTurnMissing,
    default_model_path,
)
from tests.support.speech import concat, have_espeak, noise, silence, speak

try:
    MODEL = default_model_path()
except SmartTurnMissing as exc:
    pytest.skip(f"Smart Turn model unavailable: {exc}", allow_module_level=True)

needs_espeak = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and sox are needed for real speech")


@pytest.fixture(scope="module")
def model() -> SmartTurn:
    return SmartTurn()


@pytest.fixture(scope="module")
def reference():
    """The numpy feature code that ships beside the model (loaded by path: it needs only numpy)."""
    path = MODEL.parent.parent / "_whisper_features.py"
    if not path.is_file():
        pytest.skip("the reference feature code is not in this pipecat-ai wheel")
    spec = importlib.util.spec_from_file_location("smart_turn_reference_features", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compute_whisper_log_mel_features


@pytest.fixture(scope="module")
def speech() -> dict[str, np.ndarray]:
    if not have_espeak():
        pytest.skip("espeak-ng and sox are needed for real speech")
    question = speak("What time does the pharmacy on Main Street close tonight?")
    lead_in = speak("I was wondering")
    return {
        "question": concat(question, silence(0.3)),
        "lead_in": concat(lead_in, silence(0.3)),
        "long": concat(*([question, silence(0.5)] * 4)),  # > 8 s: only its end counts
        "noisy": concat(question, silence(0.3))
        + noise(len(question) / 16000 + 0.3, level=0.02)[: len(question) + 4800],
    }


def reference_input(samples: np.ndarray) -> np.ndarray:
    """What the reference caller does: float in [-1, 1], the last 8 s, zero-padded at the start."""
    x = samples.astype(np.float32) / 32768.0
    x = x[-N_SAMPLES:]
    return np.concatenate([np.zeros(N_SAMPLES - len(x), np.float32), x])


@needs_espeak
@pytest.mark.parametrize("name", ["question", "lead_in", "long", "noisy"])
def test_features_match_the_reference_the_model_ships_with(model, reference, speech, name):
    ours = model.features(speech[name])
    ref = reference(reference_input(speech[name]), do_normalize=True)
    assert ours.shape == ref.shape == (N_MELS, N_FRAMES)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-4)


@needs_espeak
def test_features_without_normalisation_would_differ(model, reference, speech):
    """The waveform normalisation matters: Whisper ASR's features are not Smart Turn's."""
    ref_plain = reference(reference_input(speech["question"]), do_normalize=False)
    assert np.abs(model.features(speech["question"]) - ref_plain).max() > 0.05


@needs_espeak
def test_int16_and_float_audio_give_the_same_features(model, speech):
    pcm = speech["question"]
    np.testing.assert_allclose(model.features(pcm), model.features(pcm.astype(np.float32) / 32768), atol=1e-6)


@needs_espeak
def test_only_the_last_eight_seconds_count(model, speech):
    long = speech["long"]
    assert len(long) > N_SAMPLES
    junk = concat(noise(3.0, level=0.3), long)
    np.testing.assert_array_equal(model.features(junk), model.features(long))


@needs_espeak
def test_a_batch_gives_each_clip_its_own_answer(model, speech):
    clips = [speech["question"], speech["lead_in"], speech["noisy"], silence(1.0)]
    one_by_one = np.array([model.predict_one(c) for c in clips])
    batched = model.predict(clips)
    assert batched.shape == (4,)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert ((batched >= 0) & (batched <= 1)).all()
    # reordering the batch reorders the answers, nothing else
    np.testing.assert_allclose(model.predict(clips[::-1]), batched[::-1], atol=1e-5)


def test_bad_audio_is_refused_clearly(model):
    with pytest.raises(ValueError, match="mono"):
        model.features(np.zeros((2, 16000), np.float32))
    bad = np.zeros(16000, np.float32)
    bad[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.features(bad)
    with pytest.raises(ValueError, match="shape"):
        model.predict_features(np.zeros((1, 80, 400), np.float32))
    assert model.predict([]).shape == (0,)


def test_missing_model_says_how_to_install_it(monkeypatch, tmp_path):
    with pytest.raises(SmartTurnMissing, match="not found"):
        SmartTurn(path=tmp_path / "nope.onnx")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        st_mod.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pipecat" else real_find_spec(name, *a),
    )
    with pytest.raises(SmartTurnMissing, match=r"pip install --no-deps pipecat-ai==1\.14\.0"):
        default_model_path()
    assert issubclass(SmartTurnMissing, FileNotFoundError)


def test_a_model_that_is_not_smart_turn_is_refused():
    from shared.vad import default_model_path as silero_path

    with pytest.raises(ValueError, match="not a Smart Turn v3 graph"):
        SmartTurn(path=silero_path())


def test_the_pipecat_framework_is_never_imported():
    """Loading and running the model imports neither pipecat nor faster_whisper (its feature
    extractor is loaded on its own): checked in a fresh interpreter."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from services.orchestrator.smart_turn import SmartTurn\n"
        "SmartTurn().predict_one(np.zeros(16000, np.float32))\n"
        "print(sorted(m for m in ('pipecat', 'faster_whisper', 'ctranslate2') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- the batcher


@needs_espeak
async def test_requests_of_one_tick_share_one_model_call(model, speech):
    batcher = SmartTurnBatcher(model)
    clips = [speech["question"], speech["lead_in"], speech["noisy"]]
    try:
        got = await asyncio.gather(*(batcher.score(c) for c in clips))
    finally:
        await batcher.aclose()
    assert batcher.batches == 1 and batcher.scored == 3
    np.testing.assert_allclose(got, model.predict(clips), atol=1e-5)


async def test_max_batch_splits_and_late_requests_join_the_next_batch(model):
    batcher = SmartTurnBatcher(model, max_batch=2)
    rng = np.random.default_rng(3)
    clips = [(rng.standard_normal(16000 * (i + 1)) * 0.05).astype(np.float32) for i in range(5)]
    try:
        first = [asyncio.ensure_future(batcher.score(c)) for c in clips[:3]]
        await asyncio.sleep(0)
        late = asyncio.ensure_future(batcher.score(clips[3]))  # while the first batch runs
        got = await asyncio.gather(*first, late, batcher.score(clips[4]))
    finally:
        await batcher.aclose()
    assert batcher.scored == 5
    assert 3 <= batcher.batches <= 4
    np.testing.assert_allclose(got, model.predict(clips), atol=1e-5)


async def test_one_sessions_bad_audio_fails_only_that_session(model):
    batcher = SmartTurnBatcher(model)
    good = np.zeros(8000, np.float32)
    try:
        results = await asyncio.gather(
            batcher.score(good),
            batcher.score(np.zeros((2, 10), np.float32)),
            batcher.score(good),
            return_exceptions=True,
        )
    finally:
        await batcher.aclose()
    assert isinstance(results[1], ValueError)
    assert results[0] == pytest.approx(results[2]) and isinstance(results[0], float)


async def test_a_cancelled_request_does_not_disturb_the_others(model):
    batcher = SmartTurnBatcher(model)
    clip = np.zeros(8000, np.float32)
    try:
        doomed = asyncio.ensure_future(batcher.score(clip))
        kept = asyncio.ensure_future(batcher.score(clip))
        await asyncio.sleep(0)
        doomed.cancel()
        assert isinstance(await kept, float)
    finally:
        await batcher.aclose()
    assert doomed.cancelled()


async def test_scoring_runs_off_the_event_loop(model):
    """While a batch is scored the loop keeps ticking (the orchestrator's VAD keeps running)."""
    batcher = SmartTurnBatcher(model)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    t = asyncio.ensure_future(ticker())
    try:
        await asyncio.gather(*(batcher.score(np.zeros(16000, np.float32)) for _ in range(4)))
    finally:
        t.cancel()
        await batcher.aclose()
    assert ticks >= 5


def test_model_path_is_inside_the_wheel():
    assert MODEL.name == "smart-turn-v3.2-cpu.onnx"
    assert Path(MODEL).stat().st_size > 5_000_000
