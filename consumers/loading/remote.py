"""Which remote URIs a data loader may read: schemes, allow-listed prefixes, store options
without secrets, and the address rules that keep http(s) off private networks (SSRF).
Pure policy, no I/O; the fetching is ``consumers/loading/fetch.py``."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from schemas.errors import DataLoaderError, InvalidArgumentError, URINotAllowedError

HTTP_SCHEMES = ("http", "https")
STORE_SCHEMES = ("s3", "gs", "az", "abfs", "abfss")
REMOTE_SCHEMES = HTTP_SCHEMES + STORE_SCHEMES
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Store options travel in collection specs, so they must never hold a secret: credentials come
# from each store's own environment variables and profiles on the machine that fetches.
_SECRET_WORDS = ("secret", "token", "key", "password", "sas", "credential")


def scheme_of(uri: str) -> str | None:
    """The lower-case scheme of a remote URI, None for local paths and ``file:``."""
    head, sep, _ = uri.partition("://")
    if not sep or not head.isascii() or not head.isalnum():
        return None
    scheme = head.lower()
    return scheme if scheme in REMOTE_SCHEMES else None


def redact(uri: str) -> str:
    """The URI as it may appear in errors, logs and dead letters: no userinfo, no query
    string or fragment (presigned URLs carry their signature there)."""
    if scheme_of(uri) in STORE_SCHEMES:
        netloc = _split(uri)[1]
        if "@" in netloc and ":" in netloc.partition("@")[0]:
            return "<URI with credentials>"
        return uri  # bucket and key
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparsable URI>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    hidden = "?..." if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, "", "")) + hidden


def _check_store_options(scheme: str, options: Mapping[str, Any]) -> dict[str, str]:
    clean: dict[str, str] = {}
    for name, value in options.items():
        low = str(name).lower()
        if any(w in low for w in _SECRET_WORDS):
            raise InvalidArgumentError(
                f"Store option {name!r} for {scheme}:// is a credential: set it in the fetching "
                f"process's environment (AWS_*, AZURE_STORAGE_*, GOOGLE_*), never in a spec")
        text = str(value)
        if "@" in text and "://" in text:
            raise InvalidArgumentError(f"Store option {name!r} for {scheme}:// holds userinfo")
        clean[str(name)] = text
    return clean


@dataclass(frozen=True, slots=True)
class RemotePolicy:
    """What a loader may fetch. Empty ``allow`` means no remote URI at all.

    ``allow`` holds URI prefixes (``s3://catalog/``, ``https://img.example.com/products/``); a
    prefix matches whole path segments, so ``s3://cat`` does not admit ``s3://catalog/x``.
    ``allow_networks`` lists CIDRs that http(s) may reach although they are not public
    (loopback, private, link-local); it is empty by default, so those are refused."""

    allow: tuple[str, ...] = ()
    stores: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    allow_networks: tuple[str, ...] = ()
    timeout_s: float = 30.0
    retries: int = 3
    max_in_flight: int = 32

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> RemotePolicy:
        if not config:
            return cls()
        unknown = set(config) - {"allow", "stores", "allow_networks", "timeout_s", "retries",
                                 "max_in_flight"}
        if unknown:
            raise InvalidArgumentError(f"Unknown remote loader options: {sorted(unknown)}")
        allow = tuple(str(p) for p in config.get("allow") or ())
        for prefix in allow:
            if scheme_of(prefix) is None:
                raise InvalidArgumentError(
                    f"Allowed prefix {prefix!r} must start with one of "
                    f"{', '.join(s + '://' for s in REMOTE_SCHEMES)}")
            if "@" in urlsplit(prefix).netloc and scheme_of(prefix) in HTTP_SCHEMES:
                raise InvalidArgumentError("Allowed prefixes may not hold userinfo")
        stores_in = config.get("stores") or {}
        stores = {str(s): _check_store_options(str(s), o) for s, o in stores_in.items()}
        networks = tuple(str(n) for n in config.get("allow_networks") or ())
        for net in networks:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise InvalidArgumentError(f"Invalid network {net!r}: {exc}") from exc
        timeout_s = float(config.get("timeout_s", 30.0))
        retries, in_flight = int(config.get("retries", 3)), int(config.get("max_in_flight", 32))
        if timeout_s <= 0 or retries < 0 or in_flight < 1:
            raise InvalidArgumentError("timeout_s > 0, retries >= 0 and max_in_flight >= 1")
        return cls(allow, stores, networks, timeout_s, retries, in_flight)

    def to_config(self) -> dict[str, Any] | None:
        if self == RemotePolicy():
            return None
        return {"allow": list(self.allow), "stores": {s: dict(o) for s, o in self.stores.items()},
                "allow_networks": list(self.allow_networks), "timeout_s": self.timeout_s,
                "retries": self.retries, "max_in_flight": self.max_in_flight}

    def networks(self) -> list[IPNetwork]:
        return [ipaddress.ip_network(n, strict=False) for n in self.allow_networks]

    def check(self, uri: str) -> str:
        """The URI's scheme, once the URI is allowed; raises ``URINotAllowedError`` else."""
        scheme = scheme_of(uri)
        if scheme is None:
            raise DataLoaderError(f"Unsupported URI scheme: {redact(uri)}")
        if not self.allow:
            raise URINotAllowedError(
                f"Remote URIs are off for this data loader: {redact(uri)} (allow its prefix "
                f"in the loader's remote config and, on a service, in STREAMER_REMOTE_ALLOW)")
        if scheme in HTTP_SCHEMES:
            parts = urlsplit(uri)
            if parts.username is not None or parts.password is not None:
                raise URINotAllowedError(f"URIs with credentials are refused: {redact(uri)}")
            path = unquote(parts.path)
        else:
            _, netloc, path = _split(uri)
            if ":" in netloc.partition("@")[0] and "@" in netloc:
                raise URINotAllowedError("URIs with credentials are refused")
        segments = path.split("/")
        if any(s in (".", "..") for s in segments) or "\x00" in uri or "\\" in unquote(uri):
            raise URINotAllowedError(f"URI path may not hold '.', '..', '\\' or NUL: {redact(uri)}")
        if not any(prefix_matches(p, uri) for p in self.allow):
            raise URINotAllowedError(f"URI {redact(uri)} is not under an allowed prefix")
        return scheme


def prefix_matches(prefix: str, uri: str) -> bool:
    """Whether ``uri`` lies under ``prefix``, comparing scheme and host case-insensitively and
    the path by whole segments."""
    p, u = _split(prefix), _split(uri)
    if p[0] != u[0]:
        return False
    if not p[1]:  # "s3://": the whole scheme, for a server's allow-list to narrow
        return True
    if p[1].lower() != u[1].lower():
        return False
    if not p[2] or p[2] == "/":
        return True
    base = p[2] if p[2].endswith("/") else p[2] + "/"
    return u[2] == p[2] or u[2].startswith(base)


def _split(uri: str) -> tuple[str, str, str]:
    """(scheme, authority, path). Object-store keys are taken verbatim (a key may hold '?',
    '#' or '%'), as ``aws s3`` and obstore read them; http(s) URLs are parsed as URLs."""
    scheme = scheme_of(uri) or ""
    if scheme in STORE_SCHEMES:
        rest = uri.partition("://")[2]
        netloc, slash, path = rest.partition("/")
        return scheme, netloc, slash + path
    parts = urlsplit(uri)
    return scheme, parts.netloc, parts.path


def narrow(server: Sequence[str], asked: Iterable[str] | None) -> list[str]:
    """The prefixes both the server and a spec allow: for each overlapping pair, the deeper."""
    if asked is None:
        return list(server)
    asked = list(asked)
    return sorted({a if prefix_matches(s, a) else s for a in asked for s in server
                   if prefix_matches(s, a) or prefix_matches(a, s)})


def forbidden_address(ip: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    """True for anything but a public unicast address (loopback, private, link-local with the
    cloud metadata service, CGNAT, multicast, reserved, IPv4-mapped forms of those), unless
    an explicitly allowed network holds it."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip.version == net.version and ip in net for net in allowed):
        return False
    return not ip.is_global or ip.is_multicast


def split_store_uri(uri: str) -> tuple[str, str]:
    """``(store URL, object path)`` of an object-store URI: the bucket or container part and
    the key inside it (``s3://b/k/x.jpg`` -> ``("s3://b", "k/x.jpg")``)."""
    scheme, netloc, path = _split(uri)
    if not netloc or not path.strip("/"):
        raise DataLoaderError(f"Object-store URI needs a bucket and a key: {redact(uri)}")
    return f"{scheme}://{netloc}", path.lstrip("/")


def confine(asked: Mapping[str, Any] | None, server: RemotePolicy) -> dict[str, Any] | None:
    """A spec's remote config as a server runs it. The server's allow-list wins: with none,
    remote URIs are off whatever the spec asks; otherwise the spec can only narrow it. Store
    options (endpoints, regions) are the server's alone, as they say where requests go; a
    spec's extra networks are kept only inside the server's; timeouts, retries and
    concurrency take the smaller value."""
    if not server.allow:
        return None
    asked = asked or {}
    spec = RemotePolicy.from_config(asked)
    allow = narrow(server.allow, spec.allow if "allow" in asked else None)
    if not allow:
        return None
    networks = list(server.allow_networks)
    if "allow_networks" in asked:
        networks = [n for n, net in zip(spec.allow_networks, spec.networks())
                    if any(_within(net, m) for m in server.networks())]
    return RemotePolicy(tuple(allow), server.stores, tuple(networks),
                        min(spec.timeout_s, server.timeout_s), min(spec.retries, server.retries),
                        min(spec.max_in_flight, server.max_in_flight)).to_config()


def _within(net: IPNetwork, outer: IPNetwork) -> bool:
    if isinstance(net, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return net.subnet_of(outer)
    if isinstance(net, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return net.subnet_of(outer)
    return False
