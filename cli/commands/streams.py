"""`rr streams init|info`: provision the declared streams, and show what they hold."""

from __future__ import annotations

import argparse
import asyncio

import msgspec

from cli.commands import open_bus
from cli.nouns import summary
from config.settings import load_config
from eventbus.leases import LeaseBucket
from eventbus.objects import harden_bucket
from eventbus.snapshots import SNAPSHOT_BUCKET
from eventbus.streams import StreamSettings, provision
from eventbus.streamstate import StreamState, stream_states
from servicekit.options import add_common_arguments, common_options


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr streams init` and `rr streams info`."""
    parser = subparsers.add_parser("streams", help=summary("streams"))
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    init = verbs.add_parser("init", help="create or update the declared streams (idempotent)")
    init.add_argument("--replicas", type=positive_int, default=None, help="override streams.replicas from the config")
    init.add_argument("--allow-shorter-retention", action="store_true",
                      help="apply a config that lowers a stream's max age, bytes or messages (drops what is past it)")
    add_common_arguments(init)
    init.set_defaults(func=run_init)
    info = verbs.add_parser("info", help="messages, bytes, sequences and replicas of each stream")
    info.add_argument("--json", action="store_true", help="one JSON object per stream")
    add_common_arguments(info)
    info.set_defaults(func=run_info)


def settings_for(config_path: str | None, replicas: int | None) -> StreamSettings:
    """The stream settings from the config file, with the command line's replica count on top."""
    settings = load_config(config_path).streams
    return settings if replicas is None else msgspec.structs.replace(settings, replicas=replicas)


def run_init(args: argparse.Namespace) -> int:
    """Provision the streams, harden existing object buckets, and print what happened to each."""
    options = common_options(args)
    config = load_config(options.config_path)
    settings = settings_for(options.config_path, args.replicas)

    async def go() -> dict[str, str]:
        async with open_bus(options) as bus:
            leases = LeaseBucket(bus, config.leadership.bucket)
            existed = await leases.exists()  # provision makes it (the log sources it), so ask first
            outcome = await provision(bus.js, settings, allow_shorter_retention=args.allow_shorter_retention,
                                      lease_bucket=config.leadership.bucket)
            # The lease bucket's own dedupe window must be shorter than a renewal (eventbus/leases.py).
            if (state := await leases.shorten_window()) != "missing":
                outcome[f"KV_{config.leadership.bucket}"] = state if existed else "created"
            # Buckets are made by the services; one made before rollups were turned off gets them off here.
            for bucket in (config.distribution.bucket, config.sync.bucket, SNAPSHOT_BUCKET):
                if (state := await harden_bucket(bus, bucket)) != "missing":
                    outcome[f"OBJ_{bucket}"] = state
            return outcome

    for name, outcome in asyncio.run(go()).items():
        print(f"{name}: {outcome}")
    return 0


def format_table(states: list[StreamState]) -> str:
    """The streams as a table for people."""
    rows = [("STREAM", "MESSAGES", "BYTES", "FIRST", "LAST", "REPLICAS", "STORAGE")]
    for s in states:
        if not s.exists:
            rows.append((s.name, "-", "-", "-", "-", "-", "missing: run `rr streams init`"))
            continue
        rows.append(
            (s.name, str(s.messages), human_bytes(s.bytes), str(s.first_seq), str(s.last_seq), str(s.replicas), s.storage)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in rows)


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def run_info(args: argparse.Namespace) -> int:
    """Print each declared stream's state; exit 1 when one is missing."""
    options = common_options(args)

    async def go() -> list[StreamState]:
        async with open_bus(options) as bus:
            return await stream_states(bus)

    states = asyncio.run(go())
    if args.json:
        for state in states:
            print(msgspec.json.encode(state).decode())
    else:
        print(format_table(states))
    return 0 if all(s.exists for s in states) else 1
