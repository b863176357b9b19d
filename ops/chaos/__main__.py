"""`python -m ops.chaos`: a seeded fault mix on a fleet, checked (see ops/chaos/cli.py)."""

import sys

from ops.chaos.cli import main

sys.exit(main())
