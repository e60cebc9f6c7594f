"""Every orchestrator on one Redis must read and write the same session folder.

A session's history is its session file; when an orchestrator dies, another one adopts its
sessions and reads their files. On several hosts the folder is a shared volume (NFS, CephFS, a
ReadWriteMany claim); a host that names a folder of its own would adopt sessions without their
history. This module catches that at start: the folder holds a marker file with a random id
(created once, atomically, by whichever orchestrator comes first), and Redis holds the id the
live orchestrators use (`sessions:folder`, refreshed while they run, so it is forgotten a minute
after the last one stops). An orchestrator whose folder's id differs refuses to start."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from shared.bus import Bus

log = logging.getLogger("jarvis.orchestrator.folder")

MARKER = ".jarvis-folder"
KEY = "sessions:folder"
KEEP_MS = 60_000  # the key outlives the last orchestrator by this much


class FolderMismatch(RuntimeError):
    pass


def folder_id(folder: Path) -> str:
    """The folder's id, made on first use: written to a temporary file, then linked into place,
    so orchestrators starting together on a shared folder agree on one."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    if not marker.exists():
        tmp = folder / f"{MARKER}.{secrets.token_hex(4)}.tmp"
        tmp.write_text(secrets.token_hex(8))
        try:
            os.link(tmp, marker)  # atomic, and fails if another got there first
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return marker.read_text().strip()


async def check(bus: Bus, folder: Path, fid: str) -> None:
    """Claim or confirm the deployment's session folder in Redis; raise if another is in use."""
    r = bus.redis
    if await bus.retry(lambda: r.set(KEY, fid, nx=True, px=KEEP_MS), "claim folder"):
        return
    current = await bus.retry(lambda: r.get(KEY), "folder")
    if current is None:  # expired between the two calls
        await bus.retry(lambda: r.set(KEY, fid, px=KEEP_MS), "claim folder")
        return
    current = current.decode() if isinstance(current, bytes) else current
    if current != fid:
        raise FolderMismatch(
            f"the session folder {folder} is not the one the other orchestrators on this Redis use "
            f"(its id {fid}, theirs {current}): JARVIS_SESSIONS_DIR must name one folder shared "
            "by every host (a shared volume), or a dead orchestrator's sessions lose their history"
        )
    await bus.retry(lambda: r.pexpire(KEY, KEEP_MS), "keep folder")
