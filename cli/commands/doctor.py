"""`rr doctor [--json]`: is this node ready to run rr? Each check passes or fails with its fix; exit 0 when all required pass.

Only the standard library is imported until the dependency check has passed, so that the
command still explains a node where msgspec, PyYAML or nats-py are missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from cli.doctor.deps import REQUIRED, WORKLOAD, PackageStatus, missing_message, package_present, package_status
from cli.nouns import summary


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr doctor`."""
    parser = subparsers.add_parser(
        "doctor", help=summary("doctor"),
        description="Exit 0 when every required check passes; each failure prints its fix.")
    parser.add_argument("--json", action="store_true", help="one JSON object: {ok, node, nats_url, checks: [...]}")
    parser.add_argument("--deps-only", action="store_true",
                        help="only the Python version, the required and the workload packages (fast, no network: for ExecStartPre)")
    parser.add_argument("--creds", default=None, metavar="PATH", help="credentials file (default: $RR_NATS_CREDS)")
    parser.add_argument("--monitor", default=None, metavar="URL",
                        help="the server's monitoring URL (default http://<first NATS host>:8222; '' to skip)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the data dir to check, as `rr up` resolves it (env RR_DATA_DIR; default $XDG_DATA_HOME/rr "
                             "or ~/.local/share/rr); a running rr up there is the NATS server checked unless --nats is given")
    parser.add_argument("--min-free-gib", type=float, default=10.0, help="free space required under the data dir")
    parser.add_argument("--history-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="a read of the newest 1000 events slower than this has stalled (fails)")
    parser.add_argument("--election-window", type=float, default=10.0, metavar="MINUTES",
                        help="how far back LEADER_ELECTED events are counted")
    parser.add_argument("--max-elections", type=int, default=6, metavar="N",
                        help="more elections than this for one role within the window fails")
    parser.add_argument("--max-skew", type=float, default=1.0, metavar="SECONDS", help="clock skew allowed vs the server")
    try:
        from servicekit.options import add_common_arguments
    except ImportError:  # msgspec is missing: only the dependency check can run
        parser.set_defaults(func=run_deps_only)
        return
    add_common_arguments(parser)
    parser.set_defaults(func=run)


def _required_missing() -> list[PackageStatus]:
    return [s for s in map(package_status, REQUIRED) if not s.importable]


def _workload_missing() -> list[PackageStatus]:
    # Looked up, not imported: torch costs seconds, and --deps-only must stay fast.
    return [s for s in map(package_present, WORKLOAD) if not s.importable]


def run_deps_only(args: argparse.Namespace) -> int:
    """Python version, required and workload packages only; the pip command on failure."""
    too_old = sys.version_info < (3, 11)
    missing = _required_missing() + _workload_missing()
    if args.json:
        print(json.dumps({"ok": not (too_old or missing), "python": sys.version.split()[0],
                          "missing": [{"module": m.module, "distribution": m.distribution, "error": m.error} for m in missing]}))
    if too_old:
        print(f"rr: Python {sys.version.split()[0]} is too old; install 3.11 or newer and recreate the venv", file=sys.stderr)
    if missing:
        print(missing_message(missing), file=sys.stderr)
    if not (too_old or missing or args.json):
        print(f"rr doctor: Python {sys.version.split()[0]} and every required package import")
    return 1 if too_old or missing else 0


def run(args: argparse.Namespace) -> int:
    """Every check; the table (or JSON) on stdout; 0 when all required checks pass."""
    if args.deps_only or _required_missing():
        return run_deps_only(args)
    # Imported only now: they need the packages checked above.
    from cli.doctor.checks import evaluate
    from cli.doctor.probes import gather
    from cli.doctor.report import as_json, as_table, build_report
    from cli.doctor.target import build_target
    from servicekit.options import common_options

    options = common_options(args)
    target = build_target(options, credentials_path=args.creds, monitor_url=args.monitor,
                          min_free_gib=args.min_free_gib, max_skew_s=args.max_skew, data_dir=args.data_dir,
                          history_limit_s=args.history_timeout, election_window_s=args.election_window * 60,
                          max_elections=args.max_elections)
    report = build_report(target.node_id, target.nats_url, evaluate(asyncio.run(gather(target))))
    print(as_json(report) if args.json else as_table(report))
    return 0 if report.ok else 1
