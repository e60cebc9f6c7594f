"""The resource service's status report: the GPUs as NVML sees them, what is resident (awake
or asleep, with what a sleeping server still holds), who holds what, the registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.resource.planner import Planner


async def planner_status(p: Planner) -> dict[str, Any]:
    now = p.clock()
    devices = sorted({p.settings.device} | {r.device for r in p.residents.values()})
    gpus = []
    for d in devices:
        try:
            info = await p.gpu.info(d)
        except Exception as exc:  # noqa: BLE001 -- reported in the status
            gpus.append({"index": d, "error": str(exc)})
            continue
        pending = sum(r.pending_mib for r in p.residents.values() if r.device == d)
        gpus.append(
            {
                "index": d,
                "name": info.name,
                "backend": getattr(p.gpu, "backend", "?"),
                "total_mib": info.total_mib,
                "used_mib": info.used_mib,
                "free_mib": info.free_mib,
                "available_mib": info.free_mib - pending - p.settings.reserve_mib,
                "reserve_mib": p.settings.reserve_mib,
                "queued": p.lock(d).waiting(),
                "sleeping_held_mib": sum(
                    r.observed_mib for r in p.residents.values() if r.device == d and r.state == "sleeping"
                ),
            }
        )
    residents = []
    for r in p.residents.values():
        spec = p.registry.models.get(r.model)
        ka = p.keep_alive(r.model) if spec else -1
        held_by = p.holds.holders_of(r.model)
        expires = None
        if spec and not spec.sticky and ka >= 0 and not held_by and r.state in ("ready", "sleeping"):
            expires = round(max(0.0, r.idle_since + ka - now), 1)
        residents.append(
            {
                "model": r.model,
                "device": r.device,
                "state": r.state,
                "footprint_mib": r.footprint_mib,
                "observed_mib": r.observed_mib,
                "sticky": bool(spec and spec.sticky),
                "sleeping": r.state == "sleeping",
                "held_mib": r.observed_mib if r.state == "sleeping" else 0,
                "group": p.registry.group_of(r.model) if spec else r.model,
                "held_by": held_by,
                "idle_s": round(now - r.idle_since, 1) if not held_by else 0.0,
                "expires_in_s": expires,
                "runtime": r.handle.kind if r.handle else "",
                "ref": r.handle.ref if r.handle else "",
                "started_at": r.started_at,
            }
        )
    holders = [
        {"holder": h.holder, "models": sorted(h.models), "expires_in_s": round(h.expires_at - now, 1)}
        for h in p.holds.all()
    ]
    return {
        "gpus": gpus,
        "residents": residents,
        "holders": holders,
        "models": {
            m: {
                "footprint_mib": p.footprints[m],
                "sticky": s.sticky,
                "group": p.registry.group_of(m),
                "runtime": s.runtime.kind,
                "can_sleep": s.sleep is not None,
            }
            for m, s in p.registry.models.items()
        },
    }
