"""The ports the launcher hands its listeners: free, and never ones an outgoing connection can
hold (a service's Redis client took the gateway's port between the pick and the bind once)."""

from __future__ import annotations

import socket

from jarvis.redis_server import _ephemeral_range, free_port


def test_ports_are_bindable_and_outside_the_ephemeral_range() -> None:
    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert all(not low <= p <= high for p in ports)
    assert len(set(ports)) > 40  # picked at random: two services rarely get the same one
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))
