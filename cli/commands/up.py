"""`rr up`: a one-node cluster (embedded nats-server, streams, every service) until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

import servicekit.registry  # noqa: F401  (fills SERVICES)
from cli.commands.streams import positive_int
from cli.nouns import summary
from cli.up.errors import UpError
from cli.up.layout import Layout, resolve_data_dir
from cli.up.lock import UP_OWNER, LockOwner, lock_up
from cli.up.session import API_PORT_HINT, UpPlan, check_disk_space, check_port_free, prepare_layout, run_up
from config.settings import RrConfig, load_config
from servicekit.options import add_common_arguments, common_options
from servicekit.runtime import SERVICES

EMBEDDED_HOST = "127.0.0.1"
DEFAULT_PORT = 4222


def port_number(text: str) -> int:
    """argparse type: a TCP port, 1..65535."""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return int(text)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr up`."""
    parser = subparsers.add_parser(
        "up",
        help=summary("up"),
        description="Without --nats (or RR_NATS_URL) start an embedded nats-server; with it, join that cluster.",
    )
    parser.add_argument("--nats-port", type=port_number, default=DEFAULT_PORT, help=f"embedded server port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the JetStream store and logs live (env RR_DATA_DIR; default $XDG_DATA_HOME/rr or ~/.local/share/rr)",
    )
    parser.add_argument(
        "--api-port", type=port_number, default=None, metavar="PORT",
        help="HTTP port of the status API and dashboard (default the config's api.port, 8770)",
    )
    parser.add_argument("--grace", type=positive_int, default=10, metavar="SECONDS", help="how long a service gets to stop before SIGKILL")
    add_common_arguments(parser)
    parser.set_defaults(func=run, log_level=logging.INFO)


def plan_from(args: argparse.Namespace) -> UpPlan:
    """The session `rr up` will run, from its arguments and the environment."""
    options = common_options(args)
    return UpPlan(
        layout=Layout.under(resolve_data_dir(args.data_dir, os.environ, Path.home())),
        nats_url=options.nats_url,
        host=EMBEDDED_HOST,
        port=args.nats_port,
        node_id=options.node_id,
        config_path=str(Path(options.config_path).absolute()) if options.config_path else None,
        grace_s=float(args.grace),
        api_port=args.api_port,
    )


def _say(line: str) -> None:
    print(line, flush=True)


def check_ports(plan: UpPlan, config: RrConfig) -> None:
    """The embedded server's and the api's ports are free; raises UpError naming the port."""
    if plan.nats_url is None:
        check_port_free(plan.host, plan.port)
    if "api" in SERVICES and SERVICES["api"].on_up:  # else the api child would crash-loop on it
        check_port_free(config.api.host or "0.0.0.0", plan.api_port or config.api.port, API_PORT_HINT)


def run(args: argparse.Namespace) -> int:
    """Check, start, run until stopped; one line and exit 1 if anything stops it from starting."""
    plan = plan_from(args)
    config = load_config(plan.config_path)  # a bad config fails here, before anything starts
    try:
        # First, before any directory is made: a second rr up on this data dir is refused untouched.
        lock = lock_up(plan.layout.data_dir, LockOwner(pid=os.getpid(), owner=UP_OWNER))
        try:
            check_ports(plan, config)
        except UpError:
            lock.abandon()  # a refused start leaves no data dir behind
            raise
        prepare_layout(plan.layout)
        if plan.nats_url is None:  # the embedded server's store: its streams must fit on this disk
            check_disk_space(plan.layout, config)
        asyncio.run(run_up(plan, config, _say, lock))
    except UpError as exc:
        print(f"rr: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a Ctrl-C before the handlers were installed: everything started is stopped
        return 0
    return 0
