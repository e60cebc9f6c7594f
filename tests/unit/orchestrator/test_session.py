"""The session runner's state machine with an in-memory host: no Redis, no model, no clock
but the one the test drives. VAD probabilities are scripted per 32 ms window; what the
client would see is read back from the events the runner queued for `out:{sid}`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest

from services.orchestrator.config import EndOfTurnConfig, EndpointSettings, TurnSettings
from services.orchestrator.session import SessionRunner
from shared import protocol as p
from shared.config import Settings
from shared.messages import (
    Audio,
    AudioOut,
    ClientEvent,
    Command,
    Detached,
    JobFailed,
    LlmDone,
    LlmJob,
    LlmPlan,
    LlmToken,
    ScoredAudio,
    SessionStart,
    SpokenReply,
    SttJob,
    SttResult,
    TtsJob,
    TtsProgress,
    jobs_stream,
    out_stream,
)
from shared.sessions import Session

# the state machine's tests end a turn on silence alone (288 ms); the adaptive end of turn the
# stack runs by default has its own tests below / in test_end_of_turn.py
SILENCE_MODE = TurnSettings(endpoint=EndpointSettings(end_of_turn=EndOfTurnConfig(mode="silence")))

SPEECH, QUIET = 0.9, 0.05
WINDOW = 512  # samples at 16 kHz: 32 ms
TTS_RATE = 22050


class FakeHost:
    """A `SessionHost` in memory: entries are kept in order, background tasks run on the
    test's loop, the epoch is a counter."""

    def __init__(self, workers: bool = True) -> None:
        self.entries: list[tuple[str, Any]] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.workers = workers
        self.epoch = 1
        self.saved = 0
        self.ended = False
        self.windows: list[tuple[np.ndarray, float]] = []

    def put(self, stream: str, msg: Any, maxlen: int | None = None) -> None:
        self.entries.append((stream, msg))

    async def flush(self) -> None:
        return None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    def may_load(self) -> bool:
        return False

    async def prepare(
        self, runner: SessionRunner, roles: tuple[str, ...], priority: str, quiet: bool = False
    ) -> None:
        return None

    async def release(self, runner: SessionRunner) -> None:
        return None

    def workers_known(self, kind: str) -> bool:
        return self.workers

    async def has_workers(self, kind: str) -> bool:
        return self.workers

    async def bump_epoch(self, runner: SessionRunner, event: p.Interrupted | None) -> int:
        self.epoch += 1
        if event is not None:
            self.entries.append((out_stream(runner.sid), ClientEvent(p.dump(event))))
        return self.epoch

    async def save(self, runner: SessionRunner) -> None:
        self.saved += 1

    async def end_session(self, runner: SessionRunner, quiet: bool = False) -> None:
        self.ended = True

    def score_vad(self, runner: SessionRunner, windows: np.ndarray, ts: float) -> None:
        self.windows.extend((w, ts) for w in windows)

    # ---- reading back --------------------------------------------------------------

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        out = [
            json.loads(m.json) for s, m in self.entries if s.startswith("out:") and isinstance(m, ClientEvent)
        ]
        return [e for e in out if kind is None or e["type"] == kind]

    def jobs(self, kind: str) -> list[Any]:
        return [m for s, m in self.entries if s == jobs_stream(kind)]

    def states(self) -> list[str]:
        return [e["state"] for e in self.events("state")]

    async def settle(self) -> None:
        while self.tasks:
            tasks, self.tasks = self.tasks, []
            await asyncio.gather(*tasks)


@pytest.fixture
async def setup() -> tuple[SessionRunner, FakeHost]:
    host = FakeHost()
    runner = SessionRunner(host, Session(id="s1"), 1, "0-0", Settings(), SILENCE_MODE, vad_stream=object())
    start = SessionStart("s1", "sts", None, 16000, False, {}, False, time.time())
    await runner.on_start(start, resumed=False)
    await host.settle()
    return runner, host


def speak(runner: SessionRunner, host: FakeHost, probs: list[float]) -> None:
    """Send one 32 ms audio frame per probability, then score it with that probability."""
    rng = np.random.default_rng(0)
    for prob in probs:
        level = 8000 if prob >= 0.5 else 10
        pcm = (rng.standard_normal(WINDOW) * level).astype("<i2").tobytes()
        ts = time.time()
        runner.on_audio(Audio(pcm, ts))
        host.windows.clear()
        runner.on_vad(prob, ts)


def utterance(speech_windows: int = 30) -> list[float]:
    return [QUIET] * 10 + [SPEECH] * speech_windows + [QUIET] * 9  # 288 ms of silence ends it


async def answer(
    runner: SessionRunner, host: FakeHost, text: str, reply: str, audio_s: float = 2.0, heard_s: float = 1.0
) -> None:
    """The workers' side of a turn: transcript, tokens (the first sentence's TTS job was the
    LLM worker's), the audio of each sentence, LLM done; the client started playing the
    reply `heard_s` ago."""
    turn = runner.turn
    assert turn is not None
    runner.on_transcript(SttResult(turn.n, runner.epoch, text, True, 50.0, time.time()))
    runner.on_token(LlmToken(turn.n, runner.epoch, reply, time.time()))
    runner.on_llm_done(LlmDone(turn.n, runner.epoch, 80.0, time.time()))
    for seq in range(len(turn.audio.sentences)):
        samples = int(audio_s * TTS_RATE)
        first = time.time() - heard_s
        runner.on_tts(
            TtsProgress(turn.n, runner.epoch, seq, samples, TTS_RATE, first, True, 30.0, time.time())
        )
    await host.settle()


def scored(runner: SessionRunner, probs: list[float], silent_from: int | None = None) -> None:
    """The same windows as `speak`, scored at the gateway: audio with its probabilities, the
    windows before `silent_from` as one silent stretch without their audio."""
    rng = np.random.default_rng(0)
    pcms = []
    for prob in probs:
        level = 8000 if prob >= 0.5 else 10
        pcms.append((rng.standard_normal(WINDOW) * level).astype("<i2").tobytes())
    cut = silent_from or 0
    if cut:
        runner.on_scored(ScoredAudio(np.array(probs[:cut], dtype="<f4").tobytes(), b"", time.time()))
    for prob, pcm in zip(probs[cut:], pcms[cut:], strict=True):
        runner.on_scored(ScoredAudio(np.array([prob], dtype="<f4").tobytes(), pcm, time.time()))


async def test_audio_scored_at_the_gateway_makes_the_same_turn(setup):
    runner, host = setup
    probs = [QUIET] * 40 + [SPEECH] * 30 + [QUIET] * 9
    speak(runner, host, probs)
    raw_events = [e["type"] for e in host.events()]
    raw_pcm = host.jobs("stt")[0].pcm

    other = FakeHost()
    gated = SessionRunner(other, Session(id="s1"), 1, "0-0", Settings(), SILENCE_MODE)
    await gated.on_start(SessionStart("s1", "sts", None, 16000, False, {}, False, time.time()), False)
    await other.settle()
    scored(gated, probs, silent_from=30)  # 30 quiet windows crossed Redis as one entry, no audio
    assert [e["type"] for e in other.events()] == raw_events
    assert other.jobs("stt")[0].pcm == raw_pcm  # the same words, pre-roll and post-roll included
    assert not other.windows  # nothing scored in the orchestrator


async def test_start_shows_loading_then_listening(setup):
    runner, host = setup
    assert host.events("ready")[0]["session_id"] == "s1"
    assert host.states() == ["LOADING", "LISTENING"]
    assert runner.state == p.State.LISTENING


async def test_end_of_speech_sends_the_turn_to_stt_with_its_llm_plan(setup):
    runner, host = setup
    speak(runner, host, utterance())
    assert [e["speaking"] for e in host.events("vad")] == [True, False]
    assert runner.state == p.State.THINKING
    (job,) = host.jobs("stt")
    assert isinstance(job, SttJob) and not job.partial and job.turn == 1
    # the turn's audio: the speech with its pre- and post-roll (30 windows + 200 ms + 100 ms)
    assert len(job.pcm) // 2 == pytest.approx(30 * WINDOW + 0.3 * 16000, abs=WINDOW)
    assert isinstance(job.then, LlmPlan) and job.then.kind == "llm"
    assert job.then.speak == SpokenReply(None)


async def test_a_whole_turn_lands_in_history_with_its_metrics(setup):
    runner, host = setup
    speak(runner, host, utterance())
    await answer(runner, host, "what is the capital of Spain", "Madrid is the capital. It is in the middle.")
    assert [e["text"] for e in host.events("transcript")] == ["what is the capital of Spain"]
    assert "".join(e["delta"] for e in host.events("reply") if not e.get("final")).startswith("Madrid")
    # the LLM worker sent the first sentence; the runner sent the second
    assert [j.seq for j in host.jobs("tts")] == [1]
    assert host.states()[-2:] == ["THINKING", "SPEAKING"]
    (rec,) = runner.session.history
    assert rec.user == "what is the capital of Spain" and rec.assistant.startswith("Madrid")
    assert not rec.interrupted and rec.metrics["stt_ms"] == 50.0
    assert host.events("metrics")[0]["turn"] == 1
    assert runner.last is not None  # still SPEAKING while the client plays the audio
    runner.tick(time.time() + 10)
    assert runner.state == p.State.LISTENING


async def test_speech_over_the_reply_is_a_barge_in_and_history_keeps_what_was_heard(setup):
    runner, host = setup
    speak(runner, host, utterance())
    await answer(runner, host, "tell me a story", "Once upon a time. There was a fox.", audio_s=5.0)
    assert runner.state == p.State.SPEAKING
    speak(runner, host, [SPEECH] * 26)  # 832 ms of speech >= the 800 ms barge-in minimum
    await host.settle()
    (ev,) = host.events("interrupted")
    assert ev["turn"] == 1
    assert runner.epoch == 2 and runner.state == p.State.LISTENING
    rec = runner.session.history[-1]
    assert rec.interrupted and rec.assistant == ev["spoken"]


async def test_a_short_sound_during_the_reply_does_not_interrupt(setup):
    runner, host = setup
    speak(runner, host, utterance())
    await answer(runner, host, "tell me a story", "Once upon a time. There was a fox.", audio_s=5.0)
    speak(runner, host, [SPEECH] * 5 + [QUIET] * 12)  # 160 ms: a cough
    await host.settle()
    assert host.events("interrupted") == []
    assert runner.state == p.State.SPEAKING


async def test_a_text_turn_during_a_reply_interrupts_it_and_is_answered(setup):
    runner, host = setup
    speak(runner, host, utterance())
    await answer(runner, host, "tell me a story", "Once upon a time. There was a fox.", audio_s=5.0)
    await runner.on_command(p.Text(text="actually, what time is it?"), time.time())
    await host.settle()
    assert len(host.events("interrupted")) == 1
    assert host.events("transcript")[-1] == {
        "type": "transcript",
        "turn": 2,
        "text": "actually, what time is it?",
        "final": True,
    }
    (llm,) = host.jobs("llm")
    assert isinstance(llm, LlmJob) and llm.epoch == runner.epoch == 2
    assert llm.messages[-1] == {"role": "user", "content": "actually, what time is it?"}
    assert [m["content"] for m in llm.messages[:-1]][0] == "tell me a story"


async def test_commands_arrive_as_the_protocol_models(setup):
    runner, host = setup
    await runner.handle(Command(p.Config(options={"voice": "amy"}).model_dump(mode="json"), time.time()))
    assert runner.voice == "amy" and len(host.events("ready")) == 2
    await runner.handle(Detached(time.time()))
    assert runner.detached_at is not None
    await runner.handle(Command(p.Stop().model_dump(mode="json"), time.time()))
    await host.settle()
    assert host.ended


async def test_a_stream_that_stops_mid_speech_ends_the_turn(setup):
    runner, host = setup
    speak(runner, host, [QUIET] * 3 + [SPEECH] * 20)  # the client went quiet mid-word
    assert runner.detector.in_speech and host.jobs("stt") == []
    runner.tick(time.time() + 0.2)
    assert host.jobs("stt") == []  # a short gap is just jitter
    runner.tick(time.time() + 1.0)
    (job,) = host.jobs("stt")
    assert job.turn == 1 and runner.state == p.State.THINKING


async def test_a_failed_model_ends_the_turn_with_an_error(setup):
    runner, host = setup
    speak(runner, host, utterance())
    turn = runner.turn
    assert turn is not None
    runner.on_transcript(SttResult(1, runner.epoch, "hello", True, 50.0, time.time()))
    runner.on_failed(JobFailed("llm", 1, runner.epoch, "connection refused", time.time()))
    await host.settle()
    (err,) = host.events("error")
    assert err["code"] == "model_error" and "connection refused" in err["message"]
    assert runner.turn is None and runner.state == p.State.LISTENING
    assert runner.session.history[-1].user == "hello"


async def test_a_stage_that_goes_silent_times_out_with_an_error(setup):
    runner, host = setup
    speak(runner, host, utterance())
    runner.tick(time.time() + runner.cfg.stage_timeout_s + 1)
    await host.settle()
    (err,) = host.events("error")
    assert "no progress" in err["message"]
    assert runner.turn is None


async def test_results_of_an_old_epoch_are_ignored(setup):
    runner, host = setup
    speak(runner, host, utterance())
    runner.on_transcript(SttResult(1, runner.epoch - 1, "stale", True, 50.0, time.time()))
    assert host.events("transcript") == []
    assert runner.turn is not None and runner.turn.user == ""


async def test_without_a_known_llm_worker_the_runner_dispatches_the_llm_itself():
    host = FakeHost(workers=False)
    runner = SessionRunner(host, Session(id="s2"), 1, "0-0", Settings(), SILENCE_MODE, vad_stream=object())
    await runner.on_start(
        SessionStart("s2", "sts", None, 16000, False, {}, False, time.time()), resumed=False
    )
    speak(runner, host, utterance())
    (job,) = host.jobs("stt")
    assert job.then is None
    runner.on_transcript(SttResult(1, runner.epoch, "hello", True, 50.0, time.time()))
    await host.settle()
    (err,) = host.events("error")  # and it says when there is none at all
    assert "no language model worker" in err["message"]


async def test_tts_jobs_go_one_at_a_time_in_order():
    host = FakeHost()
    runner = SessionRunner(host, Session(id="s3"), 1, "0-0", Settings(), SILENCE_MODE)
    runner.start_text_turn("hi", time.time(), speak=True)
    turn = runner.turn
    assert turn is not None
    runner.on_token(LlmToken(1, 1, "One. Two. Three. ", time.time()))
    runner.on_llm_done(LlmDone(1, 1, 10.0, time.time()))
    assert host.jobs("tts") == []  # sentence 0 is the LLM worker's, and it is still being spoken
    for seq in range(3):
        runner.on_tts(TtsProgress(1, 1, seq, 100, TTS_RATE, time.time(), True, 1.0, time.time()))
        assert len(host.jobs("tts")) == min(seq + 1, 2)
    jobs: list[TtsJob] = host.jobs("tts")
    assert [(j.seq, j.text) for j in jobs] == [(1, "Two."), (2, "Three.")]
    await host.settle()


# ---- the user goes on talking, or talks over the reply -------------------------------


def seconds_of(pcm: bytes) -> float:
    return len(pcm) / 2 / 16000


async def test_speech_while_thinking_continues_the_same_turn(setup):
    runner, host = setup
    speak(runner, host, utterance(20))  # "I was wondering ..." then a pause long enough to end a turn
    (first,) = host.jobs("stt")
    speak(runner, host, [SPEECH] * 25 + [QUIET] * 9)  # "... whether you could tell me the time"
    await host.settle()
    (ev,) = host.events("interrupted")
    assert ev == {"type": "interrupted", "turn": 1, "spoken": "", "continued": True}
    second = host.jobs("stt")[-1]
    assert second.turn == 1 and second.epoch == runner.epoch == 2
    # one STT job covers both halves: the first one's audio, then the second's
    assert second.pcm.startswith(first.pcm)
    assert seconds_of(second.pcm) == pytest.approx(seconds_of(first.pcm) + 25 * 0.032 + 0.3, abs=0.05)
    await answer(runner, host, "I was wondering whether you could tell me the time", "It is noon.")
    (rec,) = runner.session.history
    assert rec.user == "I was wondering whether you could tell me the time" and not rec.interrupted


async def test_speech_before_the_reply_was_heard_continues_the_turn_and_drops_the_unheard_answer(setup):
    runner, host = setup
    speak(runner, host, utterance(20))
    await answer(runner, host, "what is", "It is a question.", heard_s=0.05)  # 50 ms of audio played
    assert len(runner.session.history) == 1
    speak(runner, host, [SPEECH] * 20 + [QUIET] * 9)
    await host.settle()
    assert host.events("interrupted")[-1]["continued"] is True
    assert runner.session.history == []  # it will be answered again, whole
    assert host.jobs("stt")[-1].turn == 1


async def test_a_cough_over_the_reply_pauses_it_and_it_resumes(setup):
    runner, host = setup
    speak(runner, host, utterance())
    await answer(runner, host, "tell me a story", "Once upon a time. There was a fox.", audio_s=5.0)
    speak(runner, host, [SPEECH] * 3)
    assert host.events("playback") == [{"type": "playback", "turn": 1, "action": "pause"}]
    speak(runner, host, [QUIET] * 12)  # 96 ms: never speech
    assert host.events("playback")[-1]["action"] == "resume"
    assert host.jobs("stt")[-1].probe == 0 and host.events("interrupted") == []


async def test_a_short_mhm_is_probed_and_the_reply_completes(setup):
    runner, host = setup
    speak(runner, host, utterance())
    await answer(runner, host, "tell me a story", "Once upon a time. There was a fox.", audio_s=5.0)
    speak(runner, host, [SPEECH] * 10 + [QUIET] * 9)  # 320 ms: speech, but under the barge-in minimum
    probe = host.jobs("stt")[-1]
    assert probe.probe == 1 and probe.turn == 2 and probe.then is None
    assert host.events("playback")[-1]["action"] == "pause"
    runner.on_transcript(SttResult(2, runner.epoch, "Mhm.", False, 20.0, time.time(), probe=1))
    await host.settle()
    assert host.events("playback")[-1]["action"] == "resume"
    assert host.events("interrupted") == [] and runner.state == p.State.SPEAKING
    runner.tick(time.time() + 20)
    assert runner.state == p.State.LISTENING and not runner.session.history[-1].interrupted


async def test_stop_stop_actually_cuts_the_reply_and_keeps_every_word(setup):
    runner, host = setup
    speak(runner, host, utterance())
    await answer(runner, host, "tell me a story", "Once upon a time. There was a fox.", audio_s=5.0)
    speak(runner, host, [SPEECH] * 10 + [QUIET] * 9)  # "stop"
    assert host.events("playback")[-1]["action"] == "pause"
    speak(runner, host, [SPEECH] * 10 + [QUIET] * 9)  # "stop"
    stops = [j for j in host.jobs("stt") if j.probe]
    assert [j.probe for j in stops] == [1, 2]
    speak(runner, host, [SPEECH] * 26)  # "actually, tell me ..." crosses the barge-in minimum
    await host.settle()
    (ev,) = host.events("interrupted")
    assert not ev.get("continued")
    heard = runner.session.history[-1]
    assert heard.interrupted and heard.assistant == ev["spoken"]
    speak(runner, host, [SPEECH] * 10 + [QUIET] * 9)  # "... something else"
    final = host.jobs("stt")[-1]
    assert final.probe == 0 and final.turn == 2
    assert final.pcm.startswith(stops[0].pcm + stops[1].pcm)  # the next turn starts with "stop, stop"


async def test_a_short_stop_alone_is_a_barge_in_and_becomes_the_next_turn(setup):
    runner, host = setup
    speak(runner, host, utterance())
    await answer(runner, host, "tell me a story", "Once upon a time. There was a fox.", audio_s=5.0)
    speak(runner, host, [SPEECH] * 10 + [QUIET] * 9)  # "stop"
    probe = host.jobs("stt")[-1]
    runner.on_transcript(SttResult(2, runner.epoch, "Stop.", False, 20.0, time.time(), probe=probe.probe))
    await host.settle()
    assert len(host.events("interrupted")) == 1
    final = host.jobs("stt")[-1]
    assert final.probe == 0 and final.pcm == probe.pcm and runner.state == p.State.THINKING


@pytest.mark.parametrize(
    "text,words",
    [
        ("Stop.", True),
        ("Wait, no", True),
        ("Mhm.", False),
        ("MHN.", False),
        ("Mm-hmm.", False),
        ("Uh-huh", False),
        ("Yeah.", False),
        ("", False),
        ("Okay, okay.", False),
        ("and HM.", False),
        ("Hmm, stop", True),
        ("and then", True),
    ],
)
def test_backchannels_are_not_words(text, words):
    from services.orchestrator.session import _has_words

    assert _has_words(text) is words


# ---- the adaptive end of turn the stack runs (mode "transcript") -------------------------


@pytest.fixture
async def adaptive() -> tuple[SessionRunner, FakeHost]:
    # the pause transcripts' own behaviour; the preemptive reply on top of them: `preempting`
    host = FakeHost()
    turns = TurnSettings(preemptive=False)
    runner = SessionRunner(host, Session(id="a1"), 1, "0-0", Settings(), turns, vad_stream=object())
    assert runner.endpoint.end_of_turn.mode == "transcript"
    await runner.on_start(
        SessionStart("a1", "sts", None, 16000, False, {}, False, time.time()), resumed=False
    )
    await host.settle()
    return runner, host


def pause_job(host: FakeHost) -> SttJob:
    job = [j for j in host.jobs("stt") if not j.partial][-1]
    assert job.pause and not job.probe and job.then is None
    return job


def decoded(host: FakeHost) -> list[SttJob]:
    """The STT jobs that decode a turn (pauses and finals; partials are previews)."""
    return [j for j in host.jobs("stt") if not j.partial]


async def test_a_finished_thought_ends_at_a_short_pause_with_that_transcript(adaptive):
    runner, host = adaptive
    speak(runner, host, [QUIET] * 10 + [SPEECH] * 30 + [QUIET] * 7)  # 224 ms: the candidate pause
    job = pause_job(host)
    assert runner.state == p.State.LISTENING  # not decided yet
    runner.on_transcript(
        SttResult(job.turn, runner.epoch, "What time is it?", False, 40.0, time.time(), pause=job.pause)
    )
    await host.settle()
    assert runner.state == p.State.THINKING
    assert [e["text"] for e in host.events("transcript")] == ["What time is it?"]
    assert len(decoded(host)) == 1  # the pause's transcript is the turn's: nothing decoded twice
    (llm,) = host.jobs("llm")
    assert llm.messages[-1]["content"] == "What time is it?"


async def test_an_unfinished_thought_waits_for_the_rest(adaptive):
    runner, host = adaptive
    speak(runner, host, [QUIET] * 10 + [SPEECH] * 20 + [QUIET] * 12)  # "I was wondering" ...
    first = pause_job(host)
    runner.on_transcript(
        SttResult(1, runner.epoch, "I was wondering", False, 40.0, time.time(), pause=first.pause)
    )
    assert runner.turn is None and host.events("transcript") == []
    speak(runner, host, [SPEECH] * 25 + [QUIET] * 7)  # "... whether you could tell me the time"
    second = pause_job(host)
    assert second.pcm.startswith(first.pcm[: len(first.pcm) // 2])  # the whole turn so far
    assert len(second.pcm) > len(first.pcm)
    runner.on_transcript(
        SttResult(
            1,
            runner.epoch,
            "I was wondering whether you could tell me the time.",
            False,
            40.0,
            time.time(),
            pause=second.pause,
        )
    )
    await host.settle()
    finals = host.events("transcript")
    assert [e["text"] for e in finals] == ["I was wondering whether you could tell me the time."]


async def test_the_ceiling_ends_an_unfinished_thought_with_the_transcript_it_has(adaptive):
    runner, host = adaptive
    speak(runner, host, [QUIET] * 10 + [SPEECH] * 20 + [QUIET] * 8)
    job = pause_job(host)
    runner.on_transcript(SttResult(1, runner.epoch, "Turn on the", False, 40.0, time.time(), pause=job.pause))
    speak(runner, host, [QUIET] * 40)  # 1.5 s: the ceiling
    await host.settle()
    assert [
        e["text"]
        for e in host.events(
            "transcript",
        )
        if e["final"]
    ] == ["Turn on the"]
    assert len(decoded(host)) == 1


async def test_the_ceiling_waits_for_a_pause_transcript_still_on_its_way(adaptive):
    runner, host = adaptive
    speak(runner, host, [QUIET] * 10 + [SPEECH] * 20 + [QUIET] * 48)  # the STT is slower than the ceiling
    job = pause_job(host)
    assert runner.state == p.State.THINKING and runner.turn is not None and runner.turn.awaiting == job.pause
    runner.on_transcript(
        SttResult(job.turn, runner.epoch, "Tell me a joke", False, 2500.0, time.time(), pause=job.pause)
    )
    await host.settle()
    assert [e["text"] for e in host.events("transcript") if e["final"]] == ["Tell me a joke"]
    assert len(decoded(host)) == 1 and len(host.jobs("llm")) == 1


async def test_a_pause_transcript_of_a_turn_the_user_went_on_with_is_never_final_nor_answered(adaptive):
    runner, host = adaptive
    speak(runner, host, [QUIET] * 10 + [SPEECH] * 20 + [QUIET] * 7)  # a pause: its transcript is asked for
    early = pause_job(host)
    speak(runner, host, [SPEECH] * 20)  # the user goes on before it comes back
    # it comes back saying "complete", too late: nothing is shown, nothing is answered
    runner.on_transcript(
        SttResult(1, runner.epoch, "Set a timer.", False, 900.0, time.time(), pause=early.pause)
    )
    await host.settle()
    assert [e for e in host.events("transcript") if e["final"]] == []
    assert host.jobs("llm") == [] and runner.turn is None
    speak(runner, host, [QUIET] * 7)
    late = pause_job(host)
    assert late.pause != early.pause and len(late.pcm) > len(early.pcm)  # the whole turn, again
    text = "Set a timer for ten minutes."
    runner.on_transcript(SttResult(1, runner.epoch, text, False, 900.0, time.time(), pause=late.pause))
    await host.settle()
    assert [e["text"] for e in host.events("transcript") if e["final"]] == [text]
    (llm,) = host.jobs("llm")  # one turn reaches the LLM, with all its words
    assert llm.messages[-1]["content"] == text


async def test_nothing_reaches_the_llm_before_the_turn_has_ended(adaptive):
    # so no tool with side effects can run for a turn the user has not finished
    runner, host = adaptive
    speak(runner, host, [QUIET] * 10 + [SPEECH] * 20 + [QUIET] * 7)
    job = pause_job(host)
    assert job.then is None  # the pause's STT job carries no LLM job
    runner.on_transcript(
        SttResult(1, runner.epoch, "Delete all my", False, 40.0, time.time(), pause=job.pause)
    )
    speak(runner, host, [QUIET] * 10)
    assert host.jobs("llm") == [] and runner.turn is None


# ---- a preemptive reply: started on a pause transcript, held until the turn ends ---------


@pytest.fixture
async def preempting() -> tuple[SessionRunner, FakeHost]:
    host = FakeHost()
    turns = TurnSettings(preemptive=True)
    runner = SessionRunner(host, Session(id="p1"), 1, "0-0", Settings(), turns, vad_stream=object())
    await runner.on_start(
        SessionStart("p1", "sts", None, 16000, False, {}, False, time.time()), resumed=False
    )
    await host.settle()
    return runner, host


def audio_out(host: FakeHost) -> list[AudioOut]:
    return [m for s, m in host.entries if s.startswith("out:") and isinstance(m, AudioOut)]


async def held_reply(runner: SessionRunner, host: FakeHost, job: LlmJob, reply: str) -> None:
    """The workers' side of a preemptive reply: its tokens, its first sentence's audio (a held
    TTS job writes it to the orchestrator), LLM done."""
    n, e = job.turn, job.epoch
    await runner.handle(LlmToken(n, e, reply, time.time()))
    first = time.time()
    await runner.handle(TtsProgress(n, e, 0, 2205, TTS_RATE, first, False, 0.0, first))
    await runner.handle(AudioOut(n, e, b"\x01\x00" * 2205))
    await runner.handle(LlmDone(n, e, 80.0, time.time()))


async def test_a_preemptive_reply_is_held_then_released_at_once_when_the_turn_ends_with_its_words(
    preempting,
):
    runner, host = preempting
    speak(runner, host, [QUIET] * 10 + [SPEECH] * 20 + [QUIET] * 8)
    job = pause_job(host)
    # "... for" without a question mark sounds unfinished: the turn waits for the ceiling
    text = "Tell me what a compass is used for."
    runner.on_transcript(SttResult(1, runner.epoch, text, False, 40.0, time.time(), pause=job.pause))
    (llm,) = host.jobs("llm")
    assert llm.preemptive and llm.messages[-1]["content"] == text and llm.speak is not None
    await held_reply(runner, host, llm, "It shows north. It helps you find your way.")
    # nothing of it reached the client, nothing is in history, the turn has not begun
    assert host.events("reply") == [] and host.events("audio_start") == [] and audio_out(host) == []
    assert host.events("transcript") == [] and runner.turn is None and runner.session.history == []
    assert runner.state == p.State.LISTENING
    speak(runner, host, [QUIET] * 40)  # the ceiling: the turn ends at that pause, with its words
    await host.settle()
    assert [e["text"] for e in host.events("transcript") if e["final"]] == [text]
    assert "".join(e["delta"] for e in host.events("reply") if not e.get("final")).startswith("It shows")
    assert host.events("audio_start")[0]["turn"] == 1 and len(audio_out(host)) == 1
    assert runner.state == p.State.SPEAKING
    assert len(host.jobs("llm")) == 1 and len(decoded(host)) == 1  # nothing asked twice
    turn = runner.turn
    assert turn is not None and turn.first_audio_ts is not None
    assert turn.first_audio_ts >= turn.decided_ts  # heard once the turn ended, not before
    # the held sentence's last audio and its end come after the release: relayed as they come
    await runner.handle(AudioOut(1, llm.epoch, b"\x02\x00" * 2205))
    await runner.handle(TtsProgress(1, llm.epoch, 0, 4410, TTS_RATE, 1.0, True, 30.0, time.time()))
    assert len(audio_out(host)) == 2
    (tts,) = host.jobs("tts")  # the next sentence goes to TTS as always, straight to the client
    assert tts.seq == 1 and not tts.hold


async def test_a_preemptive_reply_for_a_turn_the_user_continues_is_never_sent_nor_in_history(preempting):
    runner, host = preempting
    speak(runner, host, [QUIET] * 10 + [SPEECH] * 20 + [QUIET] * 8)
    first = pause_job(host)
    runner.on_transcript(
        SttResult(1, runner.epoch, "I was wondering", False, 40.0, time.time(), pause=first.pause)
    )
    (early,) = host.jobs("llm")
    assert early.preemptive
    await runner.handle(LlmToken(1, early.epoch, "Wondering is good.", time.time()))
    speak(runner, host, [SPEECH] * 10)  # the user goes on: the held reply is discarded
    await host.settle()
    assert runner.epoch > early.epoch  # its jobs are cancelled (the workers' writes are refused)
    assert host.events("interrupted") == []  # the client never saw it: nothing to take back
    await held_reply(runner, host, early, "Wondering is good.")  # late results: dropped
    speak(runner, host, [SPEECH] * 15 + [QUIET] * 7)
    text = "I was wondering whether you could tell me the time."
    runner.on_transcript(
        SttResult(1, runner.epoch, text, False, 40.0, time.time(), pause=pause_job(host).pause)
    )
    await host.settle()
    assert [e["text"] for e in host.events("transcript") if e["final"]] == [text]  # one turn, all words
    llm = host.jobs("llm")
    assert len(llm) == 2 and not llm[1].preemptive and llm[1].messages[-1]["content"] == text
    await answer(runner, host, text, "It is noon.")
    replies = [e.get("delta") or e.get("text") for e in host.events("reply")]
    assert not any("Wondering" in r for r in replies) and audio_out(host) == []
    (rec,) = runner.session.history
    assert rec.user == text and rec.assistant == "It is noon."


async def test_a_preemptive_reply_stopped_at_a_tool_with_side_effects_is_answered_again_once_the_turn_ends(
    preempting,
):
    runner, host = preempting
    speak(runner, host, [QUIET] * 10 + [SPEECH] * 20 + [QUIET] * 8)
    job = pause_job(host)
    text = "Remember that my name is Ada and"
    runner.on_transcript(SttResult(1, runner.epoch, text, False, 40.0, time.time(), pause=job.pause))
    (pre,) = host.jobs("llm")
    # the LLM worker stopped at `remember` without running it (tests/unit/llm): nothing to save
    await runner.handle(LlmDone(1, pre.epoch, 30.0, time.time(), held_tool="remember"))
    assert runner.session.context == {}
    speak(runner, host, [QUIET] * 40)  # the turn ends with those words: now the tool may run
    await host.settle()
    llm = host.jobs("llm")
    assert len(llm) == 2 and not llm[1].preemptive and llm[1].epoch > pre.epoch
    assert llm[1].messages[-1]["content"] == text
    assert [e["text"] for e in host.events("transcript") if e["final"]] == [text]


async def test_no_preemptive_reply_for_a_turn_the_user_continues_ever_runs_a_tool_with_side_effects(
    preempting,
):
    runner, host = preempting
    speak(runner, host, [QUIET] * 10 + [SPEECH] * 20 + [QUIET] * 8)
    runner.on_transcript(
        SttResult(1, runner.epoch, "Delete all my", False, 40.0, time.time(), pause=pause_job(host).pause)
    )
    (pre,) = host.jobs("llm")
    assert pre.preemptive  # the worker runs no tool with side effects for it
    await runner.handle(LlmDone(1, pre.epoch, 30.0, time.time(), held_tool="remember"))
    speak(runner, host, [SPEECH] * 10 + [QUIET] * 7)  # "... reminders?" the user went on
    await host.settle()
    assert host.jobs("llm") == [pre]  # nothing dispatched for the unfinished turn
    assert runner.turn is None and host.events("reply") == []


async def test_a_reply_cut_at_max_tokens_ends_on_its_last_whole_sentence(setup):
    runner, host = setup
    speak(runner, host, utterance())
    turn = runner.turn
    assert turn is not None
    runner.on_transcript(SttResult(turn.n, runner.epoch, "why is the sky blue", True, 50.0, time.time()))
    runner.on_token(LlmToken(turn.n, runner.epoch, "Sunlight is scattered. Blue light scatters the", 1.0))
    runner.on_llm_done(LlmDone(turn.n, runner.epoch, 80.0, time.time(), truncated=True))
    assert [s.text for s in turn.audio.sentences] == ["Sunlight is scattered."]  # the fragment unspoken
    assert host.events("reply")[-1]["text"] == "Sunlight is scattered."
    runner.on_tts(TtsProgress(turn.n, runner.epoch, 0, 22050, TTS_RATE, time.time() - 2, True, 30.0, 0.0))
    await host.settle()
    assert runner.session.history[-1].assistant == "Sunlight is scattered."


async def test_a_pause_transcript_that_comes_back_after_the_user_went_on_starts_no_reply(preempting):
    runner, host = preempting
    speak(runner, host, [QUIET] * 10 + [SPEECH] * 20 + [QUIET] * 7)
    job = pause_job(host)
    speak(runner, host, [SPEECH] * 5)  # the user went on before it came back
    late = SttResult(1, runner.epoch, "Turn on the", False, 900.0, time.time(), pause=job.pause)
    runner.on_transcript(late)
    assert host.jobs("llm") == [] and runner.preempt is None


async def test_no_partial_transcript_is_asked_for_during_a_pause(preempting):
    runner, host = preempting
    speak(runner, host, [QUIET] * 10 + [SPEECH] * 45)  # 1.4 s of speech: a partial at 1 s
    (partial,) = host.jobs("stt-partial")
    runner.on_transcript(SttResult(1, runner.epoch, "Turn on", False, 40.0, time.time()))
    speak(runner, host, [QUIET] * 40)  # a 1.3 s pause: the pause transcript has its words
    assert host.jobs("stt-partial") == [partial]
