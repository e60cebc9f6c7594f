"""JARVIS_REDIS_URL: the three topologies, and clear errors for what is not one."""

import pytest

from shared.messages import in_stream, job_shard, job_streams, jobs_stream, owner_key, sid_of
from shared.redis_url import RedisTarget, parse


def test_one_instance_is_passed_through():
    assert parse("redis://127.0.0.1:6379/0") == RedisTarget("single", "redis://127.0.0.1:6379/0")
    assert parse("rediss://:pw@h:1/2").kind == "single"
    assert parse("unix:///run/redis.sock").kind == "single"


def test_sentinel_addresses_service_and_database():
    t = parse("redis+sentinel://10.0.0.1:26379,sentinel-b:26380,[::1]:26381/jarvis/3")
    assert t.kind == "sentinel"
    assert t.nodes == (("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381))
    assert (t.service, t.db, t.password) == ("jarvis", 3, None)
    t = parse("redis+sentinel://app:s%40cret@h:26379/mymaster")
    assert (t.service, t.db, t.username, t.password) == ("mymaster", 0, "app", "s@cret")


def test_cluster_seed_nodes():
    t = parse("redis+cluster://a:7000, b:7001,c:7002")
    assert t.kind == "cluster"
    assert t.nodes == (("a", 7000), ("b", 7001), ("c", 7002))
    assert parse("redis+cluster://:pw@a:7000").password == "pw"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://h:1", "must start with"),
        ("redis+sentinel://h:26379", "service_name"),
        ("redis+sentinel://h:26379/svc/zero", "must be a number"),
        ("redis+sentinel://h:26379/svc/1/x", "service_name"),
        ("redis+sentinel://h/svc", "host:port"),
        ("redis+cluster://", "names no host"),
        ("redis+cluster://a:7000/0", "database 0 only"),
        ("redis+cluster://a:7000?timeout=1", "query options"),
    ],
)
def test_what_is_not_a_topology_is_refused_clearly(url, says):
    with pytest.raises(ValueError, match=says):
        parse(url)


def test_session_keys_share_the_session_hash_tag():
    assert in_stream("abc") == "in:{abc}" and owner_key("abc") == "owner:{abc}"
    assert sid_of(in_stream("s-1_x")) == "s-1_x"


def test_a_session_keeps_one_job_shard_and_workers_read_all():
    assert job_streams("stt", 1) == [jobs_stream("stt")] == ["jobs:stt"]
    assert job_streams("tts", 3) == ["jobs:tts", "jobs:tts:1", "jobs:tts:2"]
    shards = {job_shard(f"s{i}", 4) for i in range(64)}
    assert shards == {0, 1, 2, 3}
    assert job_shard("abc", 4) == job_shard("abc", 4) and job_shard("abc", 1) == 0
