"""Jarvis's user-facing tools: the `jarvis` command (launcher, talk client, model admin)."""
