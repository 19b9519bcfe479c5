"""The Docker Swarm runtime: the stack deployed, watched and rolled out through a manager's engine."""
