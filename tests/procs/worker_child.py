"""A job for the worker tests that misbehaves on request.

python -m tests.procs.worker_child --pids FILE [--children N] [--ignore-term] [--term-marker FILE]
                                   [--sleep S] [--progress N] [--progress-every S] [--hang] [--fail CODE] [--stderr-bytes N]

Writes its pid and its children's pids (one per line) to --pids, prints `--progress` protocol
lines every --progress-every seconds (forever with -1), then hangs (--hang), exits with --fail
after --stderr-bytes of stderr, or exits 0. With --ignore-term it and its children ignore SIGTERM;
with --term-marker a SIGTERM is written down in that file before the child exits 143.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def spawn_children(count: int, ignore_term: bool) -> list[int]:
    """Grandchildren of the worker: plain sleepers in the same process group."""
    code = "import signal, time\n" + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "") + "time.sleep(600)\n"
    return [subprocess.Popen([sys.executable, "-c", code]).pid for _ in range(count)]


def main() -> None:
    """Behave as asked."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--pids", required=True)
    ap.add_argument("--children", type=int, default=0)
    ap.add_argument("--ignore-term", action="store_true")
    ap.add_argument("--term-marker")
    ap.add_argument("--progress", type=int, default=0, help="progress lines to print; -1: forever")
    ap.add_argument("--progress-every", type=float, default=0.05)
    ap.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep (silently) before the progress lines")
    ap.add_argument("--hang", action="store_true")
    ap.add_argument("--fail", type=int, default=None)
    ap.add_argument("--stderr-bytes", type=int, default=0)
    args = ap.parse_args()
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif args.term_marker:
        def on_term(signum: int, frame: object) -> None:
            Path(args.term_marker).write_text("SIGTERM\n")
            os._exit(143)

        signal.signal(signal.SIGTERM, on_term)
    pids = [os.getpid(), *spawn_children(args.children, args.ignore_term)]
    tmp = Path(args.pids + ".tmp")
    tmp.write_text("".join(f"{p}\n" for p in pids))
    tmp.replace(args.pids)  # whole or absent: a test polls for it
    time.sleep(args.sleep)
    sent = 0
    while sent < args.progress or args.progress < 0:
        sent += 1
        print(json.dumps({"progress": round(min(sent / max(args.progress, 1000), 1.0), 4), "message": f"step {sent}"}), flush=True)
        time.sleep(args.progress_every)
    if args.fail is not None:
        sys.stderr.write("x" * max(0, args.stderr_bytes - 9) + "\nboom end")
        sys.stderr.flush()
        raise SystemExit(args.fail)
    if args.hang:
        while True:
            time.sleep(600)


if __name__ == "__main__":
    main()
