"""Runtimes: where miner processes live. The same policy drives each through one small interface."""
