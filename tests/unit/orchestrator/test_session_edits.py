"""The conversation edits a client can make (the Realtime API's features): instructions,
a reply without new user words, forgetting a side of a turn, truncating a reply where the
client's playback stopped, and text-only replies. In-memory host, as in test_session."""

from __future__ import annotations

import time

import pytest

from services.orchestrator.config import EndOfTurnConfig, EndpointSettings, TurnSettings
from services.orchestrator.session import SessionRunner
from shared import protocol as p
from shared.config import Settings
from shared.messages import Command, LlmDone, LlmJob, LlmToken, SessionStart, TtsProgress, jobs_stream
from shared.sessions import Session
from tests.unit.orchestrator.test_session import TTS_RATE, FakeHost, answer, speak, utterance

# the state machine's tests end a turn on silence alone (288 ms); the adaptive end of turn the
# stack runs by default has its own tests below / in test_end_of_turn.py
SILENCE_MODE = TurnSettings(endpoint=EndpointSettings(end_of_turn=EndOfTurnConfig(mode="silence")))


@pytest.fixture
async def setup() -> tuple[SessionRunner, FakeHost]:
    host = FakeHost()
    runner = SessionRunner(host, Session(id="s1"), 1, "0-0", Settings(), SILENCE_MODE, vad_stream=object())
    await runner.on_start(
        SessionStart("s1", "sts", None, 16000, False, {}, False, time.time()), resumed=False
    )
    await host.settle()
    return runner, host


async def command(runner: SessionRunner, host: FakeHost, msg: p._Msg) -> None:
    await runner.handle(Command(msg.model_dump(mode="json"), time.time()))
    await host.settle()


async def test_instructions_are_the_system_prompt_of_every_later_turn(setup):
    runner, host = setup
    await command(runner, host, p.Instructions(text="Be brief."))
    assert runner.session.instructions == "Be brief." and host.saved
    speak(runner, host, utterance())
    plan = host.jobs("stt")[-1].then
    assert plan.messages[0] == {"role": "system", "content": "Be brief."}
    await command(runner, host, p.Instructions(text=""))
    assert runner.session.instructions is None


async def test_respond_replies_to_the_conversation_without_new_user_words(setup):
    runner, host = setup
    speak(runner, host, utterance())
    await answer(runner, host, "hello", "Hi there.", audio_s=0.01)
    runner.tick(time.time() + 1)
    await command(runner, host, p.Respond())
    turn = runner.turn
    assert turn is not None and turn.n == 2 and turn.speak
    (job,) = [m for s, m in host.entries if s == jobs_stream("llm")]
    assert isinstance(job, LlmJob)
    assert job.messages == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hi there."},
    ]
    runner.on_token(LlmToken(2, runner.epoch, "Anything else?", time.time()))
    runner.on_llm_done(LlmDone(2, runner.epoch, 10.0, time.time()))
    runner.on_tts(TtsProgress(2, runner.epoch, 0, 100, TTS_RATE, time.time(), True, 1.0, time.time()))
    await host.settle()
    assert [(r.user, r.assistant) for r in runner.session.history] == [
        ("hello", "Hi there."),
        ("", "Anything else?"),
    ]
    assert runner.session.messages(20)[-1] == {"role": "assistant", "content": "Anything else?"}


async def test_forget_empties_one_side_of_a_turn_and_says_so(setup):
    runner, host = setup
    speak(runner, host, utterance())
    await answer(runner, host, "my pin is 1234", "Noted.", audio_s=0.01)
    await command(runner, host, p.Forget(turn=1, role="user"))
    assert host.events("forgotten") == [{"type": "forgotten", "turn": 1, "role": "user"}]
    assert runner.session.messages(20) == [{"role": "assistant", "content": "Noted."}]
    await command(runner, host, p.Forget(turn=7, role="assistant"))
    assert host.events("error")[-1]["code"] == "invalid_message"


async def test_truncate_cuts_a_playing_reply_where_the_client_stopped(setup):
    runner, host = setup
    speak(runner, host, utterance())
    await answer(runner, host, "count", "One two three four. Five six seven eight.", audio_s=2.0)
    assert runner.last is not None  # playing
    await command(runner, host, p.Truncate(turn=1, audio_end_ms=1000))  # half of the first sentence
    (ev,) = host.events("interrupted")
    assert ev["spoken"] == "One two"
    assert runner.session.history[-1].assistant == "One two" and runner.session.history[-1].interrupted
    assert runner.state == p.State.LISTENING


async def test_truncate_after_playback_rewrites_history_only(setup):
    runner, host = setup
    speak(runner, host, utterance())
    await answer(runner, host, "count", "One two three four. Five six seven eight.", audio_s=2.0)
    runner.tick(time.time() + 10)
    epoch = runner.epoch
    await command(runner, host, p.Truncate(turn=1, audio_end_ms=3000))
    assert host.events("interrupted")[-1]["spoken"] == "One two three four. Five six"
    assert runner.epoch == epoch  # nothing was playing: no epoch to bump
    await command(runner, host, p.Truncate(turn=5, audio_end_ms=10))
    assert host.events("error")[-1]["code"] == "invalid_message"


async def test_output_text_only_makes_spoken_turns_skip_tts(setup):
    runner, host = setup
    await command(runner, host, p.Output(speak=False))
    speak(runner, host, utterance())
    assert runner.turn is not None and not runner.turn.speak
    assert host.jobs("stt")[-1].then.speak is None
    assert runner.session.config["speak"] is False
