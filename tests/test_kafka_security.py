"""Managed Kafka's listeners on the real broker (compose/kafka/start: SSL, SSL with client
certificates, SASL_SSL with PLAIN, SCRAM-SHA-512 and OAUTHBEARER, SASL_PLAINTEXT with
SCRAM-SHA-256): the same end-to-end script through ``streamer serve`` and a separate
``KafkaClient`` on each, a crash loop on SASL_SSL, and each misconfiguration as a typed
``UnavailableError`` within the request timeout that names address, protocol and mechanism
and no secret."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamer.errors import UnavailableError
from streamer.kafka.client import KafkaClient
from streamer.testing.gateway import TOKENS, ws_client
from streamer.testing.kafka import (
    BOOTSTRAP,
    KillLoop,
    ServiceProcess,
    ensure_broker,
    new_prefix,
    refused_start,
    starter,
)
from streamer.testing.servers import free_port
from tests.helpers import random_image, write_png
from tests.test_fencing import assert_same_state, expected_state, tiny, warm_collection
from tests.test_reliability import crash_workload, full_state

pytestmark = pytest.mark.kafka

_DATA = Path(os.environ.get("STREAMER_KAFKA_DATA") or Path(
    os.environ.get("STREAMER_KAFKA_HOME") or Path.home() / ".cache/streamer/kafka") / "data")
TLS = Path(os.environ.get("STREAMER_KAFKA_TLS") or _DATA / "tls")  # compose/kafka/certs
USER, PASSWORD = "streamer", "streamer-secret"
KEY_PASSWORD = "client-key-secret"
TIMEOUT_S = 10.0  # the request timeout of the misconfigured clients


def port(name: str, default: int) -> str:
    return f"127.0.0.1:{os.environ.get(f'STREAMER_KAFKA_{name}_PORT', default)}"


SSL_ADDR, MTLS_ADDR = port("SSL", 9095), port("MTLS", 9096)
SASL_SSL_ADDR, WRONGHOST_ADDR = port("SASL_SSL", 9097), port("WRONGHOST", 9098)
SASL_PLAINTEXT_ADDR = port("SASL", 9094)


def unsecured_jwt(sub: str | None = USER, exp_in_s: float = 3600) -> str:
    """A token for Kafka's unsecured validator: alg none, no signature."""
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()
    now = time.time()
    claims: dict[str, Any] = {"iat": int(now) - 5, "exp": int(now + exp_in_s)}
    if sub is not None:
        claims["sub"] = sub
    return f"{part({'alg': 'none'})}.{part(claims)}."


def fresh_token() -> str:
    """A named token provider (kafka_sasl_oauth_token_provider=module:function)."""
    return unsecured_jwt()


def token_file(tmp: Path, token: str) -> str:
    path = tmp / f"token-{random.randrange(1 << 30)}"
    path.write_text(token)
    return str(path)


def listener(name: str, tmp: Path) -> tuple[str, dict[str, Any]]:
    """Bootstrap address and settings of each listener the issue lists."""
    tls = {"kafka_ssl_cafile": str(TLS / "ca.pem")}
    sasl = {"kafka_sasl_username": USER, "kafka_sasl_password": PASSWORD}
    return {
        "SSL": (SSL_ADDR, {"kafka_security_protocol": "SSL", **tls}),
        "SSL mTLS": (MTLS_ADDR, {"kafka_security_protocol": "SSL", **tls,
                                 "kafka_ssl_certfile": str(TLS / "client.pem"),
                                 "kafka_ssl_keyfile": str(TLS / "client-encrypted.key"),
                                 "kafka_ssl_key_password": KEY_PASSWORD}),
        "SASL_SSL PLAIN": (SASL_SSL_ADDR, {"kafka_security_protocol": "SASL_SSL", **tls,
                                           "kafka_sasl_mechanism": "PLAIN", **sasl}),
        "SASL_SSL SCRAM-SHA-512": (SASL_SSL_ADDR, {
            "kafka_security_protocol": "SASL_SSL", **tls,
            "kafka_sasl_mechanism": "SCRAM-SHA-512", **sasl}),
        "SASL_PLAINTEXT SCRAM-SHA-256": (SASL_PLAINTEXT_ADDR, {
            "kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "SCRAM-SHA-256",
            **sasl}),
        "SASL_SSL OAUTHBEARER": (SASL_SSL_ADDR, {
            "kafka_security_protocol": "SASL_SSL", **tls, "kafka_sasl_mechanism": "OAUTHBEARER",
            "kafka_sasl_oauth_token_file": token_file(tmp, unsecured_jwt())}),
    }[name]


LISTENERS = ["SSL", "SSL mTLS", "SASL_SSL PLAIN", "SASL_SSL SCRAM-SHA-512",
             "SASL_PLAINTEXT SCRAM-SHA-256", "SASL_SSL OAUTHBEARER"]


def env_of(bootstrap: str, settings: dict[str, Any]) -> dict[str, str]:
    return {"STREAMER_KAFKA_BOOTSTRAP": bootstrap,
            **{f"STREAMER_{k.upper()}": str(v) for k, v in settings.items()}}


@pytest.fixture
def services() -> Iterator[list[ServiceProcess]]:
    ensure_broker()
    started: list[ServiceProcess] = []
    yield started
    for svc in started:
        svc.kill()


# ---- the same script on every listener ----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", LISTENERS)
def test_the_end_to_end_script_on_each_listener(name: str, tmp_path: Path,
                                                services: list[ServiceProcess]) -> None:
    bootstrap, settings = listener(name, tmp_path)
    root = tmp_path / "images"
    root.mkdir()
    uri = write_png(root / "red.png", random_image(7, size=32))
    prefix = new_prefix()
    svc = ServiceProcess(prefix, tmp_path / "svc", instance="tls", extra_env={
        **env_of(bootstrap, settings), "STREAMER_HTTP_PORT": str(free_port()),
        "STREAMER_AUTH_TOKENS": TOKENS, "STREAMER_DATA_ROOTS": str(root)})
    svc.start()
    services.append(svc)
    with KafkaClient(bootstrap, kafka_topic_prefix=prefix, **settings) as client:
        col = warm_collection(client, "secure", root)
        image = random_image(11, size=24)
        col.add(ids=["doc"], documents=["a lighthouse on a cliff at dusk"])
        col.add(ids=["img"], images=[image], metadatas=[{"kind": "array"}])
        col.add(ids=["uri"], uris=[uri])
        assert col.count() == 3
        hit = col.query(query_texts=["a lighthouse on a cliff at dusk"], n_results=1,
                        include=["documents"])
        assert hit["ids"] == [["doc"]] and hit["documents"] == [["a lighthouse on a cliff at dusk"]]
        assert col.query(query_images=[image], n_results=1)["ids"] == [["img"]]
        got = col.get(ids=["uri", "img"], include=["uris", "metadatas"])
        assert dict(zip(got["ids"], got["uris"], strict=True)) == {"uri": uri, "img": None}
        assert got["metadatas"][got["ids"].index("img")] == {"kind": "array"}
        cid = col.id
    assert svc.url is not None
    asyncio.run(_live(svc.url, str(cid)))


async def _live(url: str, cid: str) -> None:
    """A live subscription in the gateway of the service on this listener: its replica reads
    the state topic over the same protocol."""
    async with ws_client(url) as ws:
        sub = await ws.result({"op": "subscribe", "collection": cid, "texts": ["a red kite"],
                               "top_k": 1, "include": ["documents"]})
        await ws.result({"op": "add", "collection": cid, "id": "kite", "document": "a red kite"})
        push = await asyncio.wait_for(ws.pushes.get(), 60)
        assert (push["subscription"], push["id"]) == (sub["subscription"], "kite")


# ---- exactly once across SIGKILLs, on SASL_SSL --------------------------------------------
@pytest.mark.slow
def test_sigkill_loop_mid_ingest_on_sasl_ssl_gives_the_exact_state(
        tmp_path: Path, services: list[ServiceProcess]) -> None:
    bootstrap, settings = listener("SASL_SSL SCRAM-SHA-512", tmp_path)
    prefix = new_prefix()
    root = tmp_path / "images"
    root.mkdir()
    uris = [write_png(root / f"p{i}.png", random_image(3000 + i, size=12)) for i in range(12)]
    calls = crash_workload(600, uris, seed=31, dim=len(tiny()(["probe"])[0]))
    want = expected_state(calls, root, "crash-tls")
    env = {**env_of(bootstrap, settings), "STREAMER_BATCH_MAX_ITEMS": "16",
           "STREAMER_DATA_ROOTS": str(root)}

    start = starter(services, prefix, tmp_path / "svc", "crash-tls", env)
    loop = KillLoop(start, times=4, seed=37)  # the service starts; the kills wait for `with`
    with KafkaClient(bootstrap, kafka_topic_prefix=prefix, kafka_request_timeout_s=240,
                     **settings) as client:
        col = warm_collection(client, "crash-tls", root)
        with loop:
            for kind, kwargs in calls:  # acknowledged by Kafka (acks=all)
                getattr(col, kind)(**kwargs)
            assert loop.done(timeout=300) == 4
        got = full_state(col)  # session consistency: once every write is applied
    assert_same_state(got, want)


# ---- misconfigurations: typed, fast, named, no secret ---------------------------------------
def misconfigured(tmp: Path) -> dict[str, tuple[str, dict[str, Any], str]]:
    """case -> (bootstrap, settings, what the message must say)."""
    ca = {"kafka_ssl_cafile": str(TLS / "ca.pem")}
    scram = {"kafka_security_protocol": "SASL_SSL", **ca, "kafka_sasl_mechanism": "SCRAM-SHA-512",
             "kafka_sasl_username": USER}
    oauth = {"kafka_security_protocol": "SASL_SSL", **ca, "kafka_sasl_mechanism": "OAUTHBEARER"}
    return {
        "wrong CA": (SSL_ADDR, {"kafka_security_protocol": "SSL",
                                "kafka_ssl_cafile": str(TLS / "other-ca.pem")},
                     "certificate verify failed|unable to get local issuer"),
        "wrong host name": (WRONGHOST_ADDR, {"kafka_security_protocol": "SSL", **ca},
                            "mismatch|not valid for"),
        "no client certificate on mTLS": (MTLS_ADDR, {"kafka_security_protocol": "SSL", **ca},
                                          "certificate|TLS|closed"),
        "wrong password": (SASL_SSL_ADDR, {**scram, "kafka_sasl_password": "not-the-password"},
                           "Authentication failed|SaslAuthenticationFailed"),
        "expired token": (SASL_SSL_ADDR, {**oauth, "kafka_sasl_oauth_token_file": token_file(
            tmp, unsecured_jwt(exp_in_s=-60))}, "authentication failed: the broker refused the token"),
        "refused token": (SASL_SSL_ADDR, {**oauth, "kafka_sasl_oauth_token_file": token_file(
            tmp, "not-a-token")}, "authentication failed: the broker refused the token"),
        "plaintext client on a TLS port": (SSL_ADDR, {}, "closed|Connection|reset"),
        "TLS client on a plaintext port": (BOOTSTRAP, {"kafka_security_protocol": "SSL", **ca},
                                           "TLS|SSL|closed|no answer"),
    }


CASES = ["wrong CA", "wrong host name", "no client certificate on mTLS", "wrong password",
         "expired token", "refused token", "plaintext client on a TLS port",
         "TLS client on a plaintext port"]
SECRETS = ("not-the-password", PASSWORD, KEY_PASSWORD)


@pytest.mark.parametrize("case", CASES)
def test_a_misconfigured_client_fails_fast_typed_and_named(case: str, tmp_path: Path) -> None:
    ensure_broker()
    cases = misconfigured(tmp_path)
    assert list(cases) == CASES
    bootstrap, settings, why = cases[case]
    started = time.monotonic()
    with pytest.raises(UnavailableError, match=why) as info:
        KafkaClient(bootstrap, kafka_topic_prefix=new_prefix(), kafka_request_timeout_s=TIMEOUT_S,
                    **settings)
    took = time.monotonic() - started
    assert took < TIMEOUT_S, f"{case}: {took:.1f} s"
    message = str(info.value)
    protocol = settings.get("kafka_security_protocol", "PLAINTEXT")
    assert f"Cannot connect to Kafka at {bootstrap} ({protocol}" in message
    if "kafka_sasl_mechanism" in settings:
        assert f"SASL {settings['kafka_sasl_mechanism']}" in message
    assert info.value.retriable and info.value.code == "unavailable"
    for secret in (*SECRETS, *_tokens_of(settings)):
        assert secret not in message


def _tokens_of(settings: dict[str, Any]) -> list[str]:
    path = settings.get("kafka_sasl_oauth_token_file")
    return [Path(path).read_text()] if path else []


def connected(client_of: Any) -> None:
    """The client got past Kafka (TLS, SASL, the readers-group check over the admin API) to
    the service layer: with no service running, a read says so."""
    with client_of() as client, pytest.raises(UnavailableError, match="No streamer service reads"):
        client.list_collections()


def test_hostname_verification_is_what_refuses_the_wrong_host() -> None:
    """The control for "wrong host name": the same certificate passes with the check off."""
    ensure_broker()
    connected(lambda: KafkaClient(
        WRONGHOST_ADDR, kafka_topic_prefix=new_prefix(), kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(TLS / "ca.pem"), kafka_ssl_check_hostname=False,
        kafka_request_timeout_s=5))


def test_streamer_serve_exits_with_the_reason_and_no_secret(tmp_path: Path) -> None:
    ensure_broker()
    settings = {"kafka_security_protocol": "SASL_SSL", "kafka_ssl_cafile": str(TLS / "ca.pem"),
                "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": USER,
                "kafka_sasl_password": "not-the-password", "kafka_request_timeout_s": TIMEOUT_S}
    log = refused_start(ServiceProcess(new_prefix(), tmp_path / "bad", instance="bad-scram", extra_env={
        **env_of(SASL_SSL_ADDR, settings), "STREAMER_LOG_LEVEL": "INFO"}))
    assert (f"streamer serve: error: Cannot connect to Kafka at {SASL_SSL_ADDR} (SASL_SSL, "
            f"SASL SCRAM-SHA-512 as 'streamer')") in log
    assert "Authentication failed" in log
    assert "not-the-password" not in log


def test_a_token_provider_named_in_the_settings() -> None:
    ensure_broker()
    connected(lambda: KafkaClient(
        SASL_SSL_ADDR, kafka_topic_prefix=new_prefix(), kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=str(TLS / "ca.pem"), kafka_sasl_mechanism="OAUTHBEARER",
        kafka_sasl_oauth_token_provider="tests.test_kafka_security:fresh_token",
        kafka_request_timeout_s=5))


def test_the_ca_file_names_the_broker_certificate_issuer() -> None:
    """The fixture itself: the broker presents a certificate the CA signed, for 127.0.0.1."""
    ensure_broker()
    context = ssl.create_default_context(cafile=str(TLS / "ca.pem"))
    host, port_ = SSL_ADDR.rsplit(":", 1)
    with socket.create_connection((host, int(port_)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        cert = tls.getpeercert()
    assert cert is not None
    assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]
