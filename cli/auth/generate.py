"""`rr auth gen`'s shell: read the hosts file, keep or rotate node keys, write auth.conf and the credentials files.

Layout of the output directory:
  auth.conf                     the nats-server authorization block: public keys and permissions only
  credentials/<user>.yaml       one per user (admin and each enabled host), mode 0600, with its private seed

Keys already in credentials/ are kept unless rotated, so adding a host does not log every
other node out; a host removed or disabled loses its user and its file (revoked once the
servers reload auth.conf).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from pathlib import Path

import msgspec

from cli.auth.accounts import Account, plan_accounts
from cli.auth.render import UserSecret, authorization_block, credentials_file
from config.hosts import load_hosts
from config.settings import RrConfig
from eventbus.errors import BusError, InvalidConfig
from servicekit.auth.credentials import load_credentials
from servicekit.auth.keys import new_seed, public_key
from servicekit.auth.permissions import Buckets

log = logging.getLogger(__name__)

AUTH_FILE = "auth.conf"
CREDENTIALS_DIR = "credentials"


class Generated(msgspec.Struct, frozen=True, kw_only=True):
    """What `rr auth gen` wrote, and which users got new keys, kept theirs, or were revoked."""

    auth_conf: str
    credentials: dict[str, str]  # user -> credentials file
    roles: dict[str, str]  # user -> role
    public_keys: dict[str, str]  # user -> public NKey, as auth.conf names it
    new: list[str]
    kept: list[str]
    revoked: list[str]


def buckets_of(config: RrConfig) -> Buckets:
    """Bucket names the permissions name, as this fleet's config sets them."""
    return Buckets(leases=config.leadership.bucket, objects=(config.distribution.bucket, config.sync.bucket))


def generate(
    hosts_path: str | Path,
    out_dir: str | Path,
    *,
    config: RrConfig = RrConfig(),
    rotate: Collection[str] = (),
    rotate_all: bool = False,
    tls_ca: str | None = None,
) -> Generated:
    """Write auth.conf and the credentials files for every enabled host of the hosts file (blocking)."""
    hosts = load_hosts(hosts_path)
    accounts = plan_accounts(hosts, config.leadership.candidates, source=str(hosts_path))
    unknown = set(rotate) - {a.user for a in accounts}
    if unknown:
        raise InvalidConfig(f"--rotate: {', '.join(sorted(unknown))} not an enabled host of {hosts_path} (nor admin)")
    creds_dir = Path(out_dir) / CREDENTIALS_DIR
    creds_dir.mkdir(parents=True, exist_ok=True)
    users: list[UserSecret] = []
    new: list[str] = []
    kept: list[str] = []
    for account in accounts:
        seed = None if rotate_all or account.user in rotate else _existing_seed(creds_dir, account)
        (kept if seed else new).append(account.user)
        seed = seed or new_seed()
        users.append(UserSecret(account=account, seed=seed, public_key=public_key(seed)))
    paths: dict[str, str] = {}
    for secret in users:
        path = creds_dir / f"{secret.account.user}.yaml"
        _write_secret(path, credentials_file(secret, tls_ca=tls_ca))
        paths[secret.account.user] = str(path)
    revoked = _remove_stale(creds_dir, set(paths))
    auth_path = Path(out_dir) / AUTH_FILE
    _write_secret(auth_path, authorization_block(users, buckets_of(config), source=str(hosts_path)))
    return Generated(
        auth_conf=str(auth_path), credentials=paths, roles={s.account.user: s.account.role for s in users},
        public_keys={s.account.user: s.public_key for s in users}, new=new, kept=kept, revoked=revoked,
    )


def _existing_seed(creds_dir: Path, account: Account) -> str | None:
    path = creds_dir / f"{account.user}.yaml"
    if not path.exists():
        return None
    try:
        return load_credentials(path).nkey_seed
    except BusError as exc:  # an unreadable file, or a password file from before node keys
        log.warning("%s: %s; a new key is made", path, exc)
        return None


def _remove_stale(creds_dir: Path, current: set[str]) -> list[str]:
    revoked = []
    for path in sorted(creds_dir.glob("*.yaml")):
        if path.stem not in current:
            path.unlink()
            revoked.append(path.stem)
    return revoked


def _write_secret(path: Path, text: str) -> None:
    # Created 0600 from the start (never briefly world-readable), then renamed into place.
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(temp, 0o600)
    os.replace(temp, path)
