"""`rr whatif`: counterfactual scheduler replay (after Borg's Fauxmaster).

recording.py folds a recorded window of the log into the scheduler's inputs; simulate.py
re-runs the pure scheduling core (services/leader/policy.py) on them in simulated time;
report.py measures a run (recorded or simulated) the same way for a side-by-side report.
"""
