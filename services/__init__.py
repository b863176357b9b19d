"""The runnable services, one package each (`rr-service <name>`): leader, agent, worker, distributor, sync, api.

What they share is below them (servicekit/, cluster/, workload/); a service reaches another through events, and
tests/test_layers.py lists the few imports between services that remain, each with why.
"""
