"""`python -m tests.support.host_share '{Stack keyword arguments as JSON}'`: one host's share of
a stack, started and supervised the way `jarvis up` does it, for tests that run it inside a host
of their own (a network namespace). Prints `ready` once up; SIGTERM stops it and everything it
started."""

from __future__ import annotations

import json
import signal
import sys

from jarvis.launcher import Stack


def main(argv: list[str]) -> int:
    stack = Stack(**json.loads(argv[0]))

    def on_signal(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start(timeout=120)
        print("ready", flush=True)
        stack.supervise()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
