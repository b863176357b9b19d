"""`python -m ops.fleet up|status|cut|split|heal|down`."""

import sys

from ops.fleet.cli import main

sys.exit(main())
