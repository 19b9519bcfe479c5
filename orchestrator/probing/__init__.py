"""Probing miners and model servers: the stream probe, its targets, capacity and load runs (no command)."""
