"""Options every rr command and service takes, each also read from the environment."""

from __future__ import annotations

import argparse
import os
import socket

import msgspec

from eventbus.limits import id_problem
from eventbus.subjects import token


class CommonOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Where NATS is, who this node is, and which config file to read."""

    nats_url: str | None  # None: the embedded default (rr up) or nats://127.0.0.1:4222
    node_id: str
    config_path: str | None


def default_node_id() -> str:
    """The hostname, as the seeds' --node-id defaulted to, made safe for a subject token."""
    return token(socket.gethostname().split(".")[0])


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--nats, --node-id, --config with RR_NATS_URL, RR_NODE_ID, RR_CONFIG as defaults."""
    parser.add_argument(
        "--nats",
        dest="nats_url",
        default=os.environ.get("RR_NATS_URL") or None,
        metavar="URL",
        help="NATS server URL(s), comma-separated (env RR_NATS_URL; default nats://127.0.0.1:4222)",
    )
    parser.add_argument(
        "--node-id",
        default=os.environ.get("RR_NODE_ID") or default_node_id(),
        metavar="ID",
        help="this node's id (env RR_NODE_ID; default the hostname)",
    )
    parser.add_argument(
        "--config",
        dest="config_path",
        default=os.environ.get("RR_CONFIG") or None,
        metavar="PATH",
        help="rr config file, YAML (env RR_CONFIG)",
    )


def common_options(args: argparse.Namespace) -> CommonOptions:
    """The common options out of parsed arguments; rejects a node id that cannot be a subject token or is too long."""
    problem = id_problem(args.node_id)
    if problem is not None:  # names derived from it (consumer names max 255) would fail much later
        raise SystemExit(f"rr: invalid --node-id {args.node_id[:40]!r}...: it {problem}" if len(args.node_id) > 40
                         else f"rr: invalid --node-id {args.node_id!r}: it {problem}")
    if token(args.node_id) != args.node_id:
        raise SystemExit(
            f"rr: invalid --node-id {args.node_id!r}: use letters, digits, '-', '_' or ':' only"
        )
    return CommonOptions(nats_url=args.nats_url, node_id=args.node_id, config_path=args.config_path)
