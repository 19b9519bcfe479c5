"""The streaming miner service: one Bittensor axon answering streaming synapses from one backend."""
