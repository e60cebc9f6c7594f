"""A turn's audio is bounded: a user who keeps going on before the reply is heard (the stack is
slow, each continuation cancels the reply and re-sends all the audio so far) gets that turn
answered once it holds `max_recording_s` of audio, and what they say after it begins the next
turn. Runs the runner with the in-memory host of test_session.py; a fake STT transcribes a job
as the words whose audio it holds, so every word can be followed into exactly one turn."""

from __future__ import annotations

import time

import numpy as np

from services.orchestrator.config import TurnSettings
from services.orchestrator.session import SessionRunner
from shared import protocol as p
from shared.config import Settings
from shared.messages import Audio, LlmDone, LlmToken, SessionStart, SttJob, SttResult, TtsProgress
from shared.sessions import Session
from tests.unit.orchestrator.test_session import QUIET, SILENCE_MODE, SPEECH, TTS_RATE, WINDOW, FakeHost

BOUND_S = 2.0  # max_recording_s in these tests
RATE = 16000


async def _runner(host: FakeHost, turns: TurnSettings = SILENCE_MODE) -> SessionRunner:
    runner = SessionRunner(
        host, Session(id="s1"), 1, "0-0", Settings(max_recording_s=BOUND_S), turns, vad_stream=object()
    )
    await runner.on_start(SessionStart("s1", "sts", None, RATE, False, {}, False, time.time()), False)
    await host.settle()
    return runner


class User:
    """Says numbered words: each is its own stretch of speech with audio of its own, so a
    transcript can be made from whichever words' audio an STT job holds."""

    def __init__(self, runner: SessionRunner, host: FakeHost) -> None:
        self.runner, self.host = runner, host
        self.words: dict[str, bytes] = {}  # word -> the audio of its speech windows
        self.frames = 0

    async def say(self, speech_windows: int = 20, quiet_windows: int = 9) -> str:
        """One window every 32 ms; what the runner spawned runs between them, as on its loop."""
        word = f"w{len(self.words)}"
        rng = np.random.default_rng(len(self.words) + 1)
        spoken = b""
        for prob in [QUIET] * 10 + [SPEECH] * speech_windows + [QUIET] * quiet_windows:
            level = 8000 if prob >= 0.5 else 10
            pcm = (rng.standard_normal(WINDOW) * level).astype("<i2").tobytes()
            if prob >= 0.5:
                spoken += pcm
            ts = time.time()
            self.frames += 1
            self.runner.cursor = f"{1700000000000 + 32 * self.frames}-0"  # its in:{sid} id
            self.runner.on_audio(Audio(pcm, ts))
            self.host.windows.clear()
            self.runner.on_vad(prob, ts)
            await self.host.settle()
        self.words[word] = spoken
        return word

    def heard_in(self, job: SttJob) -> str:
        """What a faithful STT makes of the job: the words whose audio it holds, in order."""
        found = [(job.pcm.find(a), w) for w, a in self.words.items() if a in job.pcm]
        return " ".join(w for _, w in sorted(found))


def finals(host: FakeHost) -> list[SttJob]:
    """The STT jobs that transcribe a turn (not probes, pauses or partials)."""
    return [j for j in host.jobs("stt") if not (j.partial or j.probe or j.pause)]


def seconds_of(pcm: bytes) -> float:
    return len(pcm) / 2 / RATE


async def transcribe(runner: SessionRunner, host: FakeHost, user: User) -> SttJob:
    """The STT worker answers the turn's live job (the latest one of its turn and epoch)."""
    turn = runner.turn
    assert turn is not None
    if turn.awaiting:  # the turn ended at a pause whose transcript is its own
        (job,) = [j for j in host.jobs("stt") if j.pause == turn.awaiting and j.epoch == runner.epoch]
    else:
        job = [j for j in finals(host) if j.turn == turn.n and j.epoch == runner.epoch][-1]
    text = user.heard_in(job)
    await runner.handle(SttResult(job.turn, job.epoch, text, True, 40.0, time.time(), pause=job.pause))
    await host.settle()
    return job


async def reply(runner: SessionRunner, host: FakeHost, audio_s: float = 2.0, heard_s: float = 1.0) -> None:
    """The LLM and TTS answer the turn; the client started playing it `heard_s` ago."""
    turn = runner.turn
    assert turn is not None and turn.user
    await runner.handle(LlmToken(turn.n, runner.epoch, "Sure.", time.time()))
    await runner.handle(LlmDone(turn.n, runner.epoch, 50.0, time.time()))
    first = time.time() - heard_s
    samples = int(audio_s * TTS_RATE)
    await runner.handle(
        TtsProgress(turn.n, runner.epoch, 0, samples, TTS_RATE, first, True, 20.0, time.time())
    )
    await host.settle()


def slack_s(user: User) -> float:
    """What a turn may hold past the bound: the stretch of speech that was going on when it
    reached it (its pre- and post-roll included)."""
    longest = max(seconds_of(a) for a in user.words.values())
    return longest + 0.2 + 0.1  # JARVIS_TURN_PRE_ROLL_MS, JARVIS_TURN_POST_ROLL_MS


def assert_each_word_once(runner: SessionRunner, user: User) -> None:
    said = [w for rec in runner.session.history for w in rec.user.split()]
    assert sorted(said) == sorted(user.words), said  # every word, in exactly one turn


async def test_a_turn_continued_past_the_bound_is_answered_and_what_follows_is_the_next_turn():
    host = FakeHost()
    runner = await _runner(host)
    user = User(runner, host)
    await user.say()  # turn 1 ... the stack is slow: no transcript comes back before the user goes on
    for _ in range(2):
        await user.say()  # "... and ..." before the reply: the same turn, all its audio sent again
    continued = host.events("interrupted")
    assert len(continued) == 2 and all(e["continued"] and e["turn"] == 1 for e in continued)
    (turn,) = {j.turn for j in finals(host)}
    assert turn == 1 and seconds_of(runner.turn.pcm) >= BOUND_S  # the turn is full now

    for _ in range(4):  # the user goes on again and again: the full turn is no longer cancelled
        await user.say()
    assert host.events("interrupted") == continued
    assert len(finals(host)) == 3 and runner.turn is not None and runner.turn.n == 1

    job = await transcribe(runner, host, user)  # the full turn's live job, never cancelled
    assert runner.session.history == [] and host.events("transcript")[-1]["text"] == "w0 w1 w2"
    await reply(runner, host)
    assert [r.user for r in runner.session.history] == ["w0 w1 w2"]
    runner.tick(time.time() + 5)  # its reply has played: what the user said meanwhile is answered
    assert runner.state == p.State.THINKING and runner.turn.n == 2

    # what was said over the full turn waits as turns of up to the bound each, answered in order
    await transcribe(runner, host, user)
    await reply(runner, host)
    runner.tick(time.time() + 5)
    assert runner.turn is not None and runner.turn.n == 3
    await transcribe(runner, host, user)
    await reply(runner, host)
    runner.tick(time.time() + 5)
    assert runner.state == p.State.LISTENING and runner.turn is None and not runner.queued
    assert [r.user for r in runner.session.history] == ["w0 w1 w2", "w3 w4 w5", "w6"]
    assert_each_word_once(runner, user)
    assert job.turn == 1
    for j in finals(host):  # no STT job holds more than the bound and one stretch of speech
        assert seconds_of(j.pcm) <= BOUND_S + slack_s(user), seconds_of(j.pcm)


async def test_speech_over_a_full_turn_then_a_barge_in_over_its_reply_keep_every_word_in_order():
    host = FakeHost()
    runner = await _runner(host)
    user = User(runner, host)
    for _ in range(3):
        await user.say()
    await user.say()  # over the full turn, still thinking: held over
    await transcribe(runner, host, user)
    await reply(runner, host, audio_s=5.0, heard_s=1.0)  # the user hears the reply ...
    await user.say(speech_windows=30)  # ... and talks over it: a barge-in (over 800 ms of speech)
    cut = host.events("interrupted")[-1]
    assert not cut.get("continued") and cut["turn"] == 1
    assert runner.session.history[0].user == "w0 w1 w2" and runner.session.history[0].interrupted
    # the next turn is what was held over, then the words that cut the reply, in the order said
    assert runner.turn is not None and runner.turn.n == 2
    await transcribe(runner, host, user)
    assert host.events("transcript")[-1]["text"] == "w3 w4"  # in the order of their audio
    await reply(runner, host)
    assert_each_word_once(runner, user)


async def test_a_turn_under_the_bound_is_still_continued_whole():
    host = FakeHost()
    runner = await _runner(host)
    user = User(runner, host)
    await user.say()
    await user.say()
    await transcribe(runner, host, user)
    assert host.events("transcript")[-1]["text"] == "w0 w1"  # one turn: both words, transcribed once
    assert not runner.queued


async def test_speech_over_a_full_turn_whose_reply_the_client_cuts_is_answered_next():
    host = FakeHost()
    runner = await _runner(host)
    user = User(runner, host)
    for _ in range(3):
        await user.say()
    await user.say()  # held over
    await transcribe(runner, host, user)
    await reply(runner, host, audio_s=5.0)
    await runner.on_command(p.Interrupt(), time.time())  # the client stops the reply
    await host.settle()
    assert runner.turn is not None and runner.turn.n == 2  # what was said over it is answered
    await transcribe(runner, host, user)
    await reply(runner, host)
    assert [r.user for r in runner.session.history] == ["w0 w1 w2", "w3"]


async def test_a_full_turn_no_stt_worker_took_is_answered_first_when_one_is_back():
    host = FakeHost()
    runner = await _runner(host)
    user = User(runner, host)
    for _ in range(3):
        await user.say()
    full = runner.turn
    assert full is not None
    host.workers = False  # the STT workers are gone
    now = time.time()
    runner.tick(now)
    runner.tick(now + runner.settings.worker_gone_s + 1)
    await host.settle()
    assert host.events("error")[-1]["code"] == "model_error" and runner.turn is None
    host.workers = True
    await user.say()  # the user asks again: the unheard words go first, the new ones after them
    assert runner.turn is not None and runner.turn.pcm == full.pcm  # not more than one turn's audio
    await transcribe(runner, host, user)
    await reply(runner, host)
    runner.tick(time.time() + 5)
    await transcribe(runner, host, user)
    await reply(runner, host)
    assert [r.user for r in runner.session.history] == ["w0 w1 w2", "w3"]
    assert_each_word_once(runner, user)


async def test_speech_that_ends_before_a_full_turns_reply_is_heard_waits_for_it_to_play():
    host = FakeHost()
    runner = await _runner(host)
    user = User(runner, host)
    for _ in range(3):
        await user.say()
    await transcribe(runner, host, user)
    await reply(runner, host, audio_s=3.0, heard_s=0.05)  # 50 ms of it played: not heard yet
    await user.say(speech_windows=10)  # said before the reply was heard: held over, not a probe
    assert len(host.events("interrupted")) == 2  # the two continuations that filled the turn only
    assert [j for j in host.jobs("stt") if j.probe] == []
    assert host.events("playback")[-1]["action"] == "resume"  # the reply goes on
    assert [r.user for r in runner.session.history] == ["w0 w1 w2"]  # kept: it was answered
    runner.tick(time.time() + 5)  # played to the end: the next turn
    assert runner.turn is not None and runner.turn.n == 2
    await transcribe(runner, host, user)
    await reply(runner, host)
    assert_each_word_once(runner, user)


async def test_with_pause_transcripts_no_stt_job_of_a_continued_turn_exceeds_the_bound():
    host = FakeHost()
    runner = await _runner(host, TurnSettings(preemptive=False))  # the adaptive end of turn
    assert runner.endpoint.end_of_turn.mode == "transcript"
    user = User(runner, host)
    for _ in range(6):  # no pause transcript comes back: each turn ends at the 1.5 s ceiling
        await user.say(quiet_windows=50)
    assert runner.turn is not None and runner.turn.awaiting  # the full turn waits on its pause's
    await transcribe(runner, host, user)
    await reply(runner, host)
    runner.tick(time.time() + 5)
    await transcribe(runner, host, user)
    await reply(runner, host)
    assert [r.user for r in runner.session.history] == ["w0 w1 w2", "w3 w4 w5"]
    jobs = [j for j in host.jobs("stt") if not j.partial]
    assert any(j.pause for j in jobs)
    for j in jobs:  # pause transcripts and finals alike
        assert seconds_of(j.pcm) <= BOUND_S + slack_s(user), seconds_of(j.pcm)


async def test_a_new_owner_would_replay_the_speech_held_over_and_not_the_turn_answered_before_it():
    host = FakeHost()
    runner = await _runner(host)
    user = User(runner, host)
    for _ in range(3):
        await user.say()
    full_end = runner.cursor  # the full turn's input ends here
    await user.say()  # held over
    await transcribe(runner, host, user)
    await reply(runner, host)
    assert runner.session.history[-1].user == "w0 w1 w2"
    # in history now: a takeover must not answer it again, nor lose what was said after it
    assert runner.safe_cursor == full_end
    runner.tick(time.time() + 5)
    await transcribe(runner, host, user)
    await reply(runner, host)
    runner.tick(time.time() + 5)
    assert runner.safe_cursor == runner.cursor  # all answered: nothing to replay
