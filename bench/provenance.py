"""Where a figure comes from: the commit of the tree a benchmark ran (written beside every
result, so a figure in docs/BENCHMARKS.md can name its tree)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def tree_commit() -> str:
    """The short commit of this checkout, with `+dirty` when tracked files have uncommitted
    changes; "unknown" outside a git checkout."""
    try:
        head = _git("rev-parse", "--short", "HEAD").strip()
        dirty = _git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def stamp(module: str, argv: list[str] | None) -> dict:
    """The head of a result's JSON: the tree's commit, the command that made it, and when."""
    return {
        "commit": tree_commit(),
        "command": f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_result(result: dict, path: str | Path) -> Path:
    """Write `result` as JSON at `path` (its folder made if needed) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"results in {out}")
    return out
