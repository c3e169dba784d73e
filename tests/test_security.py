"""No one gets in: the data loader never reads outside its roots (through the collection API
and through the Kafka service, whose loader is built from the collection spec and confined by
the server's own ``data_roots``), http(s) URIs are refused, and Kafka SASL/PLAIN settings pass
through to every client (tested against the local broker's SASL listener)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import streamer
from consumers.embedding.embed import OpenCLIPEmbeddingFunction
from consumers.loading.load import ImageLoader
from streamer.errors import (
    DataLoaderError,
    EmbeddingError,
    UnavailableError,
    URINotAllowedError,
    URIOutsideRootsError,
)
from streamer.kafka.client import KafkaClient
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess, ensure_broker, new_prefix, refused_start
from tests.helpers import HashEmbedding, random_image, write_png

SASL_BOOTSTRAP = "127.0.0.1:9094"
SASL = {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN",
        "kafka_sasl_username": "streamer", "kafka_sasl_password": "streamer-secret"}


@dataclass
class Tree:
    root: Path  # the loader's root
    inside: str  # a PNG under it
    secret: Path  # a valid PNG outside it: any successful read of it is a breach


def make_tree(base: Path) -> Tree:
    root, outside = base / "root", base / "outside"
    root.mkdir(parents=True)
    outside.mkdir()
    inside = write_png(root / "ok.png", random_image(1))
    secret = Path(write_png(outside / "secret.png", random_image(2)))
    (root / "link.png").symlink_to(secret)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    return Tree(root, inside, secret)


def attacks(t: Tree) -> dict[str, str]:
    root, secret = t.root, t.secret
    return {
        "dot-dot": f"{root}/../outside/secret.png",
        "absolute path": str(secret),
        "symlinked file": str(root / "link.png"),
        "symlinked directory": f"{root}/escape/secret.png",
        "file URI": f"file://{secret}",
        "file URI, localhost": f"file://localhost{secret}",
        "file URI, dot-dot": f"file://{root}/../outside/secret.png",
        "file URI, percent-encoded dot-dot": f"file://{root}/%2e%2e/outside/secret.png",
        "file URI, percent-encoded slashes": f"file://{root}/..%2Foutside%2Fsecret.png",
        "file URI, remote host": f"file://evil.example{secret}",
        "file: without slashes": f"file:{root}/../outside/secret.png",
        "path, percent-encoded dot-dot": f"{root}/%2e%2e/outside/secret.png",
        "NUL byte": f"{root}/ok.png\x00/../../outside/secret.png",
        "file URI, percent-encoded NUL": f"file://{root}/ok.png%00/../../outside/secret.png",
        "http": "http://127.0.0.1:9/secret.png",
        "https": f"https://example.com{secret}",
    }


ATTACKS = list(attacks(Tree(Path("/r"), "", Path("/s"))))


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return make_tree(tmp_path)


@pytest.mark.parametrize("attack", ATTACKS)
def test_the_collection_api_never_loads_outside_the_roots(tree: Tree, attack: str) -> None:
    uri = attacks(tree)[attack]
    with streamer.Client() as client:
        col = client.create_collection("guarded", embedding_function=HashEmbedding(),
                                       data_loader=ImageLoader(roots=[tree.root]))
        with pytest.raises(DataLoaderError) as refused:
            col.add(ids=["x"], uris=[uri])
        with pytest.raises(DataLoaderError):
            col.query(query_uris=[uri], n_results=1)
        assert col.count() == 0
        col.add(ids=["ok"], uris=[tree.inside])  # the root itself still works
        assert col.get(include=["uris"])["uris"] == [tree.inside]
    if attack.startswith("http"):
        assert isinstance(refused.value, URINotAllowedError)  # remote URIs are off until allowed


def test_outside_the_roots_is_a_permission_error(tree: Tree) -> None:
    loader = ImageLoader(roots=[tree.root])
    for attack in ("dot-dot", "symlinked file", "symlinked directory", "file URI, percent-encoded dot-dot"):
        with pytest.raises(URIOutsideRootsError, match="outside the data loader's roots"):
            loader([attacks(tree)[attack]])


# ---- the same through `streamer serve`: its loader is rebuilt from the collection spec -------
@dataclass
class Served:
    svc: ServiceProcess
    tree: Tree
    confined: Path  # the server's STREAMER_DATA_ROOTS


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    ensure_broker()
    base = tmp_path_factory.mktemp("security")
    tree = make_tree(base / "data")
    svc = ServiceProcess(new_prefix(), base / "svc", instance="sec",
                         extra_env={"STREAMER_DATA_ROOTS": str(base / "data")})
    svc.start()
    try:
        yield Served(svc, tree, base / "data")
    finally:
        svc.kill()


def _server_side(client: streamer.Client, name: str, loader: ImageLoader) -> streamer.Collection:
    # A built-in embedding function and loader run in the service, not in this client.
    ef = OpenCLIPEmbeddingFunction("streamer-tiny")
    return client.get_or_create_collection(name, embedding_function=ef, data_loader=loader)


def _loaded_fine(col: streamer.Collection, id_: str, uri: str) -> None:
    """The server read the file: the write succeeds, or fails later than loading (no model
    checkpoint in this checkout)."""
    with contextlib.suppress(EmbeddingError):
        col.add(ids=[id_], uris=[uri])


@pytest.mark.kafka
def test_the_service_never_loads_outside_the_collection_roots(served: Served) -> None:
    tree = served.tree
    with KafkaClient(BOOTSTRAP, kafka_topic_prefix=served.svc.prefix, wait_writes=True) as client:
        col = _server_side(client, "guarded", ImageLoader(roots=[tree.root]))
        refusals = {}
        for attack, uri in attacks(tree).items():
            with pytest.raises(DataLoaderError) as refused:
                col.add(ids=["x"], uris=[uri])
            refusals[attack] = refused.value
            with pytest.raises(DataLoaderError):
                col.query(query_uris=[uri], n_results=1)
        assert col.count() == 0
        assert isinstance(refusals["symlinked file"], URIOutsideRootsError)
        assert isinstance(refusals["https"], URINotAllowedError)
        _loaded_fine(col, "ok", tree.inside)


@pytest.mark.kafka
def test_the_server_confines_loaders_whatever_roots_the_spec_names(served: Served) -> None:
    """A client writes the collection spec, so its roots cannot be what the server trusts:
    with STREAMER_DATA_ROOTS the service's loader reads only under the server's roots."""
    tree = served.tree
    outside = served.confined.parent / "elsewhere.png"
    write_png(outside, random_image(3))
    with KafkaClient(BOOTSTRAP, kafka_topic_prefix=served.svc.prefix, wait_writes=True) as client:
        for name, loader in (("unrooted", ImageLoader()), ("rooted-at-slash", ImageLoader(roots=["/"]))):
            col = _server_side(client, name, loader)
            with pytest.raises(URIOutsideRootsError, match="outside the data loader's roots"):
                col.add(ids=["x"], uris=[str(outside)])
            assert col.count() == 0
            _loaded_fine(col, "ok", tree.inside)


# ---- Kafka SASL/PLAIN ------------------------------------------------------------------------
@pytest.mark.kafka
def test_sasl_plain_end_to_end_and_a_wrong_password_fails_fast(tmp_path: Path) -> None:
    ensure_broker()
    prefix = new_prefix()
    env = {f"STREAMER_{k.upper()}": v for k, v in SASL.items()}
    svc = ServiceProcess(prefix, tmp_path / "svc", instance="sasl",
                         extra_env={**env, "STREAMER_KAFKA_BOOTSTRAP": SASL_BOOTSTRAP})
    svc.start()
    try:
        with KafkaClient(SASL_BOOTSTRAP, kafka_topic_prefix=prefix, wait_writes=True, **SASL) as client:
            col = client.create_collection("sasl", embedding_function=None)
            vecs = np.eye(4, dtype=np.float32)
            col.add(ids=list("abcd"), embeddings=vecs, documents=list("ABCD"))
            assert col.query(query_embeddings=[vecs[2]], n_results=1)["documents"] == [["C"]]
        started = time.monotonic()
        with pytest.raises(UnavailableError, match=r"SASL PLAIN as 'streamer'.*credentials"):
            KafkaClient(SASL_BOOTSTRAP, kafka_topic_prefix=prefix,
                        **{**SASL, "kafka_sasl_password": "wrong"})
        assert time.monotonic() - started < 30
    finally:
        svc.kill()
    # The service with a wrong password exits with the reason instead of hanging.
    log = refused_start(ServiceProcess(prefix, tmp_path / "bad", instance="sasl-bad", extra_env={
        **env, "STREAMER_KAFKA_BOOTSTRAP": SASL_BOOTSTRAP, "STREAMER_KAFKA_SASL_PASSWORD": "wrong"}))
    assert "SaslAuthenticationFailed" in log

