"""Model distribution's pure cores, shared by the leader's distribution loop and every node's distributor.

failures.py: which nodes fail to install what (a fold); retention.py: which old models go, on a node and in the store.
"""
