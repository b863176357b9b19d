"""The leader: one at a time (elected on the `scheduler` KV lease) decides which node runs which work.

policy.py is the pure scheduling policy, service.py the `leader` service that campaigns and
runs the leader-only loops: assignment, pipeline and populator, the distribution loop
(distribution.py: completions, rollbacks, pruning the models bucket) and the sync planner
(syncplan.py over the pure transfers.py and synctargets.py).
"""
