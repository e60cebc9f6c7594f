"""The Realtime endpoint's rate conversion: the right pitch and level at the new rate, no
aliasing from the band the lower rate can't hold, and a stream resampled in pieces equals
the stream resampled whole."""

import numpy as np
import pytest

from services.gateway.realtime.resample import Resampler


def tone(hz: float, rate: int, seconds: float = 1.0, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (level * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2")


def peak_hz(x: np.ndarray, rate: int) -> float:
    x = x.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize(("src", "dst"), [(24000, 16000), (16000, 24000), (22050, 24000), (48000, 24000)])
def test_a_tone_keeps_its_pitch_level_and_length(src, dst):
    r = Resampler(src, dst)
    y = np.frombuffer(r.process(tone(1000, src).tobytes()) + r.flush(), dtype="<i2")
    assert abs(len(y) - dst) <= r.delay + 1
    body = y[r.delay + 200 : -200]
    assert abs(peak_hz(body, dst) - 1000) < 3
    assert np.abs(body).max() / 32767 == pytest.approx(0.5, abs=0.01)


def test_pieces_equal_the_whole():
    x = tone(440, 24000, 0.7).tobytes()
    whole = Resampler(24000, 16000)
    expected = whole.process(x) + whole.flush()
    pieces = Resampler(24000, 16000)
    got = (
        b"".join(pieces.process(x[i : i + 962]) for i in range(0, len(x), 962)) + pieces.flush()
    )  # odd chunks
    assert got == expected


def test_what_the_lower_rate_cannot_hold_is_filtered_not_folded():
    y = np.frombuffer(Resampler(24000, 16000).process(tone(10000, 24000).tobytes()), dtype="<i2")
    assert np.abs(y[100:-100]).max() / 32767 < 0.02  # a 10 kHz tone would alias to 6 kHz


def test_equal_rates_pass_through():
    x = tone(300, 24000, 0.1).tobytes()
    assert Resampler(24000, 24000).process(x) == x
