"""Services that run inside the fleet's containers. Nothing here imports ``orchestrator``."""
