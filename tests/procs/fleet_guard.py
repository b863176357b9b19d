"""Takes a test's fleet down once the test process ends, however it ends (SIGKILL included).

Usage: python -m tests.procs.fleet_guard ROOT RUN_ID, its stdin a pipe whose other end only the test process holds
(tests/fleet_harness.py `fleet_guarded`). The kernel closes that end when the process exits or is killed, a read
here then returns EOF, and the guard runs `python -m ops.fleet --root ROOT down --run-id RUN_ID`.

Not PR_SET_PDEATHSIG on the fleet's processes: it would survive to them (`ip netns exec`, `unshare` and `sh` each
exec the next without forking, so the pid `spawn` records is the program's own), but their parent is `up`, which
returns once the fleet is ready while they must run on; and the namespaces, veths and bridge outlive every process
anyway (`ip netns add` pins a namespace with a mount under /run/netns): only `down` removes them.
"""

from __future__ import annotations

import subprocess
import sys


def main() -> int:
    """Wait for EOF on stdin, then take fleet RUN_ID under ROOT down; `down`'s exit status."""
    root, run_id = sys.argv[1], sys.argv[2]
    sys.stdin.buffer.read()
    return subprocess.run([sys.executable, "-m", "ops.fleet", "--root", root, "down", "--run-id", run_id], timeout=300).returncode


if __name__ == "__main__":
    sys.exit(main())
