"""Who is in the cluster, who leads it, and the cores the leader and the nodes share.

The lease and its terms (leadership/), hosts joining and leaving (membership/), and the pure
cores both the leader's loops and every node's agents read: model distribution's
(distribution/) and data sync's (sync/).
"""
