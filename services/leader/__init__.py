"""The scheduler: one leader at a time (elected on a KV lease) decides which node runs which work.

policy.py is the pure scheduling policy, settings.py its config section, service.py the
`scheduler` service that campaigns and runs the leader-only loops.
"""
