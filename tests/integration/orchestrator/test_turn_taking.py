"""Turn taking as a user notices it, through the whole stack (stub models, real Silero VAD,
real speech from espeak-ng, silence and noise made in the test)."""

import asyncio
import json
import threading
import urllib.request

import pytest

from jarvis.redis_topologies import flush
from shared import codec, redis_url
from shared.messages import jobs_stream
from tests.support.client import Client
from tests.support.speech import concat, have_espeak, noise, silence, speak
from tests.support.stack import running_stack

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and sox make the test speech")

LONG_TEXT = (
    "Here is the first sentence of a long answer. Here is the second one, a little longer than that. "
    "And a third sentence follows. Then a fourth. And finally a fifth sentence to end it."
)


@pytest.fixture(scope="module", params=["one-redis", "redis-cluster"])
def stack(request, tmp_path_factory):
    """The stack on its own Redis, then on a 3-master Redis Cluster (every stage across slots)."""
    env = {}
    if request.param == "redis-cluster":
        env["JARVIS_REDIS_URL"] = request.getfixturevalue("redis_cluster_url")
        flush(env["JARVIS_REDIS_URL"])
    with running_stack(tmp_path_factory.mktemp("tt"), profile="stub", env=env) as s:
        yield s


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory):
    """The stub LLM streams a word every 150 ms: slower than speech."""
    with running_stack(tmp_path_factory.mktemp("slow"), profile="stub", stub_llm_delay=0.15) as s:
        yield s


async def _session(url: str, **start) -> Client:
    c = await Client.open(url)
    await c.start(**start)
    await c.wait_for("state", state="LISTENING")
    return c


def _saved(stack, sid: str) -> dict:
    return json.loads((stack.workdir / "sessions" / f"{sid}.json").read_text())


async def _eventually(check, timeout: float = 5.0):
    for _ in range(int(timeout / 0.1)):
        try:
            return check()
        except (AssertionError, FileNotFoundError, KeyError, IndexError):
            await asyncio.sleep(0.1)
    return check()


async def test_three_utterances_give_three_turns(stack):
    spy = JobSpy(stack.redis_url, "stt")  # STT jobs leave Redis once done: watch them go by
    c = await _session(stack.url)
    clip = concat(
        silence(0.5),
        speak("Good morning Jarvis"),
        silence(1.2),
        speak("What time is it in Tokyo"),
        silence(1.2),
        speak("Thank you very much"),
        silence(3.0),
    )
    await c.stream(clip)
    await asyncio.sleep(1.0)
    finals = c.of("transcript", final=True)
    assert len(finals) == 3, [e["text"] for e in finals]
    assert all(e["text"] for e in finals)
    assert len(c.of("metrics")) == 3
    replies = [e["text"] for e in c.of("reply", final=True)]
    assert replies == [f"You said: {e['text']}." for e in finals]
    # each turn was decoded at the pause that ended it (the adaptive end of turn's pause
    # transcript, which the orchestrator answers), or as a final STT job which, where an LLM
    # worker is alive, carries its LLM job (the reply starts without another orchestrator hop)
    sid = c.of("ready")[0]["session_id"]
    r = redis_url.sync_client(stack.redis_url)
    try:
        stt = [m for m in spy.stop() if m.sid == sid and not m.partial and not m.probe]
        llm = [m for m in _jobs(r, "llm") if m.sid == sid]
    finally:
        r.close()
    assert sorted({j.turn for j in stt}) == [1, 2, 3]
    # (the orchestrator knows its workers from their heartbeats: the first turn is chained too)
    assert all(j.then and j.then.kind == "llm" for j in stt if not j.pause)
    assert [j.turn for j in llm] == [1, 2, 3]
    msgs = llm[2].messages  # the history (replies as far as they were heard) and the new words
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in msgs[::2]] == [e["text"] for e in finals]
    assert all(replies[i].startswith(msgs[2 * i + 1]["content"]) for i in range(2))
    await c.close()


def _jobs(r, kind: str) -> list:
    return [codec.from_entry(fields) for _, fields in r.xrange(jobs_stream(kind))]


class JobSpy:
    """Every job written to `jobs:{kind}` from now on, read as it is written (a blocked XREAD is
    served right after the XADD, before any worker can take and delete the entry)."""

    def __init__(self, url: str, kind: str) -> None:
        self.r = redis_url.sync_client(url)
        self.stream = jobs_stream(kind)
        self.seen: list = []
        self._stop = threading.Event()
        self._last = (
            self.r.xinfo_stream(self.stream)["last-generated-id"] if self.r.exists(self.stream) else b"0-0"
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for _, entries in self.r.xread({self.stream: self._last}, block=200) or []:
                for eid, fields in entries:
                    self._last = eid
                    if fields:
                        self.seen.append(codec.from_entry(fields))

    def stop(self) -> list:
        self._stop.set()
        self._thread.join(2)
        self.r.close()
        return self.seen


@pytest.mark.parametrize("clip", ["silence", "noise"])
async def test_silence_and_noise_give_no_turn(stack, clip):
    c = await _session(stack.url)
    audio = silence(4.0) if clip == "silence" else noise(4.0, level=0.1)
    await c.stream(audio, realtime=False)
    await asyncio.sleep(1.5)
    assert c.of("transcript") == []
    assert c.of("vad") == []
    assert [e["state"] for e in c.of("state")] == ["LOADING", "LISTENING"]
    await c.close()


async def test_a_cough_does_not_interrupt_but_speech_does(stack):
    c = await _session(stack.url)
    await c.send({"type": "text", "text": LONG_TEXT, "speak": True})
    await c.wait_for("state", state="SPEAKING")
    streamer = asyncio.create_task(c.stream(concat(speak("hm")[:2400], silence(1.0))))  # 150 ms: a cough
    await streamer
    assert c.of("interrupted") == []
    # now the user really talks over the reply
    barge = asyncio.create_task(c.stream(concat(speak("Stop, I have another question"), silence(3.0))))
    ev = await c.wait_for("interrupted", timeout=10)
    await barge
    await asyncio.sleep(0.5)
    after = c.timeline[c.timeline.index("interrupted") + 1 :]
    # nothing of the interrupted reply's audio came after `interrupted`; the next turn's may
    audio_after = after[: after.index("audio_start")] if "audio_start" in after else after
    assert "audio" not in audio_after
    assert ev["turn"] == 1
    reply = f"You said: {LONG_TEXT}."  # the stub LLM's echo
    assert ev["spoken"] and reply.startswith(ev["spoken"]) and len(ev["spoken"]) < len(reply)
    sid = c.of("ready")[0]["session_id"]

    def check():
        first = _saved(stack, sid)["history"][0]
        assert first["interrupted"] is True
        assert first["assistant"] == ev["spoken"]
        return first

    await _eventually(check)
    await c.close()


async def test_first_audio_before_the_llm_finishes(slow_stack):
    c = await _session(slow_stack.url)
    await c.send({"type": "text", "text": LONG_TEXT, "speak": True})
    await c.wait_for("metrics", timeout=60)
    tl = c.timeline
    assert tl.index("audio") < tl.index("audio_start") + 2
    final_reply = next(i for i, e in enumerate(c.events) if e["type"] == "reply" and e.get("final"))
    first_audio = next(i for i, e in enumerate(c.events) if e["type"] == "audio_start")
    assert first_audio < final_reply  # speaking began while the LLM was still writing
    m = c.of("metrics")[0]
    assert m["first_audio_ms"] < m["llm_ms"]
    # the LLM worker started the first sentence's TTS job, the orchestrator the others: each
    # sentence was sent to TTS once, in order
    sid = c.of("ready")[0]["session_id"]
    r = redis_url.sync_client(slow_stack.redis_url)
    try:
        tts = [m for m in _jobs(r, "tts") if m.sid == sid]
    finally:
        r.close()
    assert [j.seq for j in tts] == list(range(len(tts))) and len(tts) >= 5
    assert tts[0].text == "You said: Here is the first sentence of a long answer."
    await c.close()


async def test_manual_trigger_push_to_talk(stack):
    c = await _session(stack.url, trigger="manual")
    speech = concat(speak("This is push to talk"), silence(0.3))
    await c.stream(concat(speech, silence(1.5)))  # speech without the button: nothing
    await asyncio.sleep(0.5)
    assert c.of("transcript") == []
    await c.send({"type": "turn", "action": "begin"})
    await c.stream(speech)
    await c.send({"type": "turn", "action": "end"})
    await c.wait_for("metrics")
    assert c.of("transcript", final=True)[0]["text"].startswith("I spoke for")
    await c.close()


async def test_client_vad_flags_drive_turns(stack):
    c = await _session(stack.url, client_vad=True)
    speech = speak("My own voice detector says this is speech")
    await c.stream(concat(speech, silence(1.0)), realtime=False)  # no flags: no turn
    await asyncio.sleep(0.8)
    assert c.of("transcript") == []
    await c.send({"type": "vad", "speaking": True})
    await c.stream(speech, realtime=False)
    await c.send({"type": "vad", "speaking": False})
    await c.wait_for("metrics")
    assert c.of("transcript", final=True)[0]["text"].startswith("I spoke for")
    await c.close()


async def test_continuous_trigger_answers_everything_without_barge_in(slow_stack):
    c = await _session(slow_stack.url, trigger="continuous")
    clip = concat(
        silence(0.3), speak("First question"), silence(0.8), speak("Second question right away"), silence(1.0)
    )
    streamer = asyncio.create_task(c.stream(concat(clip, silence(30))))
    await c.wait_for("metrics", count=2, timeout=40)
    streamer.cancel()
    assert c.of("interrupted") == []
    assert [e["turn"] for e in c.of("metrics")] == [1, 2]
    await c.close()


async def test_metrics_add_up_and_are_stored(stack):
    c = await _session(stack.url)
    await c.stream(concat(silence(0.3), speak("How far away is the moon"), silence(6.0)))
    m = await c.wait_for("metrics")
    total = m["total_ms"]
    assert m["end_of_turn_ms"] > 0
    assert m["end_of_turn_ms"] <= m["transcript_ms"] <= m["first_token_ms"] <= m["first_audio_ms"] <= total
    for stage in ("stt_ms", "llm_ms", "tts_ms"):
        assert 0 <= m[stage] <= total
    sid = c.of("ready")[0]["session_id"]
    stored = await _eventually(lambda: _saved(stack, sid)["history"][0]["metrics"])
    assert stored["first_audio_ms"] == m["first_audio_ms"]
    await c.close()


def test_services_expose_prometheus_latency_histograms(stack):
    # after the turns above, the orchestrator has observed turn latencies
    body = urllib.request.urlopen(stack.metrics["orchestrator"], timeout=5).read().decode()
    assert 'jarvis_turn_latency_seconds_bucket{le="0.5",stage="first_audio"}' in body
    for name in ("stt", "llm", "tts"):
        assert (
            "jarvis_job_seconds_bucket"
            in urllib.request.urlopen(stack.metrics[name], timeout=5).read().decode()
        )
    assert (
        "jarvis_gateway_frames_in_total"
        in urllib.request.urlopen(stack.metrics["gateway"], timeout=5).read().decode()
    )
