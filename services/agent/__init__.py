"""The per-node agent: heartbeats carrying the node's resources, roles, jobs and health."""
