"""Node keys (NATS NKeys, Ed25519): a private seed per user, of which the servers keep only the public key."""

from __future__ import annotations

import os

import nkeys

from eventbus.errors import InvalidConfig


def new_seed() -> str:
    """A new user seed ('SU...'): the node's private key, written only into its credentials file."""
    return str(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode())


def public_key(seed: str, *, source: str = "nkey_seed") -> str:
    """The public key ('U...') of a user seed, which auth.conf names; raises InvalidConfig for a bad seed."""
    try:
        pair = nkeys.from_seed(bytearray(seed.strip().encode()))
    except (nkeys.NkeysError, ValueError, TypeError) as exc:
        raise InvalidConfig(f"{source}: not an NKey seed ({type(exc).__name__}); regenerate it with `rr auth gen --rotate`") from None
    key = str(pair.public_key.decode())
    if not key.startswith("U"):
        raise InvalidConfig(f"{source}: the seed is not a user key (its public key starts {key[0]!r}, not 'U')")
    return key
