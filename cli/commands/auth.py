"""`rr auth gen`: per-node NATS users with least-privilege permissions, from the hosts file; `rr auth token`: API tokens."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import msgspec

from cli.auth.generate import generate
from cli.nouns import summary
from config.settings import load_config
from eventbus.authority import ROLES
from services.api.tokens import TokensFile, issue


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rr auth gen`."""
    parser = subparsers.add_parser("auth", help=summary("auth"))
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    gen = verbs.add_parser(
        "gen",
        help="write auth.conf (nats-server authorization block) and one credentials file per host",
        description="Node keys already in OUT/credentials are kept unless rotated; disabled or removed hosts are revoked "
                    "(once the servers reload auth.conf).",
    )
    gen.add_argument("--hosts", required=True, metavar="PATH", help="the fleet's distributed_hosts.yaml")
    gen.add_argument("--out", required=True, metavar="DIR", help="output directory (auth.conf, credentials/)")
    gen.add_argument("--config", dest="config_path", default=None, metavar="PATH",
                     help="rr config (bucket names, leadership.candidates); default: built-in defaults")
    gen.add_argument("--rotate", nargs="*", metavar="USER", default=None,
                     help="new keys for these users; with no names, for every user")
    gen.add_argument("--tls-ca", default=None, metavar="PATH",
                     help="CA file the nodes trust for tls:// URLs, written into each credentials file")
    gen.add_argument("--json", action="store_true", help="print what was written as JSON")
    gen.set_defaults(func=run_gen)
    token = verbs.add_parser(
        "token",
        help="issue a bearer token for the HTTP API's mutating endpoints (printed once; its SHA-256 kept in FILE)",
        description="The api service reads FILE as api.tokens_file. Issuing a user's token again replaces the old one.",
    )
    token.add_argument("user", help="the node id (for /work/claim, /work/complete, /work/fail) or a person's name")
    token.add_argument("--role", required=True, choices=ROLES, help="what the token may do (README: Who may publish what)")
    token.add_argument("--file", required=True, metavar="PATH", help="the api's tokens file (created when missing)")
    token.set_defaults(func=run_token)


def run_token(args: argparse.Namespace) -> int:
    """Append the token's entry (replacing the user's older one) and print the token once."""
    path = Path(args.file)
    existing = msgspec.yaml.decode(path.read_bytes(), type=TokensFile) if path.exists() and path.read_bytes().strip() else TokensFile()
    secret, entry = issue(args.user, args.role)
    kept = [e for e in existing.tokens if e.user != args.user]
    path.write_bytes(msgspec.yaml.encode(TokensFile(tokens=[*kept, entry])))
    path.chmod(0o600)
    print(secret)
    print(f"rr auth token: {args.user} ({args.role}) in {path}; send it as 'Authorization: Bearer <token>'; "
          "restart the api service to load it", file=sys.stderr)
    return 0


def run_gen(args: argparse.Namespace) -> int:
    """Generate the files; one line per user (new/kept), revoked users, and the next steps."""
    rotate_all = args.rotate is not None and not args.rotate
    result = generate(
        args.hosts, args.out, config=load_config(args.config_path), rotate=args.rotate or (),
        rotate_all=rotate_all, tls_ca=args.tls_ca,
    )
    if args.json:
        print(json.dumps(msgspec.to_builtins(result)))
        return 0
    for user, path in result.credentials.items():
        state = "new key" if user in result.new else "kept"
        print(f"{user:<24} {result.roles[user]:<12} {state:<8} {result.public_keys[user][:12]}...  {path}")
    for user in result.revoked:
        print(f"{user:<24} {'revoked':<12} credentials removed")
    print(f"authorization block: {result.auth_conf}")
    print("next: install each new credentials file on its node as /etc/rr/nats-credentials.yaml (mode 0600), then "
          "copy auth.conf next to each nats-server config and reload it (systemctl reload rr-nats): revoked and "
          "rotated keys are cut off at the reload")
    return 0
