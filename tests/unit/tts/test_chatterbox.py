"""ChatterboxTts against a stand-in `chatterbox.tts` module (the real package pins torch and
downloads its weights from a hub, so it cannot run here). The stand-in has the real 0.1.7
signatures, so a wrong keyword fails here as it would on the GPU. Checked: one generate()
per sentence with audio leaving after the first, ~100 ms PCM16 chunks with clipping,
the reference clip and voice settings reaching the model, the device choice, the warm-up
at load, replicas that let two sessions synthesise at once, and JARVIS_TTS_ENGINE."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from services.tts.chatterbox import ChatterboxTts, split_sentences, to_pcm16
from services.tts.config import TtsSettings
from shared.model import AudioChunk, TtsRequest

SR = 24000


class FakeTensor:
    """The little of torch.Tensor the adapter may touch: detach/cpu/squeeze/numpy."""

    def __init__(self, array: np.ndarray) -> None:
        self._a = np.asarray(array, dtype=np.float32)

    def detach(self) -> FakeTensor:
        return self

    def cpu(self) -> FakeTensor:
        return self

    def squeeze(self, dim: int | None = None) -> FakeTensor:
        return FakeTensor(self._a.squeeze() if dim is None else self._a.squeeze(dim))

    def numpy(self) -> np.ndarray:
        return self._a

    @property
    def shape(self) -> tuple[int, ...]:
        return self._a.shape


class FakeChatterboxTTS:
    """Same public surface as chatterbox.tts.ChatterboxTTS 0.1.7."""

    instances: ClassVar[list[FakeChatterboxTTS]] = []
    seconds_per_word = 0.1
    delay_s = 0.0
    wave: np.ndarray | None = None  # fixed output instead of the default tone

    def __init__(self, device: str) -> None:
        self.sr = SR
        self.device = device
        self.conds = "builtin-conds"
        self.calls: list[dict] = []
        self.threads: set[str] = set()

    @classmethod
    def from_pretrained(cls, device) -> FakeChatterboxTTS:
        model = cls(device)
        cls.instances.append(model)
        return model

    def prepare_conditionals(self, wav_fpath, exaggeration=0.5):
        self.conds = f"conds:{wav_fpath}"

    def generate(
        self,
        text,
        repetition_penalty=1.2,
        min_p=0.05,
        top_p=1.0,
        audio_prompt_path=None,
        exaggeration=0.5,
        cfg_weight=0.5,
        temperature=0.8,
    ):
        if audio_prompt_path:
            self.prepare_conditionals(audio_prompt_path, exaggeration=exaggeration)
        else:
            assert self.conds is not None, (
                "Please `prepare_conditionals` first or specify `audio_prompt_path`"
            )
        self.calls.append(
            {
                "text": text,
                "audio_prompt_path": audio_prompt_path,
                "exaggeration": exaggeration,
                "cfg_weight": cfg_weight,
                "temperature": temperature,
                "conds": self.conds,
            }
        )
        self.threads.add(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.wave is not None:
            return FakeTensor(self.wave[None, :])
        n = int(SR * self.seconds_per_word * len(text.split()))
        return FakeTensor(0.5 * np.sin(np.arange(n) / 10.0)[None, :])


@pytest.fixture
def fake_chatterbox(monkeypatch):
    FakeChatterboxTTS.instances = []
    FakeChatterboxTTS.delay_s = 0.0
    FakeChatterboxTTS.wave = None
    package = types.ModuleType("chatterbox")
    package.__path__ = []
    module = types.ModuleType("chatterbox.tts")
    module.ChatterboxTTS = FakeChatterboxTTS
    package.tts = module
    monkeypatch.setitem(sys.modules, "chatterbox", package)
    monkeypatch.setitem(sys.modules, "chatterbox.tts", module)
    return FakeChatterboxTTS


async def loaded(**overrides) -> ChatterboxTts:
    """A loaded model (one replica unless asked); the warm-up's calls are cleared."""
    overrides.setdefault("chatterbox_replicas", 1)
    model = ChatterboxTts(TtsSettings(**overrides))
    await model.load()
    for fake in FakeChatterboxTTS.instances:
        fake.warmup_calls, fake.calls = fake.calls, []
    return model


async def collect(model: ChatterboxTts, text: str, voice: str | None = None) -> list[AudioChunk]:
    return [c async for c in model.infer(TtsRequest(text=text, voice=voice))]


def test_importing_and_constructing_needs_neither_torch_nor_chatterbox():
    code = (
        "import sys\n"
        "from services.tts.chatterbox import ChatterboxTts\n"
        "ChatterboxTts()\n"
        "assert 'torch' not in sys.modules and 'chatterbox' not in sys.modules, sorted(sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[3]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=60)


async def test_loads_on_the_configured_device(fake_chatterbox):
    model = await loaded(chatterbox_device="cuda:1")
    assert fake_chatterbox.instances[0].device == "cuda:1"
    assert model.sample_rate == SR and model.loaded
    await model.unload()
    assert not model.loaded


async def test_streams_sentence_by_sentence_in_100ms_chunks(fake_chatterbox):
    model = await loaded()
    text = "Hello there. How are you today? I am fine, thanks!"
    chunks = await collect(model, text)
    fake = fake_chatterbox.instances[0]
    assert [c["text"] for c in fake.calls] == ["Hello there.", "How are you today?", "I am fine, thanks!"]
    assert all(c.sample_rate == SR for c in chunks)
    sizes = [len(c.pcm) // 2 for c in chunks]
    assert max(sizes) == SR // 10  # 100 ms
    expected = sum(int(SR * 0.1 * len(c["text"].split())) for c in fake.calls)
    assert sum(sizes) == expected
    assert threading.main_thread().name not in fake.threads, "generate() ran on the event loop's thread"


async def test_first_audio_leaves_before_later_sentences_are_generated(fake_chatterbox):
    fake_chatterbox.delay_s = 0.2
    model = await loaded()
    fake = None
    calls_at_first_chunk = None
    t0 = time.perf_counter()
    first_at = None
    async for _chunk in model.infer(TtsRequest(text="One sentence here. Another one here. And a third one.")):
        if first_at is None:
            first_at = time.perf_counter() - t0
            fake = fake_chatterbox.instances[0]
            calls_at_first_chunk = len(fake.calls)
    total = time.perf_counter() - t0
    assert calls_at_first_chunk == 1
    assert first_at < total / 2


async def test_pcm16_conversion_clips_instead_of_wrapping(fake_chatterbox):
    fake_chatterbox.wave = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.7, -3.0, np.nan], dtype=np.float32)
    model = await loaded()
    chunks = await collect(model, "Clip me.")
    samples = np.frombuffer(b"".join(c.pcm for c in chunks), dtype="<i2")
    assert samples.tolist() == [0, 16384, -16384, 32767, -32767, 32767, -32767, 0]


def test_to_pcm16_accepts_tensor_like_and_arrays():
    assert to_pcm16(FakeTensor(np.array([[0.25, -0.25]]))).tolist() == [8192, -8192]
    assert to_pcm16([0.0, 2.0]).tolist() == [0, 32767]


async def test_reference_clip_from_settings_reaches_the_model(fake_chatterbox, tmp_path):
    clip = tmp_path / "me.wav"
    clip.write_bytes(b"RIFF")
    model = await loaded(
        chatterbox_voice_prompt=clip,
        chatterbox_exaggeration=0.7,
        chatterbox_cfg_weight=0.3,
        chatterbox_temperature=0.6,
    )
    await collect(model, "First sentence. Second sentence.")
    fake = fake_chatterbox.instances[0]
    calls = fake.calls
    assert fake.warmup_calls[0]["audio_prompt_path"] == str(clip)  # embedded once, at load
    assert calls[0]["audio_prompt_path"] is None and calls[1]["audio_prompt_path"] is None  # reused
    assert all(c["conds"] == f"conds:{clip}" for c in calls)
    assert all((c["exaggeration"], c["cfg_weight"], c["temperature"]) == (0.7, 0.3, 0.6) for c in calls)
    await collect(model, "Next reply.")
    assert calls[2]["audio_prompt_path"] is None and calls[2]["conds"] == f"conds:{clip}"


async def test_named_voice_and_back_to_the_builtin_voice(fake_chatterbox, tmp_path):
    (tmp_path / "alice.wav").write_bytes(b"RIFF")
    model = await loaded(chatterbox_voices_dir=tmp_path)
    await collect(model, "As Alice.", voice="alice")
    await collect(model, "Built in.")
    calls = fake_chatterbox.instances[0].calls
    assert calls[0]["audio_prompt_path"] == str(tmp_path / "alice.wav")
    assert calls[1]["audio_prompt_path"] is None and calls[1]["conds"] == "builtin-conds"


@pytest.mark.parametrize("voice", ["bob", "../alice", "/etc/passwd", "a/b"])
async def test_unknown_or_path_like_voices_are_refused(fake_chatterbox, tmp_path, voice):
    (tmp_path / "alice.wav").write_bytes(b"RIFF")
    model = await loaded(chatterbox_voices_dir=tmp_path)
    with pytest.raises(ValueError):
        await collect(model, "Hi.", voice=voice)
    assert fake_chatterbox.instances[0].calls == []


async def test_missing_reference_clip_fails_at_load(fake_chatterbox, tmp_path):
    with pytest.raises(FileNotFoundError):
        await loaded(chatterbox_voice_prompt=tmp_path / "nope.wav")


async def test_text_without_words_gives_no_audio(fake_chatterbox):
    model = await loaded()
    assert await collect(model, "  ...  ") == []
    assert fake_chatterbox.instances[0].calls == []


async def test_closing_early_stops_generating(fake_chatterbox):
    fake_chatterbox.delay_s = 0.05
    model = await loaded()
    stream = model.infer(TtsRequest(text=" ".join(f"Sentence number {i}." for i in range(20))))
    await stream.__anext__()
    await asyncio.wait_for(stream.aclose(), timeout=5)
    await asyncio.sleep(0.2)
    assert len(fake_chatterbox.instances[0].calls) < 20


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
        ("Dr. Smith met J. Doe today. Then left.", ["Dr. Smith met J. Doe today.", "Then left."]),
        ("It costs 3.50 dollars. Cheap.", ["It costs 3.50 dollars.", "Cheap."]),
        ('He said "stop." Then ran.', ['He said "stop."', "Then ran."]),
        ("first line\nsecond line", ["first line", "second line"]),
        ("no full stop", ["no full stop"]),
        ("   ", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


# ---- warm-up, replicas, engine choice (GPU issue, problem 7) -------------------------


async def test_every_replica_is_warmed_up_at_load(fake_chatterbox):
    model = ChatterboxTts(TtsSettings(chatterbox_replicas=2))
    await model.load()
    assert len(fake_chatterbox.instances) == 2
    assert all(len(f.calls) == 1 and f.calls[0]["text"] for f in fake_chatterbox.instances)
    assert model.warmup_seconds is not None


async def test_two_sessions_synthesise_at_once_on_two_replicas(fake_chatterbox):
    fake_chatterbox.delay_s = 0.3
    model = await loaded(chatterbox_replicas=2)
    t0 = time.perf_counter()
    await asyncio.gather(collect(model, "Session one speaks."), collect(model, "Session two speaks."))
    elapsed = time.perf_counter() - t0
    assert sorted(len(f.calls) for f in fake_chatterbox.instances) == [1, 1]  # one sentence each
    assert elapsed < 0.55, f"the two sentences ran one after the other ({elapsed:.2f}s)"


async def test_a_replica_keeps_its_own_voice(fake_chatterbox, tmp_path):
    (tmp_path / "alice.wav").write_bytes(b"RIFF")
    fake_chatterbox.delay_s = 0.1
    model = await loaded(chatterbox_replicas=2, chatterbox_voices_dir=tmp_path)
    for _ in range(3):
        await asyncio.gather(collect(model, "As Alice.", voice="alice"), collect(model, "Built in."))
    calls = [c for f in fake_chatterbox.instances for c in f.calls]
    assert len(calls) == 6
    for c in calls:  # each sentence used the conds of the voice it asked for, whichever replica ran it
        assert c["conds"] == (f"conds:{tmp_path / 'alice.wav'}" if "Alice" in c["text"] else "builtin-conds")


@pytest.mark.parametrize(
    ("env", "profile", "stub", "engine"),
    [
        ({}, "gpu", False, "chatterbox"),
        ({}, "cpu", False, "piper"),
        ({}, "stub", False, "stub"),
        ({"JARVIS_TTS_ENGINE": "piper"}, "gpu", False, "piper"),
        ({"JARVIS_TTS_ENGINE": "chatterbox"}, "cpu", False, "chatterbox"),
        ({"JARVIS_TTS_ENGINE": "chatterbox"}, "gpu", True, "stub"),
    ],
)
def test_the_worker_runs_the_engine_jarvis_tts_engine_names(monkeypatch, env, profile, stub, engine):
    import argparse

    from services.tts.__main__ import build_model
    from shared.config import Settings

    monkeypatch.delenv("JARVIS_TTS_ENGINE", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert TtsSettings().engine_for(profile, stub) == engine
    if engine != "piper":  # Piper reads its packaged voice at construction
        model = build_model(Settings(profile=profile), argparse.Namespace(stub=stub))
        assert type(model).__name__ == {"chatterbox": "ChatterboxTts", "stub": "StubTts"}[engine]
