"""NATS users and permissions for a fleet: who may publish and subscribe to what, and each node's credentials.

permissions.py and accounts.py decide (pure; which role owns which event type is
eventbus/authority.py's table), render.py writes the text (pure), keys.py makes node keys,
generate.py writes the files (`rr auth gen`), credentials.py reads a node's file for connect().
"""
