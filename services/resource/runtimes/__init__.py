"""Runtimes that start and stop model servers: Docker, local processes, simulated."""

from __future__ import annotations

from typing import Any

from services.resource.runtimes.base import Handle, HealthTimeout, Runtime, RuntimeFailure, StartFailed


class RuntimeSet:
    """The runtime for each spec kind; Docker's client is only made when first needed."""

    def __init__(self, runtimes: dict[str, Any]):
        self._by_kind = dict(runtimes)

    def for_kind(self, kind: str) -> Runtime:
        try:
            return self._by_kind[kind]
        except KeyError:
            raise StartFailed(f"no {kind!r} runtime configured in this resource service") from None

    def all(self) -> list[Runtime]:
        return list(self._by_kind.values())

    async def close(self) -> None:
        for rt in self._by_kind.values():
            await rt.close()


__all__ = ["Handle", "HealthTimeout", "Runtime", "RuntimeFailure", "RuntimeSet", "StartFailed"]
