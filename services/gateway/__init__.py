"""The WebSocket gateway: clients in, Redis Streams behind."""
