"""CONFIG_CHANGED: the leader records every change of the rr config and the hosts file, key by key.

diff.py is the pure core (flatten, compare, rebuild the last recorded content from the log's own
changes); loop.py is the leader-only shell that reads the files and publishes.
"""
