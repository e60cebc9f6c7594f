"""The pure planning decision: what to start, what to evict, or why it cannot fit.

No I/O here: `make_plan` takes a snapshot of one device (NVML's free memory, what is
resident, who holds what) and a request, and returns a `Plan`, or raises `WontFit` when
the request can never fit under the policy. The planner executes plans and re-plans after
every step with fresh NVML numbers.

Memory model. NVML's `free` already counts every process on the device, ours and others'.
What it cannot know is memory our servers have not taken *yet* (a server still growing
after it reported healthy, e.g. a KV cache allocated on first use), so each resident model
carries `pending_mib = footprint - observed` (observed = NVML's used-after minus used-before
its start), and
    available = NVML free - sum(pending) - reserve.
A request fits when the footprints of the models it must start are <= available.

Sleep. A model whose server can sleep (vLLM's sleep mode) is put to sleep instead of being
stopped when host RAM allows: it frees its footprint less what a sleeping server still holds
(`sleep_held_mib`, an estimate until NVML measured it; never zero), and a later request wakes
it (need: footprint - held) in about a second instead of a cold start. A sleeping resident is
seen with `footprint_mib` = what it holds now and `sleeping` = True; it can be stopped to free
that too. The greedy pass below sleeps where it can; if that is not enough it stops sleepers,
then turns planned sleeps into stops, before it gives up.

Eviction order (after Ollama's scheduler and llama-swap's groups):
 1. forced evictions: other members of a requested model's `swap` group; for a requested
    model of an `exclusive` group, every idle evictable model of other groups;
 2. if still short: idle candidates, never sticky, never held by an active holder, never a
    requested model, never a `persistent` group's member for another group's request;
    sorted by (other groups before the requesters' own groups, keep-alive already expired
    first, least recently used, cheapest to reload); taken greedily until the request
    fits, then any victim the request can do without is spared again;
 3. still short but it would fit once holders release their models: the plan is
    `blocked` (the planner waits for a release, bounded);
 4. short even if every holder released: `WontFit`, naming need vs what can ever be free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


class PlanError(Exception):
    """A request the planner refuses."""


class UnknownModel(PlanError):
    pass


class WontFit(PlanError):
    """The request can never fit on the device, whatever is evicted."""

    def __init__(
        self, models: Sequence[str], need_mib: int, max_free_mib: int, device: int, detail: str = ""
    ):
        self.models = list(models)
        self.need_mib = need_mib
        self.max_free_mib = max_free_mib
        self.shortfall_mib = max(0, need_mib - max_free_mib)
        self.device = device
        self.detail = detail
        msg = (
            f"{', '.join(self.models)} need {need_mib} MiB on GPU {device} but at most {max_free_mib} MiB "
            f"can ever be free there (short by {self.shortfall_mib} MiB)"
        )
        super().__init__(f"{msg}: {detail}" if detail else msg)


class Conflict(PlanError):
    """The request contradicts the registry (two members of one swap group, ...)."""


@dataclass(frozen=True, slots=True)
class ResidentView:
    model: str
    footprint_mib: int
    pending_mib: int  # memory it may still take (footprint - observed, >= 0)
    group: str
    sticky: bool = False
    held: bool = False  # pinned by an active holder
    last_used: float = 0.0
    reload_cost_s: float = 10.0
    expired: bool = False  # its keep-alive has run out
    busy: bool = False  # starting or stopping right now: not a candidate
    sleeping: bool = False  # asleep: footprint_mib is what it still holds
    wake_mib: int = 0  # sleeping: what a wake takes back (its awake footprint - what it holds)
    can_sleep: bool = False  # awake and able to sleep
    sleep_held_mib: int = 0  # what it would still hold asleep (estimate or measured)
    sleep_host_mib: int = 0  # host RAM its level-1 sleep takes


@dataclass(frozen=True, slots=True)
class GroupView:
    swap: bool = False
    exclusive: bool = False
    persistent: bool = False


@dataclass(frozen=True, slots=True)
class DeviceView:
    index: int
    total_mib: int
    free_mib: int  # NVML
    reserve_mib: int = 0
    host_budget_mib: int = 0  # host RAM that level-1 sleeps may still take (after the host reserve)


@dataclass(slots=True)
class Plan:
    device: int
    resident: list[str]  # requested and already resident (awake)
    to_start: list[str]  # in request order: requested models to start, or to wake when asleep
    to_evict: list[str] = field(default_factory=list)  # to stop
    to_sleep: list[str] = field(default_factory=list)  # to put to sleep (idle, able to)
    to_wake: list[str] = field(default_factory=list)  # the members of to_start that are asleep
    need_mib: int = 0
    available_mib: int = 0  # before evictions
    evict_mib: int = 0  # expected to be freed by to_evict
    # held (or busy) models that must be released first; a blocked plan evicts nothing
    blocked_by: list[str] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return bool(self.blocked_by)

    @property
    def done(self) -> bool:
        return not self.to_start and not self.to_evict and not self.to_sleep and not self.blocked_by


def _order_key(r: ResidentView, own_groups: set[str]) -> tuple:
    return (r.group in own_groups, not r.expired, r.last_used, r.reload_cost_s, r.model)


def make_plan(
    device: DeviceView,
    residents: Sequence[ResidentView],
    request: Sequence[str],
    footprints: dict[str, int],
    groups_of: dict[str, str],
    group_specs: dict[str, GroupView],
) -> Plan:
    """Plan `request` (model ids on `device`, in order) against the snapshot."""
    req = list(dict.fromkeys(request))
    for m in req:
        if m not in footprints or m not in groups_of:
            raise UnknownModel(f"unknown model {m!r}")
    by_model = {r.model: r for r in residents}
    req_set = set(req)
    resident_req = [m for m in req if m in by_model and not by_model[m].sleeping]
    to_start = [m for m in req if m not in by_model or by_model[m].sleeping]
    to_wake = [m for m in to_start if m in by_model]
    need = sum(by_model[m].wake_mib if m in by_model else footprints[m] for m in to_start)
    pending = sum(r.pending_mib for r in residents)
    available = device.free_mib - pending - device.reserve_mib
    plan = Plan(device.index, resident_req, to_start, need_mib=need, available_mib=available, to_wake=to_wake)
    if not to_start:
        return plan

    own_groups = {groups_of[m] for m in req}

    def gspec(g: str) -> GroupView:
        return group_specs.get(g, GroupView())

    # Two members of one swap group can never be resident together.
    for g in own_groups:
        if gspec(g).swap:
            members = [m for m in req if groups_of[m] == g]
            if len(members) > 1:
                raise Conflict(
                    f"{', '.join(members)} are in swap group {g!r}: only one may be resident at a time"
                )

    def protected(r: ResidentView) -> bool:
        """Never evictable by this request."""
        return r.sticky or (gspec(r.group).persistent and r.group not in own_groups)

    others = [r for r in residents if r.model not in req_set]

    # 1. forced evictions
    forced: list[ResidentView] = []
    forced_blocked: list[str] = []
    start_groups = {groups_of[m] for m in to_start}
    for r in others:
        if r.sleeping:
            continue  # asleep already: memory decides (below), not the group's rules
        swap_out = r.group in start_groups and gspec(r.group).swap
        exclusive_out = any(gspec(g).exclusive for g in start_groups) and r.group not in own_groups
        if swap_out:
            if r.sticky:
                raise Conflict(
                    f"{r.model} is sticky and in swap group {r.group!r} with {', '.join(to_start)}"
                )
            if r.held or r.busy:
                forced_blocked.append(r.model)
            else:
                forced.append(r)
        elif exclusive_out and not protected(r) and not r.held and not r.busy:
            forced.append(r)

    # What can ever be free: everything but protected models (and foreign usage).
    never = [r for r in others if protected(r)]
    max_free = (
        device.free_mib
        + sum(r.footprint_mib - r.pending_mib for r in others if not protected(r))
        - sum(r.pending_mib for r in residents if r.model in req_set or protected(r))
        - device.reserve_mib
    )
    if need > max_free:
        parts = [f"total {device.total_mib} MiB", f"reserve {device.reserve_mib} MiB"]
        ours = sum(r.footprint_mib - r.pending_mib for r in residents)
        foreign = max(0, device.total_mib - device.free_mib - ours)
        parts.append(f"other processes ~{foreign} MiB")
        if never:
            parts.append("not evictable: " + ", ".join(f"{r.model} {r.footprint_mib} MiB" for r in never))
        if resident_req:
            parts.append("already resident and requested: " + ", ".join(resident_req))
        raise WontFit(to_start, need, max(0, max_free), device.index, "; ".join(parts))

    if forced_blocked:
        plan.blocked_by = forced_blocked  # evict nothing until the holders let go
        return plan

    # 2. idle candidates until it fits: sleep where it can, else stop
    actions = _Actions(device.host_budget_mib)
    for r in forced:
        actions.take(r)
    if available + actions.freed < need:
        cands = sorted(
            (r for r in others if r not in forced and not protected(r) and not r.held and not r.busy),
            key=lambda r: (r.sleeping, *_order_key(r, own_groups)),
        )
        chosen: list[ResidentView] = []
        for r in cands:
            if available + actions.freed >= need:
                break
            chosen.append(r)
            actions.take(r)
        # not enough: turn planned sleeps into stops (what they would still hold is freed too)
        for r in list(actions.sleeps):
            if available + actions.freed >= need:
                break
            actions.stop_instead(r)
        if available + actions.freed >= need:
            # spare any victim the request can do without (latest-chosen first)
            for r in reversed(chosen):
                if available + actions.freed - actions.frees(r) >= need:
                    actions.drop(r)
        else:
            # 3. it would fit once holders let go
            held = sorted(
                (r for r in others if r not in forced and not protected(r) and (r.held or r.busy)),
                key=lambda r: _order_key(r, own_groups),
            )
            plan.blocked_by = [r.model for r in held]
            return plan

    plan.to_evict = [r.model for r in actions.stops]
    plan.to_sleep = [r.model for r in actions.sleeps]
    plan.evict_mib = actions.freed
    return plan


class _Actions:
    """Chosen victims: each is slept (when it can and host RAM allows) or stopped."""

    def __init__(self, host_budget_mib: int):
        self.host_left = host_budget_mib
        self.stops: list[ResidentView] = []
        self.sleeps: list[ResidentView] = []

    def frees(self, r: ResidentView) -> int:
        if r in self.sleeps:
            return max(0, r.footprint_mib - r.sleep_held_mib)
        return r.footprint_mib

    @property
    def freed(self) -> int:
        return sum(self.frees(r) for r in self.stops + self.sleeps)

    def take(self, r: ResidentView) -> None:
        if r.can_sleep and not r.sleeping and r.sleep_host_mib <= self.host_left:
            self.sleeps.append(r)
            self.host_left -= r.sleep_host_mib
        else:
            self.stops.append(r)

    def stop_instead(self, r: ResidentView) -> None:
        self.sleeps.remove(r)
        self.host_left += r.sleep_host_mib
        self.stops.append(r)

    def drop(self, r: ResidentView) -> None:
        if r in self.sleeps:
            self.sleeps.remove(r)
            self.host_left += r.sleep_host_mib
        else:
            self.stops.remove(r)
