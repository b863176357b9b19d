"""`rr up`: a one-node cluster on a laptop: an embedded nats-server, the streams, and every service.

policy.py and layout.py are pure (restart backoff, child command lines, where data lives);
embedded.py starts the server, supervisor.py keeps the service processes running, and
session.py ties them together until Ctrl-C.
"""
