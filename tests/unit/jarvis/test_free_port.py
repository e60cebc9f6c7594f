"""The ports the launcher hands its listeners: free, never ones an outgoing connection can hold
(a service's Redis client took the gateway's port between the pick and the bind once), and never
one handed out just before (a CI run saw a worker find its metrics port taken)."""

from __future__ import annotations

import socket

from jarvis.redis_server import _ephemeral_range, free_port


def test_ports_are_bindable_and_outside_the_ephemeral_range() -> None:
    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert all(not low <= p <= high for p in ports)
    assert len(set(ports)) == 50  # a stack's listeners never get the same one
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))


def test_a_suite_worth_of_picks_never_repeats() -> None:
    ports = [free_port() for _ in range(1000)]  # ~80 stacks of a dozen listeners
    assert len(set(ports)) == len(ports)
