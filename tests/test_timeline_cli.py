"""`rr timeline` and `rr replay` start without importing every other command's stack: the parser of the named command only."""

from __future__ import annotations

import subprocess
import sys

from cli.main import COMMAND_MODULES, parser_for


def test_a_named_command_imports_only_its_own_module_and_no_http_stack() -> None:
    probe = (
        "import sys; from cli.main import parser_for; "
        "args = parser_for(['timeline', '--work', 'w-1']).parse_args(['timeline', '--work', 'w-1']); "
        "print(args.work, sorted(m for m in sys.modules if m in ('litestar', 'uvicorn', 'cli.commands.up', 'cli.commands.whatif')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["w-1", "[]"]


def test_help_a_typo_and_options_before_the_noun_still_get_the_full_or_right_parser() -> None:
    every = parser_for(["--help"]).format_help()
    assert all(module.rsplit(".", 1)[-1] in every for module in COMMAND_MODULES)
    assert "replay" in parser_for(["tiemline"]).format_help()  # argparse names the choices
    args = parser_for(["-v", "replay", "--seq", "5"]).parse_args(["-v", "replay", "--seq", "5"])
    assert (args.verbose, args.seq, args.func.__module__) == (1, 5, "cli.commands.replay")
