"""Leader election for singleton roles on JetStream KV leases, with fencing epochs.

lease.py decides (pure), fencing.py fences decisions by epoch (pure), election.py performs
(the shell), settings.py is the `leadership:` config section.
"""
