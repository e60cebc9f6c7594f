"""Where a figure comes from: the commit of the tree a benchmark ran (written beside every
result, so a figure in docs/BENCHMARKS.md can name its tree)."""

from __future__ import annotations

import subprocess
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
