"""Samplers and schedules. Pure tensor functions: no progress bars, no I/O."""
