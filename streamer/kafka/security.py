"""How every Kafka client of every process connects: the security protocol, SASL (PLAIN,
SCRAM-SHA-256/512, OAUTHBEARER with a token file or a named provider) and the TLS context, all
built here from the settings object, and the fast, typed failure when a connection is refused.

aiokafka reports every refused connection as "Unable to bootstrap": ``preflight`` opens one
connection per bootstrap address first, within the request timeout, so a wrong CA, host name,
password or token surfaces as ``UnavailableError`` with its real cause and never as a hang.
Secrets (passwords, key passwords, tokens) are ``SecretStr`` in the settings and appear in no
message built here."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import importlib
import inspect
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache, partial
from typing import Any

import orjson
from aiokafka.abc import AbstractTokenProvider
from aiokafka.conn import AIOKafkaConnection
from aiokafka.protocol.metadata import MetadataRequest

from schemas.errors import InvalidArgumentError, UnavailableError
from streamer.settings import Settings

#: how long a preflight waits for its probe connection's socket to close
CLOSE_WAIT_S = 2.0

#: ``kafka_sasl_oauth_token_provider`` value for AWS MSK IAM (extra ``streamer[msk-iam]``).
MSK_IAM = "msk-iam"
#: A token this close to its ``exp`` is fetched again before it is sent.
_EXPIRY_MARGIN_S = 5.0


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection settings passed to every aiokafka client (producers, consumers, admin)."""
    protocol = settings.kafka_security_protocol
    kw: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap,
                          "security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        kw["ssl_context"] = ssl_context(settings)
    if protocol.startswith("SASL_"):
        kw.update(_sasl_kwargs(settings))
    elif settings.kafka_sasl_mechanism:
        raise InvalidArgumentError(
            f"kafka_sasl_mechanism={settings.kafka_sasl_mechanism} needs a SASL security "
            f"protocol (SASL_SSL or SASL_PLAINTEXT), not {protocol}")
    return kw


def _sasl_kwargs(settings: Settings) -> dict[str, Any]:
    mechanism = settings.kafka_sasl_mechanism
    if mechanism is None:
        raise InvalidArgumentError(
            f"kafka_security_protocol={settings.kafka_security_protocol} needs "
            "kafka_sasl_mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)")
    if mechanism == "OAUTHBEARER":
        return {"sasl_mechanism": mechanism, "sasl_oauth_token_provider": token_provider(settings)}
    password = settings.kafka_sasl_password
    if not settings.kafka_sasl_username or password is None:
        raise InvalidArgumentError(
            f"SASL {mechanism} needs kafka_sasl_username and kafka_sasl_password")
    return {"sasl_mechanism": mechanism, "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": password.get_secret_value()}


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of SSL and SASL_SSL: the settings' CA (the system's when none), the
    client certificate for mTLS, hostname verification unless turned off. One per process and
    set of files, so the many clients of a process share it."""
    key_password = settings.kafka_ssl_key_password
    return _context(settings.kafka_ssl_cafile, settings.kafka_ssl_certfile,
                    settings.kafka_ssl_keyfile,
                    None if key_password is None else key_password.get_secret_value(),
                    settings.kafka_ssl_check_hostname)


@lru_cache(maxsize=8)
def _context(cafile: str | None, certfile: str | None, keyfile: str | None,
             key_password: str | None, check_hostname: bool) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=cafile)
        context.check_hostname = check_hostname
        context.verify_mode = ssl.CERT_REQUIRED
        if certfile:
            context.load_cert_chain(certfile, keyfile, key_password)
        elif keyfile:
            raise InvalidArgumentError("kafka_ssl_keyfile needs kafka_ssl_certfile")
    except (OSError, ssl.SSLError) as exc:  # a missing file, a wrong key password
        # Never the password; the files are named by their settings.
        raise InvalidArgumentError(
            f"Kafka TLS settings: {type(exc).__name__}: {exc.strerror or exc} (kafka_ssl_cafile="
            f"{cafile}, kafka_ssl_certfile={certfile}, kafka_ssl_keyfile={keyfile})") from None
    return context


# ---- OAUTHBEARER ---------------------------------------------------------------------
class TokenProvider(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka.abc is untyped
    """aiokafka's OAUTHBEARER hook over an async function that returns a token."""

    def __init__(self, fetch: Callable[[], Awaitable[str]], label: str) -> None:
        self._fetch = fetch
        self.label = label  # for messages: where tokens come from, never a token

    async def token(self) -> str:
        return await self._fetch()


class FileToken:
    """A token kept in a file (a sidecar or a cron job renews it): read again when the file
    changes and when the token read last is about to expire (its JWT ``exp``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._token: str | None = None
        self._mtime_ns = -1
        self._expires = float("inf")

    async def __call__(self) -> str:
        return await asyncio.to_thread(self._current)

    def _current(self) -> str:
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if (self._token is None or mtime != self._mtime_ns
                    or time.time() >= self._expires - _EXPIRY_MARGIN_S):
                with open(self.path, encoding="utf-8") as f:
                    self._token = f.read().strip()
                self._mtime_ns, self._expires = mtime, jwt_expiry(self._token)
        except OSError as exc:
            raise UnavailableError(f"Cannot read the OAUTHBEARER token file "
                                   f"{self.path}: {exc.strerror}") from None
        return self._token


def jwt_expiry(token: str) -> float:
    """The ``exp`` claim of a JWT (read, not verified: the broker verifies), or infinity for
    a token that is not a JWT or carries none."""
    parts = token.split(".")
    if len(parts) != 3:
        return float("inf")
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        return float(claims["exp"])
    except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return float("inf")


def token_provider(settings: Settings) -> TokenProvider:
    """From ``kafka_sasl_oauth_token_file`` or ``kafka_sasl_oauth_token_provider``: a
    ``module:function`` or ``msk-iam``. Modules are imported on a thread at the first token
    (an import reads files); sync functions run on a thread too, since they may call out."""
    path, named = settings.kafka_sasl_oauth_token_file, settings.kafka_sasl_oauth_token_provider
    if (path is None) == (named is None):
        raise InvalidArgumentError(
            "SASL OAUTHBEARER needs exactly one of kafka_sasl_oauth_token_file and "
            "kafka_sasl_oauth_token_provider")
    if path is not None:
        return TokenProvider(FileToken(path), _token_source(settings))
    assert named is not None
    if named == MSK_IAM:
        region = settings.kafka_aws_region
        if not region:
            raise InvalidArgumentError(
                "kafka_sasl_oauth_token_provider=msk-iam needs kafka_aws_region")
        return TokenProvider(partial(asyncio.to_thread, msk_iam_token, region),
                             _token_source(settings))
    resolved: list[Callable[[], Any]] = []

    async def fetch() -> str:
        if not resolved:
            resolved.append(await asyncio.to_thread(_import, named))
        fn = resolved[0]
        token = await fn() if inspect.iscoroutinefunction(fn) else await asyncio.to_thread(fn)
        return str(token)
    return TokenProvider(fetch, _token_source(settings))


def _token_source(settings: Settings) -> str:
    path = settings.kafka_sasl_oauth_token_file
    return f"token file {path}" if path else \
        f"token provider {settings.kafka_sasl_oauth_token_provider}"


def _import(name: str) -> Callable[[], Any]:
    module, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"kafka_sasl_oauth_token_provider={name!r}: {exc} (expected 'module:function')") from None
    if not callable(fn):
        raise InvalidArgumentError(f"kafka_sasl_oauth_token_provider={name!r} is not callable")
    return fn  # type: ignore[no-any-return]


def msk_iam_token(region: str) -> str:
    """AWS MSK IAM: a SigV4-signed token from ``aws-msk-iam-sasl-signer-python``, with the
    credentials of the default AWS chain (environment, profile, instance or pod role)."""
    try:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
    except ImportError:
        raise InvalidArgumentError(
            "kafka_sasl_oauth_token_provider=msk-iam needs the extra: "
            "pip install 'streamer[msk-iam]'") from None
    token, _expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
    return str(token)


# ---- failures ------------------------------------------------------------------------
def describe(settings: Settings) -> str:
    """Where and how a client connects, for messages: no secret."""
    how: str = settings.kafka_security_protocol
    if settings.kafka_sasl_mechanism and how.startswith("SASL_"):
        how += f", SASL {settings.kafka_sasl_mechanism}"
        if settings.kafka_sasl_mechanism == "OAUTHBEARER":
            how += f" from {_token_source(settings)}"
        elif settings.kafka_sasl_username:
            how += f" as {settings.kafka_sasl_username!r}"
    return f"{settings.kafka_bootstrap} ({how})"


async def preflight(settings: Settings) -> None:
    """One connection (TLS handshake, SASL authentication, one request) per bootstrap address
    until one succeeds, each within the request timeout; if none does, ``UnavailableError``
    with each address's cause. The request matters: a broker that refuses an OAUTHBEARER
    token sends an error challenge that aiokafka takes for success, answers the next request
    with an empty frame and closes the connection."""
    kw = {k: v for k, v in client_kwargs(settings).items() if k != "bootstrap_servers"}
    timeout = settings.kafka_request_timeout_s
    causes = []
    for address in (a.strip() for a in settings.kafka_bootstrap.split(",")):
        host, _, port = address.rpartition(":")
        authenticated = False
        try:
            async with asyncio.timeout(timeout):
                conn = AIOKafkaConnection(host.strip("[]"), int(port),
                                          request_timeout_ms=int(timeout * 1000), **kw)
                try:
                    await conn.connect()
                    authenticated = True
                    metadata = await conn.send(MetadataRequest([]))
                finally:
                    await _closed(conn)
                if not metadata.brokers:  # every broker lists itself: this is no answer
                    raise ConnectionError("the broker's answer lists no broker")
            return
        except Exception as exc:  # each address's cause is reported
            causes.append(f"{address}: {_cause(exc, settings, timeout, authenticated)}")
    raise UnavailableError(
        f"Cannot connect to Kafka at {describe(settings)}: {'; '.join(causes)}. Check the "
        f"address, the security protocol, the certificates and the credentials.")


async def _closed(conn: AIOKafkaConnection) -> None:
    """Close and wait until the socket is closed: ``close()`` only starts a TLS shutdown, and a
    loop that ends before it completes leaves the socket to the garbage collector (a
    ResourceWarning in the caller's process; aiokafka's own close on a failed connect is the
    same call)."""
    closing = conn.close()
    if closing is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(closing), CLOSE_WAIT_S)


def _cause(exc: BaseException, settings: Settings, timeout: float, authenticated: bool) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    text = str(exc) or type(exc).__name__
    if not text.startswith(type(exc).__name__):
        text = f"{type(exc).__name__}: {text}"
    if authenticated and settings.kafka_sasl_mechanism == "OAUTHBEARER":
        return ("OAUTHBEARER authentication failed: the broker refused the token (expired, "
                f"malformed or missing a claim it requires) and closed the connection ({text})")
    if "closed" in text.lower() and "SSL" not in settings.kafka_security_protocol:
        text += " (a TLS listener closes plaintext connections: SSL or SASL_SSL?)"
    return text


__all__ = ["MSK_IAM", "FileToken", "TokenProvider", "client_kwargs", "describe", "jwt_expiry",
           "preflight", "ssl_context", "token_provider"]
