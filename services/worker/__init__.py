"""The worker: runs the jobs assigned to this node as process groups and reports their lives as events."""
