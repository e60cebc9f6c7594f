"""The pure planning decision (`policy.make_plan`) on hand-made snapshots."""

from __future__ import annotations

import pytest

from services.resource.policy import (
    Conflict,
    DeviceView,
    GroupView,
    ResidentView,
    UnknownModel,
    WontFit,
    make_plan,
)

FP = {"a": 3000, "b": 3000, "c": 2000, "d": 1000, "big": 9000}
GROUPS = {"a": "g1", "b": "g2", "c": "g2", "d": "g3", "big": "g4"}


def res(model: str, last_used: float = 0.0, **kw) -> ResidentView:
    return ResidentView(model, FP[model], kw.pop("pending_mib", 0), GROUPS[model], last_used=last_used, **kw)


def plan(free: int, residents, request, total: int = 10000, reserve: int = 0, groups=None):
    return make_plan(DeviceView(0, total, free, reserve), residents, request, FP, GROUPS, groups or {})


def test_fits_without_eviction():
    p = plan(10000, [], ["a", "c"])
    assert p.to_start == ["a", "c"] and p.to_evict == [] and p.need_mib == 5000


def test_already_resident_is_a_no_op():
    p = plan(7000, [res("a")], ["a"])
    assert p.done and p.resident == ["a"]


def test_evicts_least_recently_used_of_other_groups_first():
    # free 1000; need c (2000, group g2). b is g2 too (own group): evicted last.
    residents = [res("a", last_used=5), res("b", last_used=1), res("d", last_used=9)]
    p = plan(3000 - 2000, residents, ["c"])  # free 1000
    assert p.to_evict == ["a"]  # other group, though b is older


def test_spares_victims_it_does_not_need():
    # LRU order is d (1000) then a (3000); a alone suffices, so d is spared.
    residents = [res("d", last_used=1), res("a", last_used=2)]
    p = plan(0, residents, ["b"])
    assert p.to_evict == ["a"]


def test_cheapest_reload_breaks_ties():
    residents = [res("a", last_used=1, reload_cost_s=60), res("d", last_used=1, reload_cost_s=1)]
    p = plan(1000, residents, ["c"])  # need 2000 with 1000 free: one victim, the cheaper
    assert p.to_evict == ["d"]


def test_expired_keep_alive_goes_first():
    residents = [res("a", last_used=1), res("d", last_used=5, expired=True)]
    p = plan(1000, residents, ["c"])
    assert p.to_evict == ["d"]


def test_never_evicts_held_or_sticky():
    residents = [res("a", held=True), res("b", sticky=True)]
    p = plan(1000, residents, ["c"])  # needs 1000 more: only a (held) could give it
    assert p.blocked_by == ["a"] and p.to_evict == []
    with pytest.raises(WontFit) as ei:
        plan(4000, residents, ["big"])  # 4000 free + 3000 from a: 7000 < 9000; b is sticky
    assert ei.value.max_free_mib == 7000


def test_blocked_when_only_held_models_stand_in_the_way():
    residents = [res("a", held=True)]
    p = plan(1000, residents, ["b"], total=4000)
    assert p.blocked and p.blocked_by == ["a"] and p.to_evict == []


def test_wont_fit_names_the_shortfall():
    residents = [res("a", sticky=True)]
    with pytest.raises(WontFit) as ei:
        plan(7000 - 500, residents, ["big"], total=10000, reserve=0)
    e = ei.value
    assert e.need_mib == 9000 and e.max_free_mib == 6500 and e.shortfall_mib == 2500
    assert "9000 MiB" in str(e) and "short by 2500 MiB" in str(e) and "a 3000 MiB" in str(e)


def test_wont_fit_counts_foreign_usage_and_reserve():
    with pytest.raises(WontFit) as ei:
        plan(9500, [], ["big"], total=10000, reserve=600)  # 500 used by someone else
    assert ei.value.max_free_mib == 8900 and ei.value.shortfall_mib == 100


def test_pending_memory_is_not_free():
    # a is resident but has taken only 1000 of its 3000 MiB so far
    residents = [res("a", held=True, pending_mib=2000)]
    p = plan(9000, residents, ["big"], total=10000)
    assert p.blocked_by == ["a"]


def test_unknown_model():
    with pytest.raises(UnknownModel):
        plan(10000, [], ["nope"])


def test_swap_group_forces_out_its_other_member():
    groups = {"g2": GroupView(swap=True)}
    p = plan(10000, [res("b")], ["c"], groups=groups)
    assert p.to_evict == ["b"] and p.to_start == ["c"]
    with pytest.raises(Conflict):
        plan(10000, [], ["b", "c"], groups=groups)
    p = plan(10000, [res("b", held=True)], ["c"], groups=groups)
    assert p.blocked_by == ["b"]


def test_exclusive_group_clears_other_groups():
    groups = {"g4": GroupView(exclusive=True)}
    p = plan(10000 - 1000, [res("d")], ["big"], total=20000, groups=groups)
    assert p.to_evict == ["d"]
    # held ones stay (and are not waited for when memory allows)
    p = plan(10000, [res("d", held=True)], ["big"], total=20000, groups=groups)
    assert p.to_evict == [] and not p.blocked


def test_persistent_group_is_not_evicted_by_another_group():
    groups = {"g1": GroupView(persistent=True)}
    with pytest.raises(WontFit):
        plan(7000, [res("a")], ["big"], groups=groups)
    # but a member of its own group may push it out
    fp = dict(FP, e=8000)
    gr = dict(GROUPS, e="g1")
    p = make_plan(DeviceView(0, 10000, 7000), [res("a")], ["e"], fp, gr, groups)
    assert p.to_evict == ["a"]
