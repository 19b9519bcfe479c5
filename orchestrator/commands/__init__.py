"""The commands of ``python -m orchestrator``: the parser and one entry point per command."""
