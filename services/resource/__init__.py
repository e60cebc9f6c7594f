"""The resource service: arbitrates GPU memory between model servers (see docs/RESOURCE.md)."""
