"""`rr doctor`: preflight of one node, as a pass/fail list with the fix for each failure.

deps.py checks Python packages with the standard library only (it must work where they are
missing); probes.py measures (the shell) into findings.py's values, checks.py judges them
(pure), report.py prints (pure), target.py reads what to probe from options and config.
"""
