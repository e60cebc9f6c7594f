"""Silero at the gateway: the orchestrator gets every window's probability, exactly as if it
had scored the audio itself, the audio of every stretch a turn can slice, and silence in bulk."""

from __future__ import annotations

import numpy as np
import pytest

from services.gateway.edge import EdgeVad
from services.gateway.server import Gateway
from shared import codec
from shared import protocol as p
from shared.config import Settings
from shared.messages import ScoredAudio
from shared.vad import WINDOW, SileroVad
from tests.support.speech import concat, have_espeak, noise, silence, speak

pytestmark = pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng and sox")

FRAME = 320  # 20 ms, as clients send it


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    quiet = noise(3.0, level=0.003, seed=1)
    words = speak("What time is it in Lisbon right now?")
    return concat(silence(2.0), quiet, words, silence(3.0), speak("and in Tokyo?"), quiet, silence(10.0))


def _run(vad: SileroVad, audio: np.ndarray, rounds_every: int = 1) -> list[ScoredAudio]:
    got: list[ScoredAudio] = []
    edge = EdgeVad(vad, Settings(), lambda sid, msg: got.append(msg))
    edge.open("s")
    pcm = audio.astype("<i2").tobytes()
    for k, at in enumerate(range(0, len(pcm), 2 * FRAME)):
        edge.audio("s", pcm[at : at + 2 * FRAME], float(k))
        if k % rounds_every == 0:
            edge.round()
    edge.end("s")
    return got


def _reference(vad: SileroVad, audio: np.ndarray) -> np.ndarray:
    stream = vad.new_stream()
    n = -(-len(audio) // WINDOW)
    padded = np.zeros(n * WINDOW, dtype=np.int16)
    padded[: len(audio)] = audio
    rows = padded.reshape(n, WINDOW)
    return np.array([vad.process([stream], rows[i : i + 1])[0] for i in range(n)], dtype=np.float32)


@pytest.mark.parametrize("rounds_every", [1, 7])  # a round per frame, or a busy gateway's rounds
def test_every_window_scored_as_the_orchestrator_would(vad, audio, rounds_every) -> None:
    got = _run(vad, audio, rounds_every)
    probs = np.concatenate([np.frombuffer(m.probs, dtype="<f4") for m in got])
    np.testing.assert_allclose(probs, _reference(vad, audio), atol=1e-5)


def test_audio_sent_around_speech_and_silence_in_bulk(vad, audio) -> None:
    settings = Settings()
    got = _run(vad, audio)
    probs = np.concatenate([np.frombuffer(m.probs, dtype="<f4") for m in got])
    n = len(probs)
    sent = np.zeros(n, dtype=bool)  # window i's audio reached the orchestrator
    rebuilt = np.zeros(n * WINDOW, dtype=np.int16)
    i = 0
    for m in got:
        if m.pcm:
            sent[i : i + m.windows] = True
            rebuilt[i * WINDOW : (i + m.windows) * WINDOW] = np.frombuffer(m.pcm, dtype="<i2")
        else:
            assert m.windows >= 1
        i += m.windows
    padded = np.zeros(n * WINDOW, dtype=np.int16)
    padded[: len(audio)] = audio
    before = int(np.ceil(settings.edge_pre_roll_ms / 32))
    after = int(np.ceil(settings.edge_hangover_ms / 32))
    speech = np.flatnonzero(probs >= 0.5)
    assert len(speech) > 20
    for k in speech:  # the pre-roll before speech and the pauses after it arrive, exactly
        lo, hi = max(0, k - before), min(n, k + after)
        assert sent[lo:hi].all()
    assert np.array_equal(rebuilt[sent.repeat(WINDOW)], padded[sent.repeat(WINDOW)])
    assert sent.mean() < 0.6  # most of this silence never crosses Redis as audio
    silent_entries = [m for m in got if not m.pcm]
    assert max(m.windows for m in silent_entries) >= 30  # ~1 s of silence per entry
    assert len(got) < n / 2  # far fewer entries than windows, let alone 20 ms frames


def test_drain_writes_what_was_scored_before_a_command(vad) -> None:
    got: list[ScoredAudio] = []
    edge = EdgeVad(vad, Settings(), lambda sid, msg: got.append(msg))
    edge.open("s")
    edge.audio("s", bytes(2 * WINDOW * 40), 1.0)  # 40 silent windows, not yet a round
    edge.drain("s")
    assert sum(m.windows for m in got) + len(edge.streams["s"].ring) == 40
    edge.audio("s", bytes(2 * 100), 2.0)  # short of a window: padded to one when the stream ends
    edge.end("s")
    assert sum(m.windows for m in got) == 41
    assert not edge.has("s")


class _Redis:
    def register_script(self, script):  # the gateway registers none; a Bus-shaped stand-in
        return None


class _Bus:
    redis = _Redis()


def _gateway(vad: SileroVad) -> Gateway:
    gw = Gateway(Settings(), _Bus())  # type: ignore[arg-type]
    gw.edge = EdgeVad(vad, gw.settings, gw._put_scored)
    return gw


def _queued(gw: Gateway) -> list[str]:
    return [type(codec.decode(payload)).__name__ for _, payload, _, _, _ in gw.publisher._items]


def test_the_gateway_scores_server_vad_sessions_and_keeps_their_input_in_order(vad) -> None:
    gw = _gateway(vad)
    gw._edge_session("a", p.Start(pipeline="sts"))
    gw.audio("a", bytes(2 * WINDOW * 40), 1.0)
    gw.command("a", p.Text(text="hello"))
    kinds = _queued(gw)
    assert kinds[-1] == "Command" and set(kinds[:-1]) == {"ScoredAudio"}  # the audio before it, first
    gw.command("a", p.Config(trigger=p.Trigger.MANUAL))  # push to talk: every frame goes on as it came
    gw.audio("a", bytes(640), 2.0)
    assert _queued(gw)[-2:] == ["Command", "Audio"]


@pytest.mark.parametrize(
    "start", [{"pipeline": "chat"}, {"pipeline": "sts", "client_vad": True}, {"trigger": "manual"}]
)
def test_manual_and_client_vad_sessions_get_every_frame(vad, start) -> None:
    gw = _gateway(vad)
    gw._edge_session("b", p.Start(**start))
    for _ in range(5):
        gw.audio("b", bytes(640), 1.0)
    assert _queued(gw) == ["Audio"] * 5
