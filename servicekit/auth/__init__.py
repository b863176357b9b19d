"""A node's NATS identity: who may publish and subscribe to what, and each node's credentials.

permissions.py decides (pure; which role owns which event type is eventbus/authority.py's
table), keys.py makes and reads node keys, credentials.py reads a node's file for connect().
`rr auth gen`, which plans and writes them for a fleet, is cli/auth/.
"""
