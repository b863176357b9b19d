"""SIGTERM unwinds a test session as Ctrl-C does: every fixture's teardown runs before pytest exits (status 2).

`timeout 3000 python -m pytest`, a cancelled CI job and `kill PID` send SIGTERM, whose default action ends the
process at once, no teardown run. What fixtures had started in sessions of their own then ran on, orphaned: the
nats-servers (eventbus/natsserver.py starts each in its own session) and a fleet's namespaces, NATS servers and
services (two fleets ran selfplay and training for 40 minutes after such a kill). tests/fleet_harness.py also
guards a fleet against a kill that no handler sees (SIGKILL).
"""

from __future__ import annotations

import signal
import threading
import types


class SessionTerminated(KeyboardInterrupt):
    """SIGTERM reached the session: pytest handles it as an interrupt, tearing every fixture down on its way out."""


def _raise_once(signum: int, frame: types.FrameType | None) -> None:
    # timeout(1) signals the child and then its whole process group, so the session can see SIGTERM twice: the
    # second must not cut short the teardown the first began. A Python handler (not SIG_IGN) so that the children
    # the teardown starts (`ops.fleet down`) get the default action back at exec.
    signal.signal(signal.SIGTERM, _during_teardown)
    raise SessionTerminated(f"signal {signum} (SIGTERM): tearing the session's fixtures down")


def _during_teardown(signum: int, frame: types.FrameType | None) -> None:
    """A further SIGTERM while the session unwinds: the teardown under way goes on (SIGKILL still ends it)."""


def unwind_on_sigterm() -> None:
    """Turn SIGTERM into SessionTerminated in this process (from the main thread, the only one Python signals).

    Called again as each test starts: an event loop that took SIGTERM (servicekit/runtime.py run in a test's loop)
    puts back the default action when it closes, not what was there before. Not once the session is unwinding.
    """
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is not _during_teardown:
        signal.signal(signal.SIGTERM, _raise_once)
