"""/healthz reports whether the gateway can serve: it answers 503 while Redis is down."""

import urllib.error
import urllib.request

from tests.support.stack import running_stack


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_health_follows_redis(tmp_path):
    with running_stack(tmp_path, profile="stub") as stack:
        url = f"http://{stack.host}:{stack.port}/healthz"
        assert _status(url) == 200
        stack.redis.stop()
        assert _status(url) == 503
