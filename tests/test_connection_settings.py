"""How clients connect, without a broker: the one place that builds every Kafka client's
security settings (streamer/kafka/security.py) refuses incomplete ones with a typed error,
keeps secrets out of messages and reprs, re-reads an OAUTHBEARER token file when it changes or
expires, signs MSK IAM tokens; and the gateway serves https/wss and guards /metrics and
/healthz with a token."""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import orjson
import pytest

from schemas.errors import InvalidArgumentError
from streamer.kafka.security import (
    FileToken,
    client_kwargs,
    describe,
    jwt_expiry,
    token_provider,
)
from streamer.settings import Settings
from streamer.testing.gateway import ws_client
from streamer.testing.kafka import ROOT
from tests.gateway_helpers import embedded_gateway
from tests.helpers import HashEmbedding


def jwt(exp: float) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()
    return f"{part({'alg': 'none'})}.{part({'sub': 'me', 'exp': exp})}."


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local broker's TLS material, made by the script that makes the broker's."""
    out = tmp_path_factory.mktemp("tls")
    subprocess.run([str(ROOT / "compose/kafka/certs"), str(out)], check=True, timeout=60,
                   capture_output=True)
    return out


@pytest.mark.parametrize(("settings", "message"), [
    ({"kafka_security_protocol": "SASL_SSL"}, "needs kafka_sasl_mechanism"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "SCRAM-SHA-512",
      "kafka_sasl_username": "u"}, "needs kafka_sasl_username and kafka_sasl_password"),
    ({"kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "u", "kafka_sasl_password": "p"},
     "needs a SASL security protocol"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "OAUTHBEARER"},
     "exactly one of kafka_sasl_oauth_token_file and kafka_sasl_oauth_token_provider"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"},
     "No such file.*kafka_ssl_cafile=/nonexistent/ca.pem"),
])
def test_incomplete_settings_are_refused_by_name(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        client_kwargs(Settings(**settings))


def test_protocols_and_mechanisms_are_checked_when_read() -> None:
    wrong: list[dict[str, Any]] = [{"kafka_security_protocol": "TLS"},
                                   {"kafka_sasl_mechanism": "SCRAM-SHA-1"}]
    for given in wrong:
        with pytest.raises(ValueError, match=next(iter(given))):
            Settings(**given)


def test_secrets_stay_out_of_reprs_and_descriptions(tls: Path) -> None:
    given: dict[str, Any] = {  # as the environment or a client's keyword arguments give them
        "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-256",
        "kafka_sasl_username": "alice", "kafka_sasl_password": "pw-123",
        "kafka_ssl_cafile": str(tls / "ca.pem"), "kafka_ssl_certfile": str(tls / "client.pem"),
        "kafka_ssl_keyfile": str(tls / "client-encrypted.key"),
        "kafka_ssl_key_password": "client-key-secret"}
    s = Settings(**given)
    for text in (repr(s), str(s.model_dump()), describe(s)):
        assert "pw-123" not in text and "client-key-secret" not in text
    assert describe(s) == "127.0.0.1:9092 (SASL_SSL, SASL SCRAM-SHA-256 as 'alice')"
    kw = client_kwargs(s)
    assert kw["sasl_plain_password"] == "pw-123" and kw["sasl_mechanism"] == "SCRAM-SHA-256"
    context = kw["ssl_context"]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    wrong = s.model_copy(update={"kafka_ssl_key_password": None})
    with pytest.raises(InvalidArgumentError) as info:  # the encrypted key without its password
        client_kwargs(wrong)
    assert "client-key-secret" not in str(info.value)


async def test_a_token_file_is_read_again_when_it_changes_or_expires(tmp_path: Path) -> None:
    path = tmp_path / "token"

    def write(token: str, mtime_ns: int | None = None) -> None:
        path.write_text(token)
        if mtime_ns is not None:  # the same mtime: only expiry can trigger a re-read
            os.utime(path, ns=(mtime_ns, mtime_ns))

    long_lived, short_lived = jwt(time.time() + 3600), jwt(time.time() + 1)
    write(long_lived)
    source = FileToken(str(path))
    assert await source() == long_lived
    stamp = path.stat().st_mtime_ns
    write(jwt(time.time() + 7200), mtime_ns=stamp)
    assert await source() == long_lived  # unchanged file, unexpired token: no re-read
    write(short_lived, mtime_ns=stamp + 1_000_000)
    assert await source() == short_lived  # the file changed
    renewed = jwt(time.time() + 3600)
    write(renewed, mtime_ns=stamp + 1_000_000)
    assert await source() == renewed  # the token it held is within the expiry margin
    assert jwt_expiry("opaque-token") == float("inf")


async def test_msk_iam_tokens_are_signed_with_the_default_aws_chain(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    provider = token_provider(Settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="OAUTHBEARER",
        kafka_sasl_oauth_token_provider="msk-iam", kafka_aws_region="eu-west-1"))
    token = await provider.token()
    url = urlparse(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
    query = parse_qs(url.query)
    assert url.netloc == "kafka.eu-west-1.amazonaws.com"
    assert query["Action"] == ["kafka-cluster:Connect"]
    assert query["X-Amz-Credential"][0].startswith("AKIDEXAMPLE/")
    with pytest.raises(InvalidArgumentError, match="needs kafka_aws_region"):
        token_provider(Settings(kafka_sasl_oauth_token_provider="msk-iam"))


async def test_a_named_token_provider_that_does_not_exist_is_named() -> None:
    provider = token_provider(Settings(kafka_sasl_oauth_token_provider="no.such.module:token"))
    with pytest.raises(InvalidArgumentError, match=r"no\.such\.module:token.*'module:function'"):
        await provider.token()


async def test_the_gateway_serves_https_and_wss_and_guards_ops(tls: Path, tmp_path: Path) -> None:
    ef = HashEmbedding()
    async with embedded_gateway(tmp_path / "gw", ef, http_tls_certfile=str(tls / "broker.pem"),
                                http_tls_keyfile=str(tls / "broker.key"),
                                ops_token="ops-secret") as (_, gateway):
        assert gateway.url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(tls / "ca.pem"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusted)) as http:
            async with http.get(f"{gateway.url}/metrics") as r:
                assert r.status == 401
            async with http.get(f"{gateway.url}/healthz",
                                headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401
            ops = {"Authorization": "Bearer ops-secret"}
            async with http.get(f"{gateway.url}/metrics", headers=ops) as r:
                assert r.status == 200 and "streamer_" in await r.text()
            async with http.get(f"{gateway.url}/healthz", headers=ops) as r:
                assert r.status == 200
            async with http.get(f"{gateway.url}/readyz") as r:
                assert r.status == 200  # open: load balancers probe it
            async with ws_client(gateway.url.replace("https", "wss"), session=http) as ws:
                cid = (await ws.result({"op": "create_collection", "name": "tls"}))["id"]
                await ws.result({"op": "add", "collection": cid, "id": "a", "document": "x"})
                assert await ws.result({"op": "count", "collection": cid}) == 1
        untrusting = ssl.create_default_context(cafile=str(tls / "other-ca.pem"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=untrusting)) as http:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(f"{gateway.url}/readyz")
