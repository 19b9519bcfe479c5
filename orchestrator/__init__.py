"""The fleet orchestrator: fleet file, render, stream probe, restart policy, runtimes, status API, CLI."""
