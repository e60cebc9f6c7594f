#!/usr/bin/env bash
# The GPU check: the resource service's arbitration against this machine's NVIDIA GPU (NVML,
# torch stand-in servers that really allocate CUDA memory), or on the simulated GPU where
# there is none (or with --simulated). Under 8 minutes; writes var/gpu-check/gpu-check.json
# and a table (gpu-check.md) for docs/BENCHMARKS.md. Exit status 0 when every step passed.
#
#   scripts/gpu-check.sh [--simulated] [--out DIR]
#
# Python: $PYTHON, else the project's .venv, else python3. It must import pydantic and
# pydantic-settings (torch and nvidia-ml-py come from the host); on a host
# where they do not and nothing can be downloaded, wheels brought along in $JARVIS_WHEELS
# (default scripts/wheels) are installed into a throwaway venv that also sees the system's
# packages (torch, nvidia-ml-py, onnxruntime).
set -euo pipefail
cd "$(dirname "$0")/.."

py="${PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
need='import pydantic, pydantic_settings'
if ! "$py" -c "$need" 2>/dev/null; then
    wheels="${JARVIS_WHEELS:-scripts/wheels}"
    if [ ! -d "$wheels" ]; then
        echo "gpu-check: $py cannot import the project's dependencies and there is no $wheels to install them from" >&2
        exit 2
    fi
    venv="$(mktemp -d)/venv"
    trap 'rm -rf "$(dirname "$venv")"' EXIT
    "$py" -m venv --system-site-packages "$venv"
    "$venv/bin/pip" install -q --no-index --find-links "$wheels" pydantic pydantic-settings
    py="$venv/bin/python"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
timeout 480 "$py" scripts/gpu_check.py "$@"
