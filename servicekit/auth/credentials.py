"""A node's NATS credentials file (RR_NATS_CREDS): who it logs in as, with which key, its inbox prefix, its TLS trust.

`rr auth gen` writes one per node; services, commands and `rr doctor` read it here (the
only place credentials files are read) and pass connect_options() to connect().
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from config.settings import load_yaml_as
from eventbus.errors import InvalidConfig
from servicekit.auth.keys import public_key

log = logging.getLogger(__name__)

CREDENTIALS_ENV = "RR_NATS_CREDS"


class NatsCredentials(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How one node authenticates to NATS; `inbox_prefix` must match its permissions."""

    user: str  # the node id (admin for the operators); the server knows the user by its public key
    nkey_seed: str = ""  # the user's private NKey seed (SU...): it signs the server's nonce at connect
    password: str = ""  # files from before node keys: refused at load, naming the fix
    inbox_prefix: str = "_INBOX"
    role: str = ""  # informational: admin, coordinator or worker
    tls_ca: str | None = None  # CA bundle that signed the servers' certificates (tls:// URLs)
    tls_cert: str | None = None  # client certificate, when the servers verify clients
    tls_key: str | None = None


def load_credentials(path: str | Path) -> NatsCredentials:
    """Read a credentials file; raises InvalidConfig naming the file and key (blocking)."""
    path = Path(path)
    creds = load_yaml_as(path, NatsCredentials)
    assert isinstance(creds, NatsCredentials)
    if (creds.tls_cert is None) != (creds.tls_key is None):
        raise InvalidConfig(f"{path}: tls_cert and tls_key go together; set both or neither")
    if not creds.nkey_seed:
        raise InvalidConfig(
            f"{path}: nkey_seed: missing{' (a password file from before node keys)' if creds.password else ''}; "
            f"run `rr auth gen` and install its credentials/{creds.user}.yaml here"
        )
    public_key(creds.nkey_seed, source=f"{path}: nkey_seed")
    with contextlib.suppress(OSError):  # a mode check never stops a node from starting
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("%s: credentials are readable by other users; chmod 600 %s", path, path)
    return creds


def credentials_from_env(environ: Mapping[str, str] = os.environ) -> NatsCredentials | None:
    """The credentials file named by $RR_NATS_CREDS, or None when it is unset (blocking)."""
    path = environ.get(CREDENTIALS_ENV)
    return load_credentials(path) if path else None


def check_identity(creds: NatsCredentials | None, node_id: str) -> None:
    """Refuse a node's credentials that belong to another node: every publish would be denied."""
    if creds is not None and creds.role in ("worker", "coordinator") and creds.user != node_id:
        raise InvalidConfig(
            f"{CREDENTIALS_ENV}: credentials of user {creds.user!r} used by node {node_id!r}; install "
            f"credentials/{node_id}.yaml from `rr auth gen`, or set RR_NODE_ID={creds.user}"
        )


def connect_options(creds: NatsCredentials | None) -> dict[str, Any]:
    """Keyword arguments for eventbus.connection.connect(); {} without credentials (blocking: reads TLS files)."""
    if creds is None:
        return {}
    options: dict[str, Any] = {"nkeys_seed_str": creds.nkey_seed, "inbox_prefix": creds.inbox_prefix, "identity": creds.user}
    if creds.tls_ca or creds.tls_cert:
        options["tls"] = tls_context(creds)
    return options


def tls_context(creds: NatsCredentials) -> ssl.SSLContext:
    """A client TLS context trusting `tls_ca`, presenting the client certificate when one is set."""
    try:
        context = ssl.create_default_context(cafile=creds.tls_ca)
        if creds.tls_cert and creds.tls_key:
            context.load_cert_chain(creds.tls_cert, creds.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidConfig(f"TLS files of NATS user {creds.user!r}: {exc}") from None
    return context

