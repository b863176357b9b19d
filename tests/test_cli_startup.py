"""`rr` and `rr-service` start without importing what they do not run: checked in `sys.modules` of a child, not by timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cli.main import build_parser, listing_parser
from cli.nouns import SUMMARIES

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# What a command that only prints must never cost: the bus client, the service stacks, the workload.
HEAVY = ("nats", "msgspec", "yaml", "litestar", "uvicorn", "prometheus_client", "opentelemetry", "torch", "numpy",
         "importlib.metadata", "dataclasses", "asyncio")
# What a service child that is not the api must not import before it runs (the HTTP stack costs ~0.5 s of CPU).
HTTP_STACK = ("litestar", "uvicorn", "prometheus_client", "h11")

# Runs `module` as `python -m module *argv` would, then prints the modules it imported as JSON on stderr.
_PROBE = """
import json, runpy, sys
module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def imported_by(module: str, *argv: str) -> tuple[str, set[str]]:
    """What `python -m module *argv` prints, and every module it had imported when it exited."""
    done = subprocess.run([sys.executable, "-c", _PROBE, module, *argv], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stdout, set(json.loads(done.stderr.strip().splitlines()[-1]))


def _loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(p for p in packages if p in modules)


def test_rr_help_lists_every_command_and_imports_none_of_them() -> None:
    out, modules = imported_by("cli.main", "--help")
    assert all(noun in out for noun in SUMMARIES)
    assert _loaded(modules, HEAVY) == []
    assert sorted(m for m in modules if m.startswith("cli.commands")) == []


def test_rr_version_imports_nothing_heavy_but_the_version_lookup() -> None:
    out, modules = imported_by("cli.main", "--version")
    assert out.startswith("rr ")
    assert _loaded(modules, tuple(p for p in HEAVY if p != "importlib.metadata")) == []


def test_the_listing_shows_exactly_what_the_full_parser_shows() -> None:
    assert listing_parser().format_help() == build_parser().format_help()


def test_a_service_child_starts_without_the_http_stack() -> None:
    out, modules = imported_by("cli.service_main", "--list")
    assert "agent" in out and "api" in out
    assert _loaded(modules, HTTP_STACK) == []


def test_a_service_child_refuses_in_one_line_a_package_that_is_installed_but_raises_on_import(tmp_path: Path) -> None:
    # The fleet's "host missing a package" shadows psutil like this: found by a lookup, broken on import.
    (tmp_path / "psutil.py").write_text('raise ImportError("No module named \'psutil\' (this host lacks it)")\n')
    done = subprocess.run([sys.executable, "-m", "cli.service_main", "--list"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": f"{tmp_path}:{PROJECT_ROOT}"})
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rr: missing Python packages: psutil (psutil)"), done.stderr
    assert "pip install psutil" in lines[0]
