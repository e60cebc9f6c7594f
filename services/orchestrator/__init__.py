"""Orchestrator service: owns sessions, VAD, turn detection and the per-turn pipeline."""
