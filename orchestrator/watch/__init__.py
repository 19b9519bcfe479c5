"""The watch: the loop that probes every unit and acts on the policy, its state file, and its process."""
