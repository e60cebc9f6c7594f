#!/usr/bin/env python3
"""Container entry point of the CPU profile's LLM server (image jarvis/cpu).

Runs exactly what `jarvis up` runs (services.llm.llamacpp.server_command: llama-cpp-python's
OpenAI-compatible server with the `jarvis-chatml-tools` chat format and the packaged
SmolLM2 GGUF), listening on all interfaces so the llm worker container can reach it.

Environment: JARVIS_LLAMA_PORT (8080), JARVIS_LLAMA_HOST (0.0.0.0), JARVIS_LLAMA_THREADS (2),
JARVIS_LLAMA_CTX (2048), JARVIS_LLAMA_MODEL (a GGUF path; default the packaged SmolLM2),
JARVIS_LLAMA_ALIAS (smollm2).
"""

from __future__ import annotations

import os

from services.llm.llamacpp import MODEL_ALIAS, server_command


def main() -> None:
    env = os.environ.get
    argv = server_command(
        int(env("JARVIS_LLAMA_PORT", "8080")),
        host=env("JARVIS_LLAMA_HOST", "0.0.0.0"),
        model_path=env("JARVIS_LLAMA_MODEL") or None,
        n_ctx=int(env("JARVIS_LLAMA_CTX", "2048")),
        n_threads=int(env("JARVIS_LLAMA_THREADS", "2")),
        model_alias=env("JARVIS_LLAMA_ALIAS", MODEL_ALIAS),
    )
    print("jarvis-llama-server:", " ".join(argv), flush=True)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
