"""The labelled end-of-turn corpus, made here at bench time and cached under bench-results/cache/eot.

Each utterance is one sentence spoken by one voice, in a 16 kHz int16 clip: a lead-in of
quiet, the speech, and a tail of quiet long enough for any strategy to end the turn. Two kinds:

* **complete**: the sentence as the voice speaks it (natural pauses, e.g. at a comma, stay);
* **paused**: the same recording cut at a natural mid-thought point ("I was wondering |",
  "and so |", "my fellow |", "| because", "| whether", "| that", ...) with 0.4-1.2 s of silence
  inserted. The sentence is synthesised whole and cut afterwards, so the words before the pause
  keep the prosody of a sentence that goes on (a phrase synthesised alone would end like a
  finished sentence). The cut point is where Whisper's word timestamps put the end of the word
  before the cut, moved to the quietest 10 ms within 80 ms of it, with 5 ms fades.

Voices: Piper's ``joe`` (the CPU profile's TTS, closest to natural speech) and two espeak-ng
voices. Some clips are mixed with noise (pink noise, or office-like babble of six espeak
talkers) at 10-20 dB SNR over the whole clip, pauses and tail included.

Labels (sample offsets in the clip): ``speech_end`` (one past the last speech sample of the
clean speech) and, for paused clips, ``pause`` = (start, end) of the inserted silence. A
turn that ends before ``speech_end`` cut the speaker off.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RATE = 16000
LEAD_IN_S = 0.4
TAIL_S = 2.6  # > the longest ceiling tried (1.5 s) + Silero's lag + a score's latency
SPEECH_LEVEL = 100  # |sample| at or above this counts as speech when finding where it ends
CORPUS_VERSION = 3  # bump when the recipe changes: the cache key includes it

# "|" marks the mid-thought cut. The first group are cut at an unfinished phrase; the second
# before a subordinate clause (the words before it could pass for a finished sentence).
SENTENCES = (
    "I was wondering | whether you could tell me the capital of Spain.",
    "My fellow | citizens, we have a lot of work ahead of us.",
    "I went to the bakery this morning and so | I bought some bread for tomorrow.",
    "Set a timer for | twenty minutes.",
    "I think the best option would be to | take the train instead of flying.",
    "I need to leave early today | because my daughter has a doctor's appointment.",
    "Can you check | whether the train to Boston is running on time?",
    "The thing I keep forgetting is | that the meeting moved to Thursday.",
    "Remind me to call my mother | and then send the report to Sam.",
    "Could you tell me | how long it takes to boil an egg?",
)
SHORT = (  # complete only: short turns, where the delay matters most
    "What time is it?",
    "Turn off the kitchen lights.",
    "Tell me a joke.",
    "How tall is Mount Everest?",
    "Thanks, that's all for now.",
)
PAUSES_S = (0.4, 0.6, 0.8, 1.0, 1.2)
VOICES = ("joe", "espeak:en-us", "espeak:en-gb-x-rp+f3")
# noisy copies: (voice, noise, SNR dB) cycled over the sentences
NOISY = (
    ("joe", "pink", 15),
    ("espeak:en-us", "babble", 20),
    ("joe", "babble", 10),
    ("espeak:en-us", "pink", 10),
)
BABBLE_TEXTS = (
    "The quarterly numbers look better than we expected for the second half.",
    "Can somebody move the meeting with the design team to the afternoon?",
    "I left my charger in the other room, could you pass it over?",
    "We should order lunch before the place on the corner gets busy.",
    "Has anyone seen the printer paper, the drawer is empty again.",
    "The client called twice this morning about the delivery date.",
)


@dataclass(frozen=True)
class Utterance:
    key: str  # unique, readable: voice / kind / sentence index / noise
    text: str  # the words spoken (no cut marker)
    voice: str
    kind: str  # "complete" or "paused"
    noise: str | None  # None, "pink" or "babble"
    snr_db: float | None
    pause_s: float | None
    speech_end: int  # sample, exclusive
    pause: tuple[int, int] | None  # the inserted silence, samples [start, end)
    samples: np.ndarray  # int16, the whole clip

    @property
    def speech_end_ms(self) -> float:
        return self.speech_end * 1000 / RATE

    @property
    def pause_ms(self) -> tuple[float, float] | None:
        return None if self.pause is None else (self.pause[0] * 1000 / RATE, self.pause[1] * 1000 / RATE)

    def meta(self) -> dict:
        d = asdict(self)
        d.pop("samples")
        return d


# ---- speech -------------------------------------------------------------------------------


def _sox_to_16k(wav_in: Path) -> np.ndarray:
    from tests.support.speech import read_wav

    out = wav_in.with_suffix(".16k.wav")
    subprocess.run(["sox", str(wav_in), "-r", str(RATE), "-c", "1", "-b", "16", str(out)], check=True)
    return read_wav(out)[0]


class Voices:
    """Speech for a text in one of VOICES, 16 kHz int16, trimmed to its audible part."""

    def __init__(self) -> None:
        self._piper = None

    def speak(self, voice: str, text: str) -> np.ndarray:
        if voice == "joe":
            return _trim(self._joe(text))
        engine, name = voice.split(":", 1)
        if engine != "espeak":
            raise ValueError(f"unknown voice {voice!r}")
        from tests.support.speech import speak

        return _trim(speak(text, voice=name))

    def _joe(self, text: str) -> np.ndarray:
        if self._piper is None:
            from piper import PiperVoice

            from services.tts.piper import packaged_voice

            model, config = packaged_voice()
            self._piper = PiperVoice.load(model, config_path=config)
        from tests.support.speech import write_wav

        chunks = list(self._piper.synthesize(text))
        pcm = np.concatenate([np.frombuffer(c.audio_int16_bytes, dtype="<i2") for c in chunks])
        with tempfile.TemporaryDirectory() as tmp:
            src = write_wav(Path(tmp, "joe.wav"), pcm, rate=chunks[0].sample_rate)
            return _sox_to_16k(src)


def _trim(samples: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) >= SPEECH_LEVEL)
    if not len(loud):
        raise ValueError("the synthesised clip holds no speech")
    return samples[loud[0] : loud[-1] + 1].astype(np.int16)


# ---- the cut ------------------------------------------------------------------------------


def find_cut(
    samples: np.ndarray, text: str, cut_words: int, word_times: list[tuple[str, float, float]]
) -> int:
    """Sample at which to insert the pause: after the `cut_words`-th word of `text`.

    `word_times` are Whisper's (word, start_s, end_s). The text's words are matched to
    Whisper's (they may differ: "doctor's" / "doctors"), then the boundary between the two
    words is refined to the quietest 10 ms within 80 ms of it."""
    from tests.support.speech import normalise

    ours = normalise(text)
    heard = [normalise(w)[0] if normalise(w) else "" for w, _, _ in word_times]
    matcher = difflib.SequenceMatcher(a=ours, b=heard, autojunk=False)
    index: dict[int, int] = {}
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            index[block.a + k] = block.b + k
    before, after = cut_words - 1, cut_words
    if before in index:
        t = word_times[index[before]][2]
        if after in index:
            t = (t + word_times[index[after]][1]) / 2
    elif after in index:
        t = word_times[index[after]][1]
    else:
        raise ValueError(f"cannot place the cut of {text!r}: Whisper heard {heard}")
    centre = int(t * RATE)
    hop = RATE // 100  # 10 ms
    lo, hi = max(hop, centre - RATE * 80 // 1000), min(len(samples) - hop, centre + RATE * 80 // 1000)
    x = samples.astype(np.float32)
    best, best_e = centre, float("inf")
    for s in range(lo, hi, hop // 2):
        e = float(np.mean(x[s - hop // 2 : s + hop // 2] ** 2))
        if e < best_e:
            best, best_e = s, e
    return best


def _fade(x: np.ndarray, out: bool, n: int = RATE * 5 // 1000) -> np.ndarray:
    x = x.astype(np.float32).copy()
    n = min(n, len(x))
    ramp = np.linspace(1.0, 0.0, n) if out else np.linspace(0.0, 1.0, n)
    if out:
        x[len(x) - n :] *= ramp
    else:
        x[:n] *= ramp
    return x


# ---- noise ----------------------------------------------------------------------------------


def pink_noise(n: int, seed: int) -> np.ndarray:
    """Unit-RMS pink (1/f power) noise, by shaping white noise's spectrum."""
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    f[0] = f[1]
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return (x / np.sqrt(np.mean(x**2))).astype(np.float32)


def babble_noise(n: int, seed: int, voices: Voices) -> np.ndarray:
    """Unit-RMS office-like babble: six espeak talkers at random offsets, looped, plus a pink floor."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, np.float32)
    names = ("en-us", "en-gb", "en-gb-x-rp", "en-us+f2", "en-gb+f4", "en-029")
    for text, name in zip(BABBLE_TEXTS, names, strict=True):
        talk = voices.speak(f"espeak:{name}", text).astype(np.float32)
        talk = np.concatenate([talk, np.zeros(int(rng.uniform(0.1, 0.6) * RATE), np.float32)])
        loop = np.tile(talk, n // len(talk) + 2)
        start = int(rng.integers(0, len(talk)))
        out += loop[start : start + n] / np.sqrt(np.mean(talk**2)) * rng.uniform(0.6, 1.0)
    out /= np.sqrt(np.mean(out**2))
    out += 0.2 * pink_noise(n, seed + 1)
    return (out / np.sqrt(np.mean(out**2))).astype(np.float32)


def _mix(clean: np.ndarray, speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`clean` (whole clip) + `noise` scaled so speech RMS / noise RMS = snr_db."""
    s_rms = float(np.sqrt(np.mean(speech.astype(np.float32) ** 2)))
    gain = s_rms / (10 ** (snr_db / 20))
    mixed = clean.astype(np.float32) + noise[: len(clean)] * gain
    return np.clip(mixed, -32768, 32767).astype(np.int16)


# ---- the corpus -----------------------------------------------------------------------------


def _spec() -> dict:
    return {
        "version": CORPUS_VERSION,
        "sentences": SENTENCES,
        "short": SHORT,
        "pauses": PAUSES_S,
        "voices": VOICES,
        "noisy": NOISY,
        "lead_in": LEAD_IN_S,
        "tail": TAIL_S,
    }


def corpus_key() -> str:
    return hashlib.sha1(json.dumps(_spec(), sort_keys=True).encode()).hexdigest()[:12]


def load_corpus(
    cache_dir: Path, word_times: Callable[[np.ndarray], list[tuple[str, float, float]]], log=print
) -> list[Utterance]:
    """The corpus, from the cache or made now (then cached). `word_times(samples)` gives
    Whisper's word timestamps of a clip (the bench passes the real model)."""
    root = cache_dir / f"eot-{corpus_key()}"
    manifest = root / "manifest.json"
    if manifest.is_file():
        metas = json.loads(manifest.read_text())
        out = []
        for m in metas:
            samples = np.load(root / f"{m['key'].replace('/', '_')}.npy")
            pause = tuple(m["pause"]) if m["pause"] is not None else None
            out.append(Utterance(**{**m, "pause": pause, "samples": samples}))
        return out
    log(f"  eot: making the corpus (cached in {root}) ...")
    utts = make_corpus(word_times, log)
    root.mkdir(parents=True, exist_ok=True)
    for u in utts:
        np.save(root / f"{u.key.replace('/', '_')}.npy", u.samples)
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps([u.meta() for u in utts], indent=1))
    tmp.replace(manifest)  # the manifest last: a half-made cache is never read
    return utts


def make_corpus(
    word_times: Callable[[np.ndarray], list[tuple[str, float, float]]], log=print
) -> list[Utterance]:
    voices = Voices()
    lead = np.zeros(int(LEAD_IN_S * RATE), np.int16)
    tail = np.zeros(int(TAIL_S * RATE), np.int16)
    out: list[Utterance] = []
    # (voice, sentence) -> (whole speech, part before the cut, part after it)
    speech_of: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def add(key, text, voice, kind, speech_parts, pause_s=None, noise=None, snr=None, noise_sig=None):
        parts = [lead, *speech_parts, tail]
        clean = np.concatenate(parts).astype(np.int16)
        speech_only = np.concatenate(speech_parts)
        voiced = np.concatenate(speech_parts[::2]) if pause_s is not None else speech_only  # no gap
        if pause_s is None:
            end, pause = len(lead) + len(speech_only), None
        else:
            a = len(lead) + len(speech_parts[0])
            b = a + len(speech_parts[1])
            end, pause = b + len(speech_parts[2]), (a, b)
        samples = clean if noise is None else _mix(clean, voiced, noise_sig, snr)
        out.append(Utterance(key, text, voice, kind, noise, snr, pause_s, end, pause, samples))
        return clean

    for v in VOICES:
        for i, marked in enumerate(SENTENCES):
            text = marked.replace(" | ", " ")
            speech = voices.speak(v, text)
            add(f"{v}/complete/s{i}", text, v, "complete", [speech])
            cut_words = len(marked.split("|")[0].split())
            cut = find_cut(speech, text, cut_words, word_times(speech))
            pause_s = PAUSES_S[(i + VOICES.index(v)) % len(PAUSES_S)]
            first = _fade(speech[:cut], out=True).astype(np.int16)
            second = _fade(speech[cut:], out=False).astype(np.int16)
            gap = np.zeros(int(pause_s * RATE), np.int16)
            add(f"{v}/paused/s{i}", text, v, "paused", [first, gap, second], pause_s)
            speech_of[(v, i)] = (speech, first, second)
        for j, text in enumerate(SHORT):
            add(f"{v}/complete/q{j}", text, v, "complete", [voices.speak(v, text)])
        log(f"  eot: voice {v} done ({len(out)} clips)")

    for i, marked in enumerate(SENTENCES):
        v, kind, snr = NOISY[i % len(NOISY)]
        text = marked.replace(" | ", " ")
        speech, first, second = speech_of[(v, i)]
        pause_s = PAUSES_S[(i + VOICES.index(v)) % len(PAUSES_S)]
        gap = np.zeros(int(pause_s * RATE), np.int16)
        n = int((LEAD_IN_S + TAIL_S + pause_s) * RATE) + len(speech)
        sig = pink_noise(n, seed=100 + i) if kind == "pink" else babble_noise(n, seed=200 + i, voices=voices)
        tag = f"{kind}{snr}"
        add(f"{v}/complete/s{i}/{tag}", text, v, "complete", [speech], noise=kind, snr=snr, noise_sig=sig)
        add(f"{v}/paused/s{i}/{tag}", text, v, "paused", [first, gap, second], pause_s, kind, snr, sig)
    log(f"  eot: {len(out)} clips")
    return out
