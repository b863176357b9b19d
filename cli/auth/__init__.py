"""`rr auth gen`: the fleet's NATS accounts planned from the hosts file (accounts.py), rendered (render.py) and written (generate.py).

What a node reads back at connect time (its credentials, keys and permissions) is servicekit/auth/.
"""
