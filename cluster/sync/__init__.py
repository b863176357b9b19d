"""Data sync's pure core shared by the leader's sync planner and every node's sync agent: where each batch's file is (batchfiles.py)."""
