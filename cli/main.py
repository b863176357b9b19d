"""`rr <noun> <verb>`: the operator's command line; each noun is a module in cli/commands/."""

from __future__ import annotations

# Before anything imports them: a missing package is named with its pip command, not a traceback
# (the seeds' daemons died on `ModuleNotFoundError: psutil` and nobody saw why). Found, not
# imported: importing the API's HTTP stack cost every command ~0.6 s (`rr doctor` imports them).
from cli.doctor.deps import SERVICE_MODULES, installed_version, require_dependencies

require_dependencies((), present=SERVICE_MODULES)

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from cli.nouns import SUMMARIES, module_of
from eventbus.errors import BusError
from servicekit import logthrottle

log = logging.getLogger(__name__)

# Each noun's module exposes `register(subparsers)`; add yours to cli/nouns.py (one line).
COMMAND_MODULES = [module_of(noun) for noun in SUMMARIES]


def rr_version() -> str:
    """The installed package's version, or a marker when run from a source tree."""
    return installed_version("rr") or "0.1.0 (source tree, not installed)"


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The full parser; a command module that cannot be imported becomes a command that says why."""
    parser, subparsers = _top_parser()
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001
            # One command's missing dependency (or broken module) must not take every other command down.
            _register_broken(subparsers, name, exc)
            continue
        module.register(subparsers)
    return parser


def listing_parser() -> argparse.ArgumentParser:
    """The parser of `rr --help` (or a typo): every command listed from cli/nouns.py, none of their modules imported."""
    parser, subparsers = _top_parser()
    for noun, line in SUMMARIES.items():
        subparsers.add_parser(noun, help=line, add_help=False)
    return parser


class _VersionAction(argparse.Action):
    """`--version`, reading the installed version only when asked (see rr_version)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"rr {rr_version()}")
        parser.exit()


def _top_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="rr", description="rr: event-sourced training coordinator on NATS JetStream")
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr (-vv: debug)")
    return parser, parser.add_subparsers(dest="command", metavar="<command>", required=True)


def _register_broken(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], module: str, exc: Exception) -> None:
    noun = module.rsplit(".", 1)[-1]
    reason = f"command '{noun}' is unavailable: {module} failed to import: {type(exc).__name__}: {exc}"
    # No option prefix: whatever follows (even --help) is swallowed, and the command explains itself.
    parser = subparsers.add_parser(noun, help=f"(unavailable: {exc})", add_help=False, prefix_chars="\0")
    parser.add_argument("rest", nargs="*")
    parser.set_defaults(func=lambda _args: _fail(reason))


def _fail(message: str) -> int:
    print(f"rr: {message}", file=sys.stderr)
    return 1


def configure_logging(verbosity: int, default: int = logging.ERROR) -> None:
    """Log to stderr: errors only by default (a command's failure is its own one line), info with -v, debug with -vv."""
    if verbosity == 0:
        level = default
    else:
        level = logging.INFO if verbosity == 1 and default > logging.INFO else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logthrottle.install()  # a fault's retries must not flood the log: repeated lines are counted, not repeated


def parser_for(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of the command `argv` names, importing only its module; the listing otherwise (help, a typo).

    Importing every command's module costs a one-off command ~0.5 s (the whole service stack):
    `rr timeline` and `rr replay` answer in well under a second without it, `rr --help` imports none.
    """
    noun = next((arg for arg in argv if not arg.startswith("-")), None)
    if noun is not None and noun in SUMMARIES:
        return build_parser([module_of(noun)])
    return listing_parser()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one rr command; exit 0 on success, 1 on an error it explains, 2 on bad usage."""
    args = parser_for(sys.argv[1:] if argv is None else argv).parse_args(argv)
    configure_logging(args.verbose, getattr(args, "log_level", logging.ERROR))
    try:
        code: int = args.func(args)
    except BusError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
