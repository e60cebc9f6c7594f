"""Jarvis's common library: settings, protocol, codec, Redis Streams bus, session store, model interface."""
