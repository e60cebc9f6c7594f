"""Turn-taking settings (env prefix `JARVIS_TURN_`): the one home of every end-of-turn knob
(`EndpointSettings`, which the detector, the session runner, the bench replay and the tests
all read) and of the orchestrator's other per-turn limits (`TurnSettings`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Mode = Literal["silence", "smart_turn", "transcript", "smart_turn_unless_cue", "cue_else_smart_turn"]


class EndOfTurnConfig(BaseModel):
    """The adaptive end of turn's knobs (durations in ms of stream time).

    ``end_silence_ms`` of the endpoint config still applies in ``mode="silence"``; the other
    modes replace it with ``ceiling_ms``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # chosen by `python -m bench --scenario eot` (docs/BENCHMARKS.md, "End of turn");
    # JARVIS_TURN_END_OF_TURN__MODE=silence (and __CANDIDATE_MS, __CEILING_MS, ...) to change
    mode: Mode = "transcript"
    candidate_ms: float = Field(default=224, ge=0)  # silence at which a pause is scored (7 windows)
    ceiling_ms: float = Field(
        default=1504, gt=0
    )  # an unfinished thought waits this long at most (47 windows)
    complete_threshold: float = Field(default=0.5, ge=0, le=1)  # Smart Turn: p >= this is "complete"

    @model_validator(mode="after")
    def _candidate_before_ceiling(self) -> EndOfTurnConfig:
        if self.mode != "silence" and self.candidate_ms >= self.ceiling_ms:
            raise ValueError("candidate_ms must be below ceiling_ms")
        return self

    @property
    def wants_audio(self) -> bool:
        return self.mode in ("smart_turn", "smart_turn_unless_cue", "cue_else_smart_turn")

    @property
    def wants_text(self) -> bool:
        return self.mode in ("transcript", "smart_turn_unless_cue", "cue_else_smart_turn")


class EndpointSettings(BaseSettings):
    """When speech starts, when a turn ends, and what audio a turn keeps around its speech.
    Probabilities in [0, 1], durations in ms."""

    model_config = SettingsConfigDict(
        env_prefix="JARVIS_TURN_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    threshold: float = 0.5  # Silero speech probability at or above which a window is speech
    # once speaking, a window below this is silence: the threshold itself, as in Pipecat (its 0.7);
    # lower values add hysteresis, and the ~1-2 windows Silero takes to decay after the last
    # word then count as speech (about +30 ms to every end of turn; 0.35 suits microphones
    # whose soft word endings get cut)
    neg_threshold: float = 0.5
    min_speech_ms: float = 250  # shorter sounds never start a turn
    # silence that ends a turn: 9 Silero windows of 32 ms (a round 300 would wait for a 10th, 320 ms)
    end_silence_ms: float = 288
    max_turn_ms: float = 30000  # a turn is cut once its speech span reaches this
    pre_roll_ms: float = 200  # audio kept before the detected start of speech
    post_roll_ms: float = 100  # audio kept after the last speech window
    # speech this long over a reply the user has heard cuts it at once (any sound pauses it at
    # its onset); a shorter one is transcribed first: words ("stop") cut the reply, a cough or a
    # backchannel ("mhm", which runs to ~600 ms) lets it resume
    barge_in_ms: float = 800
    # speech that starts before the user has heard this much of the reply continues their turn:
    # the reply is cancelled and the whole utterance is transcribed and answered once
    continuation_grace_ms: float = 300
    window_ms: float = 32  # one VAD window (512 samples at 16 kHz); set by the VAD, not by users
    # how long a pause must be: adaptive (a finished thought ends at a short pause, an unfinished
    # one waits up to a ceiling; `end_silence_ms` is then the ceiling's fallback only in "silence")
    end_of_turn: EndOfTurnConfig = Field(default_factory=lambda: EndOfTurnConfig())

    @model_validator(mode="after")
    def _check(self) -> EndpointSettings:
        if not 0.0 <= self.neg_threshold <= self.threshold <= 1.0:
            raise ValueError("need 0 <= neg_threshold <= threshold <= 1")
        if self.window_ms <= 0:
            raise ValueError("window_ms must be positive")
        if min(self.min_speech_ms, self.end_silence_ms, self.pre_roll_ms, self.post_roll_ms) < 0:
            raise ValueError("durations must be >= 0")
        if self.max_turn_ms < max(self.min_speech_ms, self.window_ms):
            raise ValueError("max_turn_ms must be at least min_speech_ms and one window")
        return self


class TurnSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JARVIS_TURN_", env_nested_delimiter="__", extra="ignore")

    endpoint: EndpointSettings = Field(default_factory=EndpointSettings)
    partial_interval_ms: float = 1000  # partial transcripts while speaking; 0 = off
    stage_timeout_s: float = 120  # a turn with no progress this long ends with an error
    idle_timeout_s: float = 600  # a detached session is saved and let go after this
    # start the LLM on a pause transcript before the turn has ended, holding its tokens and audio
    # until the end is confirmed (released at once) or the user goes on (discarded): None is the
    # profile's default (`preemptive_for`), chosen by bench c (docs/BENCHMARKS.md, "Preemptive reply")
    preemptive: bool | None = None
    # pipeline role -> the resource service's model id (JSON in JARVIS_TURN_MODELS)
    # (the default registry's ids; add "vlm" when your registry has a VLM server)
    models: dict[str, str] = {"stt": "whisper", "llm": "llm", "tts": "chatterbox"}

    def preemptive_for(self, profile: str) -> bool:
        """Whether replies start preemptively under `profile` (the setting, else its default)."""
        if self.preemptive is not None:
            return self.preemptive
        return profile in PREEMPTIVE_PROFILES


# the profiles whose replies start preemptively by default (docs/BENCHMARKS.md, "Preemptive reply"):
# cpu, measured by bench c; not gpu until measured there (its fast STT brings pause transcripts
# back inside most mid-thought pauses, so more preemptive replies would be wasted)
PREEMPTIVE_PROFILES = frozenset({"cpu"})
