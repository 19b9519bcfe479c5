"""The docker compose runtime: the engine API for the watch, ``docker compose`` for rollouts."""
