"""The sections of the rr config, one module per top-level key (`scheduler:` is `sections/scheduler.py`).

They live here, below the services that read them, so that `config/settings.py` composes them
without importing upward; a service imports its section from here.
"""
