"""The anchor scenario's server: Pipecat 1.14 in ONE process, one pipeline per WebSocket.

`python -m bench.pipecat_server --port P [--end-silence-ms 288]` serves `ws://127.0.0.1:P/ws`
(loopback only) until SIGTERM. The bench (`bench.pipecat_anchor`) starts and stops it by pid.

What is Pipecat's: the WebSocket transport (`FastAPIWebsocketTransport` under uvicorn, the
multi-client server transport Pipecat's own runner uses; `SingleClientWebsocketServerTransport`
serves one client at a time), the pipeline, its worker and runner, the user turn machinery
(`LLMContextAggregatorPair` with `SileroVADAnalyzer`: real Silero, Pipecat's default VAD
parameters except `stop_secs`, set to Jarvis's end-of-turn silence), interruptions (on, as
by default), the output transport's pacing, and the STT / TTS service base classes.

What is ours: the wire format and protocol events (`bench.pipecat_protocol`), and the stub
models, which call Jarvis's own stubs (services/stt|llm|tts/stub.py) so the replies are the
same: the transcript says how long the speech was, the LLM echoes it ("You said: ..."), the
TTS is a 220 Hz tone, 60 ms a character, in 100 ms chunks, no model delay. The turn ends when
Pipecat's VAD reports the speech stopped (`SpeechTimeoutUserTurnStopStrategy` with no extra
wait), the plain-silence rule scenario b runs Jarvis with; Pipecat's default stop strategy
(Smart Turn) is another end-of-turn model, measured by scenario eot, not framework overhead.
RTVI is off (the client does not speak it) and logs are at WARNING, as in a deployment; uvicorn
runs as Pipecat's runner runs it (`uvicorn.run`, so uvloop where it is installed, as here).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncGenerator
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.tts_service import TTSService
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.time import time_now_iso8601

from bench.pipecat_protocol import RATE, JarvisEvents, JarvisSerializer
from services.llm.stub import StubLlm
from services.stt.stub import StubStt
from services.tts.stub import StubTts
from shared.model import LlmRequest, SttRequest, TtsRequest


class StubSTT(SegmentedSTTService):
    """Pipecat's segmented STT (the segment between its VAD's start and stop) over Jarvis's
    stub transcriber."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            sample_rate=RATE,
            ttfs_p99_latency=0.0,  # the stub answers at once
            settings=STTSettings(model=None, language=None),
            **kwargs,
        )
        self._model = StubStt()

    @property
    def wants_wav_segments(self) -> bool:
        return False

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        async for t in self._model.infer(SttRequest(audio, self.sample_rate)):
            if t.text:
                yield TranscriptionFrame(text=t.text, user_id=self._user_id, timestamp=time_now_iso8601())


class StubLLM(FrameProcessor):
    """Answers each (non-speculative) context with Jarvis's stub LLM, word by word."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._model = StubLlm()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        if frame.speculation:
            return
        await self.push_frame(LLMFullResponseStartFrame())
        async for delta in self._model.infer(LlmRequest(list(frame.context.get_messages()))):
            await self.push_frame(LLMTextFrame(delta.text))
        await self.push_frame(LLMFullResponseEndFrame())


class StubTTS(TTSService):
    """Pipecat's TTS service base (sentence aggregation, start/stop frames) over Jarvis's stub
    tone."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            sample_rate=RATE,
            settings=TTSSettings(model=None, voice=None, language=None),
            **kwargs,
        )
        self._model = StubTts()

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        async for chunk in self._model.infer(TtsRequest(text)):
            yield TTSAudioRawFrame(
                audio=chunk.pcm, sample_rate=chunk.sample_rate, num_channels=1, context_id=context_id
            )


def build_pipeline(transport: Any, end_silence_s: float) -> Pipeline:
    vad = SileroVADAnalyzer(params=VADParams(stop_secs=end_silence_s))
    pair = LLMContextAggregatorPair(
        LLMContext(),
        user_params=LLMUserAggregatorParams(
            vad_analyzer=vad,
            user_turn_strategies=UserTurnStrategies(
                stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.0)]
            ),
        ),
    )
    return Pipeline(
        [
            transport.input(),
            StubSTT(),
            pair.user(),
            StubLLM(),
            StubTTS(),
            JarvisEvents(),
            transport.output(),
            pair.assistant(),
        ]
    )


async def run_session(websocket: Any, end_silence_s: float) -> None:
    from pipecat.workers.runner import WorkerRunner

    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_in_sample_rate=RATE,
            audio_out_enabled=True,
            audio_out_sample_rate=RATE,
            serializer=JarvisSerializer(),
            allowed_origins=[],  # loopback only; the load generator sends no Origin
        ),
    )
    worker = PipelineWorker(
        build_pipeline(transport, end_silence_s),
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        enable_rtvi=False,
        idle_timeout_secs=None,
    )

    @transport.event_handler("on_client_disconnected")
    async def _gone(_transport: Any, _ws: Any) -> None:
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pipecat_server", description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--end-silence-ms", type=float, default=288.0)
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)

    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await run_session(websocket, args.end_silence_ms / 1000)

    # as Pipecat's own runner serves it (uvicorn.run: its event loop, uvloop where installed,
    # and its SIGTERM handling, which closes the connections and so ends every pipeline)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
