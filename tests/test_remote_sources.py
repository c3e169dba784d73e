"""The shipped S3 mapping end to end with no mount: real photos in a real S3 server (moto, on
loopback), S3-format ObjectCreated notifications on a Kafka topic, a real ``streamer serve
--source compose/sources/s3-object-created.toml`` that reads the objects by ``s3://`` URI.
Failing objects (missing, not an image, too big, outside the allowed prefix) are dead-lettered
with their reason while the rest is applied; overwritten objects re-embed, repeats of an
unchanged object do not; ``query_uris`` and ``include=["data"]`` read through the same loader."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import numpy as np
import orjson
import pytest
from PIL import Image

from consumers.loading.load import ImageLoader
from streamer.cli.demo import has_trained_checkpoint, random_checkpoint
from streamer.kafka.client import KafkaClient
from streamer.testing.images import photo_files
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess, ensure_broker, new_prefix
from streamer.testing.servers import moto_s3
from tests.test_sources import _create_topics, dead_letters, mapping_copy, produce, wait_for_state

pytestmark = pytest.mark.kafka

BUCKET = "catalog"
SECRET = "s3cr3t-4e7a9-never-shown"  # the S3 secret key: must appear in no reply, letter or log


@dataclass
class World:
    prefix: str
    topic: str
    s3: Any  # a boto3 S3 client: uploads go through a second, independent S3 implementation
    photos: dict[str, bytes]
    client: KafkaClient
    svc: ServiceProcess
    endpoint: str


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def notification(world: World, key: str, *, head: dict[str, Any] | None = None,
                 when: str = "2026-11-30T10:00:00.000Z") -> bytes:
    """An AWS S3 event notification for ``key``, from the object's real HEAD when it exists."""
    head = head or world.s3.head_object(Bucket=BUCKET, Key=key)
    obj: dict[str, Any] = {"key": quote_plus(key, safe="/"), "size": head["ContentLength"],
                           "eTag": head["ETag"].strip('"'), "sequencer": f"{time.time_ns():X}"}
    if head.get("VersionId"):
        obj["versionId"] = head["VersionId"]
    record = {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
              "eventTime": when, "eventName": "ObjectCreated:Put",
              "s3": {"s3SchemaVersion": "1.0", "configurationId": "images",
                     "bucket": {"name": BUCKET, "arn": f"arn:aws:s3:::{BUCKET}"}, "object": obj}}
    return orjson.dumps({"Records": [record]})


def send(world: World, *events: tuple[str, bytes]) -> list[tuple[int, int]]:
    return produce(world.topic, [(key.encode(), value, []) for key, value in events])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    import boto3

    ensure_broker()
    tmp = tmp_path_factory.mktemp("remote-sources")
    prefix = new_prefix()
    topic = f"{prefix}.up.s3"
    asyncio.run(_create_topics({topic: 2}))
    checkpoint = None if has_trained_checkpoint() else str(random_checkpoint(tmp))
    mapping = mapping_copy(tmp, "s3-object-created", {"topic": topic}, checkpoint)
    photos = {f"products/photo {Path(p).stem}{Path(p).suffix}": Path(p).read_bytes()
              for p in photo_files(8, tmp / "photos")}
    with moto_s3() as endpoint:
        creds = {"AWS_ACCESS_KEY_ID": "AKIATESTING", "AWS_SECRET_ACCESS_KEY": SECRET,
                 "AWS_REGION": "us-east-1"}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=SECRET)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        for key, body in photos.items():
            s3.put_object(Bucket=BUCKET, Key=key, Body=body, ContentType="image/jpeg")
        svc = ServiceProcess(prefix, tmp / "svc", args=["--source", str(mapping)], extra_env={
            **creds,
            # Only products/ may be read; the endpoint is the server's, never the spec's.
            "STREAMER_REMOTE_ALLOW": f"s3://{BUCKET}/products/",
            "STREAMER_REMOTE_STORES": orjson.dumps({"s3": {
                "endpoint": endpoint, "region": "us-east-1", "allow_http": "true"}}).decode(),
            "STREAMER_REMOTE_TIMEOUT_S": "5", "STREAMER_REMOTE_RETRIES": "1",
            "STREAMER_MAX_IMAGE_BYTES": str(2 << 20)})
        svc.start()
        # The client reads include=["data"] itself (as Chroma's does) with its own loader;
        # credentials come from the environment, as for any S3 client.
        saved = {k: os.environ.get(k) for k in creds}
        os.environ.update(creds)
        client = KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix)
        try:
            yield World(prefix, topic, s3, photos, client, svc, endpoint)
        finally:
            client.close()
            svc.kill()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def expected(world: World, keys: list[str]) -> dict[str, tuple[Any, Any, Any]]:
    out = {}
    for key in keys:
        head = world.s3.head_object(Bucket=BUCKET, Key=key)
        out[f"{BUCKET}/{key}"] = (None, f"s3://{BUCKET}/{key}", {
            "bucket": BUCKET, "key": key, "size": head["ContentLength"],
            "etag": head["ETag"].strip('"'), "version_id": head["VersionId"],
            "event_time": "2026-11-30T10:00:00.000Z"})
    return out


def test_notifications_index_objects_from_s3_and_failures_are_dead_lettered(world: World) -> None:
    s3 = world.s3
    s3.put_object(Bucket=BUCKET, Key="products/notes.jpg", Body=b"plain text, not a JPEG" * 50)
    s3.put_object(Bucket=BUCKET, Key="products/huge.jpg", Body=os.urandom(3 << 20))
    s3.put_object(Bucket=BUCKET, Key="private/payroll.jpg", Body=next(iter(world.photos.values())))
    gone = {"ContentLength": 1234, "ETag": '"0cc175b9c0f1b6a831c399e269772661"'}
    keys = list(world.photos)
    bad = {"products/never uploaded.jpg": "fetch_failed", "products/notes.jpg": "data_loader",
           "products/huge.jpg": "limit_exceeded", "private/payroll.jpg": "uri_not_allowed"}
    events = [(k, notification(world, k)) for k in keys[:4]]
    events += [(k, notification(world, k, head=gone if k.startswith("products/never") else None))
               for k in bad]
    events += [(k, notification(world, k)) for k in keys[4:]]
    offsets = send(world, *events)
    wait_for_state(world.client, "s3-images", expected(world, keys))

    origins = {f"{world.topic}:{p}:{o}": key for (key, _), (p, o) in zip(events, offsets)
               if key in bad}
    dead = dead_letters(world.prefix, lambda seen: origins.keys() <= {d.get("origin") for d in seen})
    letters = {origins[d["origin"]]: d for d in dead if d.get("origin") in origins}
    assert {k: d["code"] for k, d in letters.items()} == bad
    assert "not found" in letters["products/never uploaded.jpg"]["reason"]
    assert "not an image" in letters["products/notes.jpg"]["reason"]
    assert "over the limit" in letters["products/huge.jpg"]["reason"]
    assert "not under an allowed prefix" in letters["private/payroll.jpg"]["reason"]
    assert all(SECRET not in str(d) for d in dead)

    col = world.client.get_collection("s3-images")
    key = keys[2]
    # query_uris goes through the server's loader; include=["data"] through the client's.
    res = col.query(query_uris=[f"s3://{BUCKET}/{key}"], n_results=1, include=["distances"])
    assert res["ids"][0][0] == f"{BUCKET}/{key}" and res["distances"][0][0] < 1e-4
    loader = col.data_loader  # rebuilt from the spec: an ImageLoader, the one built-in loader
    spec = repr(loader.get_config()) if isinstance(loader, ImageLoader) else ""
    assert "s3://" in spec and SECRET not in spec
    mine = ImageLoader(remote={"allow": [f"s3://{BUCKET}/"], "stores": {"s3": {
        "endpoint": world.endpoint, "region": "us-east-1", "allow_http": "true"}}})
    col = world.client.get_collection("s3-images", data_loader=mine)
    got = col.get(ids=[f"{BUCKET}/{key}"], include=["data", "uris"])
    assert np.array_equal(got["data"][0], pixels(world.photos[key]))
    assert world.svc.log_path is not None and SECRET not in world.svc.log_path.read_text()


def vector(world: World, id_: str) -> np.ndarray:
    got = world.client.get_collection("s3-images").get(ids=[id_], include=["embeddings"])
    return np.asarray(got["embeddings"][0])


def wait_metadata(world: World, id_: str, want: dict[str, Any], timeout: float = 90) -> None:
    col = world.client.get_collection("s3-images")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = col.get(ids=[id_], include=["metadatas"])["metadatas"]
        if meta and all(meta[0].get(k) == v for k, v in want.items()):
            return
        time.sleep(0.3)
    raise AssertionError(f"{id_} never got {want}")


def test_an_overwritten_object_is_re_embedded_and_an_unchanged_one_is_not(world: World) -> None:
    keys = list(world.photos)
    key, id_ = keys[0], f"{BUCKET}/{keys[0]}"
    send(world, *[(k, notification(world, k)) for k in keys[:3]])
    for k in keys[:3]:
        wait_metadata(world, f"{BUCKET}/{k}", {
            "etag": world.s3.head_object(Bucket=BUCKET, Key=k)["ETag"].strip('"')})
    first = vector(world, id_)
    # Overwrite with another photo: a new ETag and version, so it is fetched and embedded.
    world.s3.put_object(Bucket=BUCKET, Key=key, Body=world.photos[keys[1]])
    second_head = world.s3.head_object(Bucket=BUCKET, Key=key)
    send(world, (key, notification(world, key, when="2026-11-30T11:00:00.000Z")))
    wait_metadata(world, id_, {"event_time": "2026-11-30T11:00:00.000Z",
                               "etag": second_head["ETag"].strip('"')})
    second = vector(world, id_)
    assert not np.allclose(first, second, atol=1e-3)
    assert np.allclose(second, vector(world, f"{BUCKET}/{keys[1]}"), atol=1e-3)
    # The object changes again but a repeat of the last notification arrives (same ETag and
    # version): the stored vector is kept, nothing is fetched; the event's metadata applies.
    world.s3.put_object(Bucket=BUCKET, Key=key, Body=world.photos[keys[2]])
    send(world, (key, notification(world, key, head=second_head,
                                    when="2026-11-30T12:00:00.000Z")))
    wait_metadata(world, id_, {"event_time": "2026-11-30T12:00:00.000Z"})
    assert np.allclose(vector(world, id_), second, atol=1e-3)
    # Its own notification then re-embeds it.
    send(world, (key, notification(world, key, when="2026-11-30T13:00:00.000Z")))
    wait_metadata(world, id_, {"event_time": "2026-11-30T13:00:00.000Z"})
    assert np.allclose(vector(world, id_), vector(world, f"{BUCKET}/{keys[2]}"), atol=1e-3)
