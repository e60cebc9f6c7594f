"""Settings of the LLM worker's OpenAI-compatible chat client (env prefix `JARVIS_LLM_`).

The same client talks to vLLM, Ollama, llama.cpp's server (the CPU profile) or any other
OpenAI-compatible endpoint: only `base_url`, `api_key` and `model` change.

The default `base_url` follows the profile (`JARVIS_PROFILE`): the CPU profile's llama.cpp
server on 8080, or on the GPU profile the vLLM server the resource service starts (the
registry publishes it on 8100, not 8000, where a vLLM of the user's own often listens).
`model` empty asks the server which model it serves, so it cannot name one it does not.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SYSTEM_PROMPT = (
    "You are Jarvis, a helpful voice assistant. Your replies are spoken aloud, so answer in "
    "one to three short, natural sentences. Use plain words only: no markdown, lists, "
    "headings, code blocks, emoji or URLs. Say numbers, times and units the way a person "
    "would say them. If you are not sure, say so briefly. When a tool can give the exact "
    "answer (arithmetic, the current time, remembering or recalling a fact about the user), "
    "use it."
)

ALL_TOOLS = ["current_time", "calculator", "remember", "recall"]

CPU_BASE_URL = "http://127.0.0.1:8080/v1"
GPU_BASE_URL = "http://127.0.0.1:8100/v1"  # the registry's vLLM (services/resource/config.py LLM_HOST_PORT)


class LlmSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JARVIS_LLM_", extra="ignore")

    profile: str = Field(default="cpu", validation_alias=AliasChoices("JARVIS_PROFILE", "profile"))
    base_url: str = ""  # "": the profile's default (CPU_BASE_URL / GPU_BASE_URL)
    api_key: SecretStr = SecretStr("sk-no-key-required")
    # The served model's name. Empty: ask the server (GET /models) and use the first one.
    model: str = ""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # last N non-system messages sent to the model: a cap above the orchestrator's window
    # (JARVIS_HISTORY_WINDOW, 20, which moves in hops for the prompt cache) plus the question
    history_messages: int = Field(default=40, ge=1)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(default=256, ge=1)
    timeout_s: float = Field(default=60.0, gt=0)  # per HTTP request (a whole streamed reply)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=1, ge=0)  # retries of a failed connection/5xx before LlmUnavailable
    # Tools
    tools_enabled: bool = True
    tools: list[str] = Field(default_factory=lambda: list(ALL_TOOLS))  # JSON list in env
    # "auto", "required", "none", or a tool name to force on the first round (small models
    # such as SmolLM2 rarely pick a tool on their own).
    tool_choice: str = "auto"
    max_tool_rounds: int = Field(default=3, ge=0)  # model calls that may return tool calls, per reply
    # Extra JSON merged into every request body (server-specific sampling knobs, e.g. {"top_k": 40}).
    extra_body: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _default_url(self) -> LlmSettings:
        if not self.base_url:
            self.base_url = GPU_BASE_URL if self.profile == "gpu" else CPU_BASE_URL
        return self

    @model_validator(mode="after")
    def _check_tools(self) -> LlmSettings:
        unknown = [t for t in self.tools if t not in ALL_TOOLS]
        if unknown:
            raise ValueError(f"unknown tools {unknown}; built-in tools are {ALL_TOOLS}")
        if self.tool_choice not in ("auto", "required", "none") and self.tool_choice not in self.tools:
            raise ValueError(
                f"tool_choice must be auto, required, none or an enabled tool name, not {self.tool_choice!r}"
            )
        return self
