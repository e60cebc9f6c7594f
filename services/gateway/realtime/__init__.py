"""The OpenAI Realtime API on the gateway: `ws://HOST:PORT/v1/realtime`, a translation at the
edge between Realtime events and the Jarvis session behind it (docs/REALTIME.md).

`events` holds the typed client and server events, `resample` the 24 kHz <-> session/TTS rate
conversion, `translate` the per-connection state machine, `handler` the connection itself.
"""

PATH = "/v1/realtime"
RATE = 24000  # the Realtime API's `audio/pcm` rate, both ways
