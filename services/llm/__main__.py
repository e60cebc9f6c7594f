"""`python -m services.llm [--stub] [--role vlm]`: run an LLM worker, a client of an
OpenAI-compatible server (vLLM, Ollama, llama.cpp). `--role vlm` serves the vision
pipeline's `jobs:vlm` with settings from `JARVIS_VLM_*` instead of `JARVIS_LLM_*`."""

from __future__ import annotations

import argparse
import asyncio
import os

from shared.bus import Bus
from shared.config import Settings
from shared.service import run


def build_model(settings: Settings, stub: bool, stub_delay: float, role: str):
    if stub or settings.profile == "stub":
        from services.llm.stub import StubLlm

        return StubLlm(delay_s=stub_delay)
    from services.llm.config import LlmSettings
    from services.llm.openai_chat import OpenAIChat

    prefix = f"JARVIS_{role.upper()}_"
    settings = LlmSettings(_env_prefix=prefix)
    if role == "vlm" and f"{prefix}TOOLS_ENABLED" not in os.environ:
        # vLLM refuses `tools` unless started with a tool parser; VLM turns describe what they see
        settings = settings.model_copy(update={"tools_enabled": False})
    return OpenAIChat(settings)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m services.llm")
    ap.add_argument("--stub", action="store_true", help="stub model (plumbing runs)")
    ap.add_argument("--stub-delay", type=float, default=0.0, help="seconds between stub tokens")
    ap.add_argument("--role", choices=["llm", "vlm"], default="llm", help="which job stream to serve")
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()

    async def serve(settings: Settings, stop: asyncio.Event) -> None:
        from services.llm.worker import LlmWorker

        bus = Bus.from_settings(settings)
        model = build_model(settings, args.stub, args.stub_delay, args.role)
        await LlmWorker(settings, bus, model, args.concurrency, kind=args.role).run(stop)
        await bus.close()

    run(args.role, serve)


if __name__ == "__main__":
    main()
