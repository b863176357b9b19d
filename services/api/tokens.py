"""Bearer tokens for the API's mutating endpoints: who is asking (a node or a person) and in which role.

A token is a random secret handed to one user (`rr auth token USER --role ROLE` prints it once); the
API keeps only its SHA-256 in `api.tokens_file`, so a leaked tokens file lets nobody in. The role
is one of eventbus/authority.py's, and the API publishes on a user's behalf only the event types
that role may publish itself.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import msgspec

from eventbus.authority import ROLES, may_publish
from eventbus.errors import InvalidConfig

TOKEN_BYTES = 32
Sha256 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class TokenEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One issued token: whose it is, its role, and its SHA-256 (never the token)."""

    user: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    role: str
    sha256: Sha256


class TokensFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`api.tokens_file`: every token the API accepts."""

    tokens: list[TokenEntry] = []


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who a request comes from."""

    user: str
    role: str


class Refused(Exception):
    """A request without the right credentials; `status` is 401 (who are you?) or 403 (not you)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def digest(token: str) -> str:
    """The SHA-256 a tokens file keeps for `token`."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue(user: str, role: str) -> tuple[str, TokenEntry]:
    """A new token for `user` in `role`, and the entry the tokens file keeps for it."""
    if role not in ROLES:
        raise InvalidConfig(f"role {role!r}: expected one of {', '.join(ROLES)}")
    token = f"rr_{secrets.token_urlsafe(TOKEN_BYTES)}"
    return token, TokenEntry(user=user, role=role, sha256=digest(token))


def table(tokens: TokensFile, path: str) -> dict[str, Principal]:
    """SHA-256 -> principal; raises InvalidConfig naming the file and the entry with an unknown role."""
    for i, entry in enumerate(tokens.tokens):
        if entry.role not in ROLES:
            raise InvalidConfig(f"{path}: tokens[{i}].role: {entry.role!r} is not one of {', '.join(ROLES)}")
    return {e.sha256: Principal(user=e.user, role=e.role) for e in tokens.tokens}


def load_table(path: str | Path) -> dict[str, Principal]:
    """Read `api.tokens_file` (blocking); raises InvalidConfig naming the file and key."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidConfig(f"api.tokens_file: cannot read {path}: {exc.strerror or exc}") from None
    try:
        tokens = msgspec.yaml.decode(data, type=TokensFile) if data.strip() else TokensFile()
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidConfig(f"{path}: {exc}") from None
    return table(tokens, str(path))


def authenticate(authorization: str | None, known: Mapping[str, Principal] | None) -> Principal:
    """The principal of an `Authorization: Bearer <token>` header; Refused(401) when missing or unknown."""
    if known is None:
        raise Refused(401, "no API tokens are configured on this node (api.tokens_file); this endpoint needs one")
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(401, "Authorization: expected 'Bearer <token>' (a token from `rr auth token`)")
    principal = known.get(digest(token.strip()))
    if principal is None:
        raise Refused(401, "Authorization: unknown token (revoked, or never issued to this API's tokens_file)")
    return principal


def authorize(principal: Principal, *, node: str | None, type_name: str) -> None:
    """Refused(403) unless `principal` may publish `type_name` as `node` (workers only as themselves)."""
    if not may_publish(principal.role, type_name):
        raise Refused(403, f"{principal.user} (role {principal.role}) may not publish {type_name}")
    if node is not None and principal.role != "admin" and principal.user != node:
        raise Refused(403, f"{principal.user} (role {principal.role}) may not act for node {node}; use that node's token")
