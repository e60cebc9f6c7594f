"""The runner when something breaks under it: a worker dies holding a job (it is dispatched
again; a streaming reply starts over under a new epoch), no worker of a kind is alive (a clear
error, the words kept), Redis restarted (the turn runs again), a stream stalls mid-speech (the
detector's clock stays the audio's), a recording runs too long, and the replay cursor."""

from __future__ import annotations

import time

from services.orchestrator.session import SessionRunner
from shared import protocol as p
from shared.config import Settings
from shared.messages import JobLost, LlmToken, SessionStart, SttResult, TtsProgress
from shared.sessions import Session
from tests.unit.orchestrator.test_session import QUIET, SILENCE_MODE, SPEECH, FakeHost, speak


async def _runner(host: FakeHost, **settings) -> SessionRunner:
    runner = SessionRunner(
        host, Session(id="s1"), 1, "0-0", Settings(**settings), SILENCE_MODE, vad_stream=object()
    )
    await runner.on_start(SessionStart("s1", "sts", None, 16000, False, {}, False, time.time()), False)
    await host.settle()
    return runner


async def _ask(runner: SessionRunner, host: FakeHost) -> None:
    speak(runner, host, [SPEECH] * 20 + [QUIET] * 12)  # 640 ms of speech, then the end silence
    await host.settle()
    assert runner.turn is not None and runner.turn.pcm


async def test_a_lost_final_stt_job_is_sent_again_with_the_turns_audio():
    host = FakeHost()
    runner = await _runner(host)
    await _ask(runner, host)
    (first,) = [j for j in host.jobs("stt") if not j.partial]
    runner.on_lost(JobLost("stt", first.turn, first.epoch))
    again = [j for j in host.jobs("stt") if not j.partial]
    assert len(again) == 2 and again[1].pcm == first.pcm and again[1].epoch == first.epoch
    runner.on_lost(JobLost("stt", first.turn, first.epoch - 1))  # an older epoch: nothing
    assert len([j for j in host.jobs("stt") if not j.partial]) == 2


async def test_a_lost_llm_job_mid_reply_restarts_the_reply_under_a_new_epoch():
    host = FakeHost()
    runner = await _runner(host)
    await _ask(runner, host)
    turn = runner.turn
    await runner.handle(SttResult(turn.n, turn.epoch, "what time is it", True, 10.0, time.time()))
    await host.settle()
    await runner.handle(LlmToken(turn.n, turn.epoch, "It is", time.time()))
    old = runner.epoch
    runner.on_lost(JobLost("llm", turn.n, old))
    await host.settle()
    assert runner.epoch == old + 1 and runner.turn is turn and turn.reply == ""
    cut = host.events("interrupted")[-1]
    assert cut["continued"] is True and cut["turn"] == turn.n  # the client drops the partial reply
    assert host.events("transcript")[-1]["text"] == "what time is it"
    llm = host.jobs("llm")[-1]
    assert llm.epoch == runner.epoch and llm.messages[-1]["content"] == "what time is it"
    # the dead worker's late tokens (old epoch) are not part of the reply
    await runner.handle(LlmToken(turn.n, old, " noon", time.time()))
    assert turn.reply == ""


async def test_a_lost_tts_job_sends_its_sentence_again():
    host = FakeHost()
    runner = await _runner(host)
    await _ask(runner, host)
    turn = runner.turn
    await runner.handle(SttResult(turn.n, turn.epoch, "hi", True, 10.0, time.time()))
    await host.settle()
    await runner.handle(LlmToken(turn.n, turn.epoch, "Hello there. How are you?", time.time()))
    await runner.handle(TtsProgress(turn.n, turn.epoch, 0, 100, 16000, time.time(), False, 0, time.time()))
    sent = len(host.jobs("tts"))
    runner.on_lost(JobLost("tts", turn.n, turn.epoch, seq=0))
    (job,) = host.jobs("tts")[sent:]
    assert job.seq == 0 and job.text == "Hello there."


async def test_no_live_worker_gives_a_clear_error_and_keeps_the_words():
    host = FakeHost()
    runner = await _runner(host, worker_gone_s=2.0)
    await _ask(runner, host)
    pcm = runner.turn.pcm
    host.workers = False  # every STT worker died, none came back
    now = time.time()
    runner.tick(now)
    assert not host.events("error")
    runner.tick(now + 2.1)
    await host.settle()
    (err,) = host.events("error")
    assert err["code"] == "model_error" and "stt" in err["message"]
    assert runner.turn is None and runner.prefix.startswith(pcm)  # they begin the next turn


async def test_redis_restart_runs_the_turn_again():
    host = FakeHost()
    runner = await _runner(host)
    await _ask(runner, host)
    before = len([j for j in host.jobs("stt") if not j.partial])
    runner.recover()
    await host.settle()
    stt = [j for j in host.jobs("stt") if not j.partial]
    assert len(stt) == before + 1 and stt[-1].epoch == runner.epoch == host.epoch


async def test_a_stalled_stream_ends_the_turn_without_moving_the_clock():
    host = FakeHost()
    runner = await _runner(host)
    speak(runner, host, [SPEECH] * 20)  # the client stops sending mid-speech
    assert runner.detector.in_speech
    clock = runner.detector.now_ms
    runner.tick(time.time() + 2)
    assert runner.turn is not None  # the turn was ended and dispatched
    assert runner.detector.now_ms == clock  # stream time is still the audio's
    assert runner.detector.now_ms * 16 == runner.ctx.samples_in  # ms * samples per ms


async def test_a_recording_too_long_is_ended():
    host = FakeHost()
    runner = await _runner(host, max_recording_s=1.0)
    await runner.on_command(p.Config(trigger=p.Trigger.MANUAL), time.time())
    await runner.on_command(p.Turn(action="begin"), time.time())
    speak(runner, host, [SPEECH] * 40)  # 1.28 s held
    runner.tick(time.time())
    assert not runner.ctx.recording and runner.turn is not None


async def test_the_idle_replay_cursor_keeps_the_last_second_of_input():
    host = FakeHost()
    runner = await _runner(host)
    runner.cursor = "1700000005000-0"
    runner.tick(time.time())
    assert runner.safe_cursor == "1700000003950-0"  # pre-roll + min speech + 600 ms behind
    runner.cursor = "1700000004000-3"  # never backwards
    runner.tick(time.time())
    assert runner.safe_cursor == "1700000003950-0"


async def test_a_job_that_kills_every_worker_is_given_up_with_an_error():
    host = FakeHost()
    runner = await _runner(host)
    await _ask(runner, host)
    turn = runner.turn
    for _ in range(3):
        runner.on_lost(JobLost("stt", turn.n, turn.epoch))
    assert len([j for j in host.jobs("stt") if not j.partial]) == 3  # the first and two more tries
    (err,) = host.events("error")
    assert err["code"] == "model_error" and "died 3 times" in err["message"]
