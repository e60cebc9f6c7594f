"""`python -m bench.long_session`: is turn 20 as fast as turn 2 at the LLM server?

Plays a 20-turn conversation against the CPU profile's LLM server (llama.cpp's, SmolLM2-135M,
started here as the stack starts it) with replies of a realistic length for this model (it
often talks to its `max_tokens`), and times each turn's request up to its first token (a one-
token reply: the prompt's evaluation, which is what grows with the history). Two history
windows, each on a fresh server:
- `slide`: the last 20 messages, one turn further each time (the windowing before the hop):
  from turn 11 on the prompt's prefix changes every turn and the whole window is evaluated anew;
- `stack`: the stack's own path: the session's history window (`Session.messages` with the
  orchestrator's `history_window`, moving in hops of half its length), the question appended as
  the orchestrator's LLM job does (`llm_job`), and the LLM client's `build_messages` (a cap above
  that window, which never cuts it): the window's first message stays put for five turns at a time.
Prints one row per turn and the turn 20 / turn 2 ratios; writes bench-results/long-session-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

QUESTIONS = [
    "What color is the sky on a clear day?",
    "Why does it look red at sunset?",
    "How far away is the moon?",
    "Who wrote Pride and Prejudice?",
    "What is a good name for a dog?",
]
REPLY = (
    "That is a great question, and there is a lot to say about it. The short answer is that it "
    "depends on the light, the air and the time of day, but most people would agree on the "
    "usual answer. Scientists have studied this for a long time, and they explain it with the "
    "way sunlight is scattered by the tiny particles and gas molecules in the atmosphere. Blue "
    "light is scattered more than red light, so it reaches our eyes from every direction. In "
    "the evening the light travels through more air, and the colours change. If you would like "
    "to know more, I can tell you about rainbows, clouds, or the colours of other planets."
)


@contextlib.contextmanager
def llama_server(timeout: float = 120.0) -> Iterator[str]:
    """The CPU profile's LLM server on a free loopback port, as the stack starts it; its base
    URL. Stopped by pid on the way out."""
    from jarvis.redis_server import free_port
    from services.llm.llamacpp import server_command, server_env

    port = free_port()
    proc = subprocess.Popen(
        server_command(port), env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the LLM server did not start") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _slide(history: Any, question: str) -> list[dict[str, Any]]:
    """The last 20 messages and the question, one turn further each time."""
    from shared.config import Settings

    return [*history.messages(10**6)[-Settings().history_window :], {"role": "user", "content": question}]


def _stack(history: Any, question: str) -> list[dict[str, Any]]:
    """What the orchestrator's LLM job holds (the session's window and the question)."""
    from shared.config import Settings
    from shared.messages import LlmPlan, llm_job

    plan = LlmPlan(kind="llm", messages=history.messages(Settings().history_window), context={})
    return llm_job("bench", len(history.history) + 1, 1, plan, question, 1)[1].messages


WINDOWS: dict[str, Callable[[Any, str], list[dict[str, Any]]]] = {"slide": _slide, "stack": _stack}


async def play(base_url: str, window: str, turns: int) -> list[float]:
    from services.llm.openai_chat import OpenAIChat
    from shared.sessions import Session, TurnRecord

    chat = OpenAIChat(base_url=base_url, tools_enabled=False)
    given = WINDOWS[window]
    await chat.warm()
    history = Session(id="bench")
    times = []
    for turn in range(turns):
        # every turn's words differ (a repeating conversation would hit the cache by accident)
        question = f"Question {turn + 1}: {QUESTIONS[turn % len(QUESTIONS)]}"
        messages = chat.build_messages(given(history, question))
        model = await chat.model_name()
        t0 = time.perf_counter()
        request = {"model": model, "messages": messages, "max_tokens": 1}
        await chat._call(lambda c, r=request: c.chat.completions.create(**r))
        times.append((time.perf_counter() - t0) * 1000)
        history.history.append(
            TurnRecord(turn=turn + 1, user=question, assistant=f"Answer {turn + 1}. {REPLY}")
        )
    await chat.unload()
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.long_session", description=__doc__)
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--windows", default=",".join(WINDOWS), help=f"comma-separated, of: {', '.join(WINDOWS)}")
    ap.add_argument("--priority", type=int, default=None, help="renice this process and its server (root)")
    ap.add_argument("--out", default=str(ROOT / "bench-results"))
    args = ap.parse_args(argv)
    import os

    from bench.monitor import renice
    from bench.report import table
    from bench.scenarios import machine

    if args.priority is not None:  # the LLM server started below inherits it
        renice({"bench": os.getpid()}, args.priority)
    results: dict[str, list[float]] = {}
    for name in [w.strip() for w in args.windows.split(",")]:
        with llama_server() as url:
            results[name] = asyncio.run(play(url, name, args.turns))
        print(f"  {name}: done", flush=True)
    names = list(results)
    rows = [[t + 1, *[round(results[n][t]) for n in names]] for t in range(args.turns)]
    ratios = {n: round(results[n][-1] / results[n][1], 2) for n in names if args.turns >= 2}
    rows.append(["last / turn 2", *[ratios.get(n) for n in names]])
    print(
        table(
            ["turn", *[f"{n} (ms)" for n in names]],
            rows,
            "LLM server, time to the first token by turn (prompt evaluation), replies of ~150 tokens",
        )
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"long-session-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"machine": machine(), "ms": results, "ratios": ratios}, indent=1))
    print(f"bench.long_session: results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
