"""`rr-service <name>`: run one registered service in this process until SIGINT/SIGTERM."""

from __future__ import annotations

# Before anything imports them: a missing package is named with its pip command, not a traceback
# (the seeds' daemons died on `ModuleNotFoundError: psutil` and nobody saw why). The API's HTTP stack is
# found, not imported: importing it cost each of rr up's service children ~0.5 s of CPU at start, six at
# once on the node's cores. The rest every service imports anyway, so they are imported here: a package
# that is installed but raises on import is refused in the same one line.
from cli.doctor.deps import HTTP_STACK, SERVICE_IMPORTS, WORKLOAD, require_dependencies

require_dependencies(SERVICE_IMPORTS, present=HTTP_STACK)

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import servicekit.registry  # noqa: F401  (fills SERVICES)
from cli.main import configure_logging
from cli.up.errors import UpError
from cli.up.lock import HeldLock, lock_service
from config.sections.api import PORT_ENV
from config.settings import load_config
from eventbus.errors import BusError
from servicekit.options import CommonOptions, add_common_arguments, common_options
from servicekit.runtime import RENAMED, SERVICES, ServiceEntry, run_service_process, service_named


def build_parser() -> argparse.ArgumentParser:
    """Parser for `rr-service <name> [--nats URL] [--node-id ID] [--config PATH]`."""
    parser = argparse.ArgumentParser(prog="rr-service", description="Run one rr service until stopped.")
    parser.add_argument("name", nargs="?", help="service to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the registered services and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug logging on stderr")
    parser.add_argument(
        "--api-port", type=int, default=None, metavar="PORT",
        help=f"api service only: HTTP port (env {PORT_ENV}; default the config's api.port, 8770)",
    )
    add_common_arguments(parser)
    return parser


def known_services() -> str:
    """One line per registered service: name, whether `rr up` starts it, what it does."""
    if not SERVICES:
        return "(no services registered)"
    width = max(len(name) for name in SERVICES)
    formerly = {new: old for old, new in RENAMED.items()}
    return "\n".join(
        f"{e.name:<{width}}  {'up ' if e.on_up else '   '} {e.description}" + (f" (formerly {formerly[e.name]})" if e.name in formerly else "")
        for e in sorted(SERVICES.values(), key=lambda e: e.name)
    )


def hold_data_dir(entry: ServiceEntry, options: CommonOptions) -> HeldLock | None:
    """The lock of the data dir the service writes under (rr up's when started by it); raises DataDirInUse."""
    data_dir = entry.data_dir_of(load_config(options.config_path), os.environ, Path.home())
    return lock_service(entry.name, data_dir, os.environ) if data_dir is not None else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the named service; 2 for an unknown name, 1 for a bus or config error it explains."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(known_services())
        return 0
    if args.name is None:
        parser.error("a service name is required (or --list)")
    entry = service_named(args.name)
    if entry is None:
        names = ", ".join(sorted(SERVICES)) or "none registered"
        print(f"rr-service: unknown service {args.name!r}; known services: {names}", file=sys.stderr)
        return 2
    if entry.name == "worker":
        # a worker's jobs import the workload: refuse to start without it rather than fail every job
        require_dependencies((), present=WORKLOAD)
    if args.api_port is not None:
        if entry.name != "api" or not 0 < args.api_port < 65536:
            parser.error("--api-port takes a TCP port (1..65535) and applies to the api service only")
        os.environ[PORT_ENV] = str(args.api_port)  # how the api service is told, as `rr up --api-port` tells it
    options = common_options(args)
    configure_logging(args.verbose + 1)  # a service logs at info: its log is how an operator follows it
    held: HeldLock | None = None
    try:
        held = hold_data_dir(entry, options)
        asyncio.run(run_service_process(entry, options))
    except (BusError, UpError) as exc:
        print(f"rr-service {entry.name}: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(f"rr-service {entry.name}: cannot import {entry.target}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if held is not None:
            held.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
