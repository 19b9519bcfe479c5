"""Getting a host ready for a fleet: the wallets and keys, the bundled model file."""
