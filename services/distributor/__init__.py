"""Model distribution: every node installs the promoted model of each config from the object store."""
