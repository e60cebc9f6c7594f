"""The model interface every adapter implements, and the typed requests and outputs per stage.

A model is loaded once, serves many `infer()` calls, and streams its output as an
async iterator. Blocking inference runs in a worker thread (`stream_in_thread`) so the
service's event loop never stalls.
"""

from __future__ import annotations

import abc
import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Req = TypeVar("Req")
Out = TypeVar("Out")


@dataclass(slots=True)
class SttRequest:
    pcm: bytes  # PCM16LE mono
    sample_rate: int
    partial: bool = False  # a partial transcript of speech still going on
    language: str | None = None
    probe: bool = False  # a short sound over a reply: only words the model is sure of count


@dataclass(slots=True)
class Transcript:
    text: str
    final: bool = True


@dataclass(slots=True)
class LlmRequest:
    messages: list[dict[str, Any]]  # OpenAI chat format; content may hold image parts
    context: dict[str, Any] = field(default_factory=dict)  # the session's key-value context (tools read it)
    # started before the user's turn has ended (a preemptive reply): a tool call with side
    # effects is not run, the reply stops there (`LlmStopped(reason="tool")`)
    preemptive: bool = False


@dataclass(slots=True)
class LlmDelta:
    text: str


@dataclass(slots=True)
class LlmStopped:
    """The reply ended before the model finished it: cut at the token budget (`"length"`:
    its text may end mid-sentence), or, for a preemptive request, at a tool call with side
    effects that was not run (`"tool"`, with the tool's name)."""

    reason: str  # "length" or "tool"
    tool: str = ""


@dataclass(slots=True)
class ContextUpdate:
    """A tool changed the session context; the orchestrator applies and saves it."""

    key: str
    value: Any  # None deletes the key


@dataclass(slots=True)
class TtsRequest:
    text: str
    voice: str | None = None


@dataclass(slots=True)
class AudioChunk:
    pcm: bytes  # PCM16LE mono
    sample_rate: int


class Model(abc.ABC, Generic[Req, Out]):
    """load() / unload() / infer(): the contract between a worker and its model."""

    name: str = "model"

    def __init__(self) -> None:
        self.loaded = False

    async def load(self) -> None:
        self.loaded = True

    async def unload(self) -> None:
        self.loaded = False

    @abc.abstractmethod
    def infer(self, request: Req) -> AsyncIterator[Out]:
        """Stream the outputs for one request."""


_DONE = object()


async def stream_in_thread(make_iter: Callable[[], Iterator[Out]], maxsize: int = 64) -> AsyncIterator[Out]:
    """Run a blocking generator in a thread and yield its items on the event loop.

    Closing the async iterator (the consumer stops early, e.g. on barge-in) tells the
    thread to stop at its next item.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=maxsize)
    stop = threading.Event()

    def put(item: Any) -> None:
        fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        fut.result()

    def run() -> None:
        try:
            for item in make_iter():
                if stop.is_set():
                    break
                put(item)
        except BaseException as exc:  # handed to the consumer
            put(exc)
            return
        put(_DONE)

    thread_task = loop.run_in_executor(None, run)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not queue.empty():  # unblock a producer waiting on a full queue
            queue.get_nowait()
        if not thread_task.done():
            # drain until the thread notices the stop flag
            while not thread_task.done():
                try:
                    await asyncio.wait_for(queue.get(), 0.05)
                except TimeoutError:
                    pass
