"""How the bus splits a batch by hash slot: only on a cluster, a session's keys together, in
order (no server needed: the clients connect on first use)."""

from redis.crc import key_slot

from shared.bus import Bus
from shared.messages import epoch_key, in_stream, jobs_stream, out_stream

KEYS = [in_stream("a"), out_stream("a"), in_stream("b"), epoch_key("a"), jobs_stream("stt"), in_stream("b")]


def test_one_instance_is_never_split():
    assert Bus("redis://127.0.0.1:1/0").slot_groups(KEYS) == [list(range(len(KEYS)))]


def test_a_cluster_groups_by_slot_in_order_of_first_appearance():
    bus = Bus("redis+cluster://127.0.0.1:1,127.0.0.1:2")
    groups = bus.slot_groups(KEYS)
    assert groups[0] == [0, 1, 3]  # a session's keys share its hash tag's slot, in their order
    assert groups[1] == [2, 5]
    assert sorted(i for g in groups for i in g) == list(range(len(KEYS)))
    assert all(len({key_slot(KEYS[i].encode()) for i in g}) == 1 for g in groups)
    assert bus.one_slot([in_stream("x"), out_stream("x"), epoch_key("x")])
    assert not bus.one_slot(KEYS)


def test_a_sentinel_target_is_one_instance():
    bus = Bus("redis+sentinel://127.0.0.1:1,127.0.0.1:2/jarvis")
    assert not bus.cluster and bus.one_slot(KEYS)
