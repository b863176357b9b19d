"""What every service is built with: the runtime and its options, telemetry, snapshots, admission, the node's credentials."""
