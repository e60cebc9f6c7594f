"""`python -m bench` (`make bench`): overhead, density and real-model latency of the stack.

Scenarios (see docs/BENCHMARKS.md for what each figure means):
  a  stub models, one session: the framework's own overhead
  b  stub models, rising N concurrent sessions until the stack falls behind: density
  c  the CPU profile (real models), one session: voice-to-voice latency and its stages
  d  in-process baseline: the same stub turn as direct calls in one process, no Redis/sockets

Results print as tables and are written as JSON under bench-results/ (git-ignored).
"""
