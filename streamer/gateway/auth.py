"""Bearer tokens for the gateway, configured in ``Settings.auth_tokens``.

Format: entries separated by ``;``, each ``token:mode:collections`` where ``mode`` is ``r``,
``w`` or ``rw`` and ``collections`` is ``*`` or a comma-separated list of collection names,
e.g. ``s3cret:rw:*;viewer-token:r:photos,docs``. With no tokens configured every request is
refused: authentication is never silently off.

Clients send ``Authorization: Bearer <token>``. Browsers cannot set headers on a WebSocket,
so the websocket also accepts the token as a subprotocol ``bearer.<token>`` offered next to
``streamer.v1`` (the server answers with ``streamer.v1`` only, so the token is not echoed)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from schemas.errors import InvalidArgumentError, PermissionDeniedError

Mode = Literal["r", "w"]
PROTOCOL = "streamer.v1"
_BEARER_PROTOCOL = "bearer."


@dataclass(frozen=True, slots=True)
class Grant:
    name: str  # a non-secret label for logs: the entry's position
    modes: frozenset[Mode]
    collections: frozenset[str] | None  # None = every collection

    def allows(self, mode: Mode, collection: str) -> bool:
        return mode in self.modes and (self.collections is None or collection in self.collections)

    def check(self, mode: Mode, collection: str) -> None:
        if not self.allows(mode, collection):
            verb = "read" if mode == "r" else "write"
            raise PermissionDeniedError(f"This token may not {verb} collection [{collection}]")


def parse_tokens(spec: str | None) -> list[tuple[bytes, Grant]]:
    if not spec:
        return []
    out: list[tuple[bytes, Grant]] = []
    for n, entry in enumerate(e.strip() for e in spec.split(";")):
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) != 3 or not parts[0] or parts[1] not in ("r", "w", "rw") or not parts[2]:
            raise InvalidArgumentError(
                f"auth_tokens entry {n + 1} must be token:r|w|rw:*|col1,col2 (got {len(parts)} "
                "fields or an empty/invalid one)")
        token, mode, cols = parts
        modes = frozenset(m for m in ("r", "w") if m in mode)
        names = None if cols == "*" else frozenset(c.strip() for c in cols.split(",") if c.strip())
        out.append((token.encode(), Grant(f"token#{n + 1}", modes, names)))  # type: ignore[arg-type]
    return out


class Authenticator:
    def __init__(self, spec: str | None) -> None:
        self._tokens = parse_tokens(spec)

    @property
    def configured(self) -> bool:
        return bool(self._tokens)

    def grant(self, token: str | None) -> Grant | None:
        """The grant for ``token``; every configured token is compared, in constant time each,
        so timing does not reveal which (or whether a prefix) matched."""
        if token is None:
            return None
        given = token.encode()
        found: Grant | None = None
        for secret, grant in self._tokens:
            if hmac.compare_digest(given, secret) and found is None:
                found = grant
        return found

    def from_headers(self, headers: Mapping[str, str]) -> Grant | None:
        return self.grant(token_from_headers(headers))


def token_from_headers(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for proto in headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(_BEARER_PROTOCOL) and len(proto) > len(_BEARER_PROTOCOL):
            return proto[len(_BEARER_PROTOCOL):]
    return None
