"""The built-in reference workload: a small real board game, a torch policy/value net, selfplay, training, evaluation.

Each step is a command-line program (`python -m workload.<step>`) that the worker runs
from a command template, exactly as it would run the lab's own scripts.
"""
