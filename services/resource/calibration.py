"""The calibration file: measured GPU footprints per model, written by `jarvis calibrate`.

Format (JSON):
    {"version": 1,
     "gpu": {"name": "NVIDIA L4", "total_mib": 22528, "driver": "550.54"},
     "models": {"whisper": {"footprint_mib": 1480, "measured_at": "2025-01-01T12:00:00Z",
                            "method": "adapter", "device": 0}}}

The resource service reads it at start; a model's footprint is its calibrated figure plus
a safety margin, else the registry's declared `footprint_mib`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

from services.resource.config import Registry


class Measurement(BaseModel):
    footprint_mib: int = Field(ge=0)
    measured_at: str = ""
    method: str = ""
    device: int = 0


class GpuRecord(BaseModel):
    name: str = ""
    total_mib: int = 0
    driver: str = ""


class Calibration(BaseModel):
    version: int = 1
    gpu: GpuRecord = Field(default_factory=GpuRecord)
    models: dict[str, Measurement] = Field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Calibration:
        """The file's content; an empty calibration when it is missing or unreadable."""
        try:
            return cls.model_validate_json(Path(path).expanduser().read_text())
        except (OSError, ValueError):
            return cls()

    def write(self, path: Path) -> None:
        """Atomically replace `path` (temp file in the same directory, then rename)."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.model_dump(), f, indent=2)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def footprints(registry: Registry, calibration: Calibration, margin_pct: float = 10.0) -> dict[str, int]:
    """Footprint in MiB per model: calibrated (+margin) where measured, else declared."""
    out: dict[str, int] = {}
    for mid, spec in registry.models.items():
        m = calibration.models.get(mid)
        if m is not None and m.footprint_mib > 0:
            out[mid] = math.ceil(m.footprint_mib * (1 + margin_pct / 100.0))
        else:
            out[mid] = spec.footprint_mib
    return out
