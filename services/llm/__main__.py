"""`python -m services.llm [--stub] [--role vlm]`: run an LLM worker, a client of an
OpenAI-compatible server (vLLM, Ollama, llama.cpp). `--role vlm` serves the vision
pipeline's `jobs:vlm` with settings from `JARVIS_VLM_*` instead of `JARVIS_LLM_*`."""

from __future__ import annotations

import argparse
import os

from shared.config import Settings
from shared.worker import worker_main


def build_model(settings: Settings, args: argparse.Namespace):
    if args.stub or settings.profile == "stub":
        from services.llm.stub import StubLlm

        return StubLlm(delay_s=args.stub_delay)
    from services.llm.config import LlmSettings
    from services.llm.openai_chat import OpenAIChat

    prefix = f"JARVIS_{args.role.upper()}_"
    llm = LlmSettings(_env_prefix=prefix)  # type: ignore[call-arg]  # pydantic-settings' init option
    if args.role == "vlm" and f"{prefix}TOOLS_ENABLED" not in os.environ:
        # vLLM refuses `tools` unless started with a tool parser; VLM turns describe what they see
        llm = llm.model_copy(update={"tools_enabled": False})
    return OpenAIChat(llm)


def make_worker(*a, **kw):
    from services.llm.worker import LlmWorker

    return LlmWorker(*a, **kw)


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--stub-delay", type=float, default=0.0, help="seconds between stub tokens")
    ap.add_argument("--role", choices=["llm", "vlm"], default="llm", help="which job stream to serve")


if __name__ == "__main__":
    worker_main("llm", build_model, make_worker, concurrency=8, add_args=add_args)
