"""Node membership: which nodes are alive, decided by the leader from heartbeats and recorded in the log."""
