"""The project's kit for running things locally, shared by tests and benchmarks (bench/ never imports
tests/): miners as real processes, wallets, free ports, supervisord, fleet projects."""
