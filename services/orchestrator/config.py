"""Turn-taking settings (env prefix `JARVIS_TURN_`)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from services.orchestrator.turns import EndpointConfig


class TurnSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JARVIS_TURN_", extra="ignore")

    threshold: float = 0.5  # Silero speech probability
    # once speaking, a window below this is silence: the threshold itself, as in Pipecat (its 0.7);
    # lower values add hysteresis, and the ~1-2 windows Silero takes to decay after the last
    # word then count as speech (about +30 ms to every end of turn)
    neg_threshold: float = 0.5
    min_speech_ms: float = 250  # shorter sounds never start a turn
    # silence that ends a turn: 9 Silero windows of 32 ms (a round 300 would wait for a 10th, 320 ms)
    end_silence_ms: float = 288
    max_turn_ms: float = 30000
    barge_in_ms: float = 400  # speech this long interrupts a reply (a cough or "mhm" does not)
    partial_interval_ms: float = 1000  # partial transcripts while speaking; 0 = off
    stage_timeout_s: float = 120  # a turn with no progress this long ends with an error
    idle_timeout_s: float = 600
    # pipeline role -> the resource service's model id (JSON in JARVIS_TURN_MODELS)
    # (the default registry's ids; add "vlm" when your registry has a VLM server)
    models: dict[str, str] = {"stt": "whisper", "llm": "llm", "tts": "chatterbox"}  # a detached session is saved and let go after this

    def endpoint(self) -> EndpointConfig:
        return EndpointConfig(
            threshold=self.threshold,
            neg_threshold=self.neg_threshold,
            min_speech_ms=self.min_speech_ms,
            end_silence_ms=self.end_silence_ms,
            max_turn_ms=self.max_turn_ms,
        )
