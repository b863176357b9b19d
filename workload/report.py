"""How a workload program talks to the worker: JSON lines on stdout.

`{"progress": 0.4, "message": "..."}` while running, and one `{"result": {...}}` at the end.
Any other output is passed through to the job's log.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_config_arguments(ap: argparse.ArgumentParser) -> None:
    """The flags every workload program takes: --board, --num-players, --seed, --device."""
    ap.add_argument("--board", required=True)
    ap.add_argument("--num-players", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--device", default="auto", help="auto (CUDA when torch sees it), cpu or cuda")


def progress(fraction: float, message: str = "") -> None:
    """Report how far the job is, 0..1."""
    print(json.dumps({"progress": round(fraction, 4), "message": message}), flush=True)


def result(**fields: Any) -> None:
    """Report the job's result once, at the end."""
    print(json.dumps({"result": fields}), flush=True)


def fail(message: str) -> None:
    """Exit with a one-line reason on stderr."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(2)
