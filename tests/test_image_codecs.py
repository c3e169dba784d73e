"""Images on the wire without a broker: the lossless array codecs, encoded files, the limits
checked from headers before any decode, the JSON Schema of both forms, and the embedded
client taking image file bytes."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import jsonschema
import numpy as np
import orjson
import pytest
from PIL import Image
from skimage import data as samples

import streamer
from consumers.embedding.embed import OpenCLIPEmbeddingFunction
from consumers.loading.decode import check_limits, compress_array, to_pixels
from schemas.contracts import GENERATED
from schemas.errors import LimitExceededError, SchemaError
from schemas.events import decode_image, encode_image, parse_write, write_event
from schemas.records import EncodedImage, Op, WriteItem
from streamer.testing.kafka import ROOT


def photo(width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(samples.astronaut()).resize((width, height), Image.Resampling.BICUBIC))


def encode_file(image: np.ndarray, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("array", [
    photo(640, 480),
    photo(33, 17)[:, :, 0],  # greyscale
    np.dstack([photo(20, 10), np.full((10, 20), 7, np.uint8)]),  # RGBA
    np.random.default_rng(0).integers(0, 256, (50, 1, 3), dtype=np.uint8),  # one column
    np.random.default_rng(1).standard_normal((8, 9, 3)).astype(np.float32),
    np.random.default_rng(2).integers(-5, 5, (4, 4), dtype=np.int16),
])
def test_compressed_arrays_come_back_exactly(array: np.ndarray) -> None:
    wire = orjson.loads(orjson.dumps(encode_image(compress_array(array))))
    back = to_pixels(decode_image(wire))
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert wire["codec"] == ("delta-zstd" if array.dtype == np.uint8 and array.shape[1] > 1
                             else "zstd")


def test_photo_arrays_travel_in_a_fraction_of_their_bytes() -> None:
    array = photo(1920, 1080)
    assert len(compress_array(array).data) < 0.5 * array.nbytes


def test_files_decode_as_the_loader_reads_them_and_limits_come_from_headers() -> None:
    array = photo(400, 300)
    for fmt in ("JPEG", "PNG", "WEBP"):
        data = encode_file(array, fmt)
        image = decode_image(orjson.loads(orjson.dumps(encode_image(EncodedImage(data)))))
        assert isinstance(image, EncodedImage) and image.data == data
        np.testing.assert_array_equal(to_pixels(image),
                                      np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        check_limits(image, max_pixels=120_000, max_bytes=len(data), what="ok")
        with pytest.raises(LimitExceededError, match="120000 pixels is over the limit of 119999"):
            check_limits(image, max_pixels=119_999, max_bytes=10**9, what="x")
        with pytest.raises(LimitExceededError, match=f"{len(data)} bytes is over the limit"):
            check_limits(image, max_pixels=10**9, max_bytes=len(data) - 1, what="x")


def test_bombs_and_garbage_are_refused_before_allocation() -> None:
    # A 100k x 100k all-zero image: a few KB as PNG or as a zstd frame, 30 GB decoded.
    tiny = compress_array(np.zeros((64, 64, 3), np.uint8)).data
    bomb = EncodedImage(tiny, codec="delta-zstd", dtype="uint8", shape=(100_000, 100_000, 3))
    with pytest.raises(LimitExceededError, match="10000000000 pixels"):
        check_limits(bomb, max_pixels=40_000_000, max_bytes=1 << 30, what="bomb")
    with pytest.raises(LimitExceededError):
        to_pixels(bomb)
    for side, pixels in ((9_000, "81000000 pixels is over"), (20_000, "400000000 pixels")):
        header = io.BytesIO()
        Image.new("L", (side, side)).save(header, format="PNG")  # ~100 kB per 100 MP
        png = EncodedImage(header.getvalue())
        with pytest.raises(LimitExceededError, match=pixels):
            check_limits(png, max_pixels=40_000_000, max_bytes=1 << 30, what="bomb")
        with pytest.raises(LimitExceededError):
            to_pixels(png, 40_000_000)
    short = EncodedImage(tiny, codec="delta-zstd", dtype="uint8", shape=(64, 64, 4))
    with pytest.raises(SchemaError, match=r"has \d+ bytes for shape"):
        to_pixels(short)
    with pytest.raises(SchemaError, match="not a JPEG/PNG/WEBP"):
        to_pixels(EncodedImage(b"GIF89a but not really"))
    with pytest.raises(SchemaError, match="Unknown image codec"):
        decode_image({"dtype": "uint8", "shape": [1, 1], "codec": "lzma", "b64": ""})
    with pytest.raises(SchemaError, match="only the field 'file'"):
        decode_image({"file": "", "format": "jpeg"})


def test_both_image_forms_are_valid_write_events_in_the_exported_schema() -> None:
    schema = orjson.loads((GENERATED / "write-event.schema.json").read_bytes())
    jpeg = encode_file(photo(64, 48), "JPEG")
    for image in (compress_array(photo(64, 48)), EncodedImage(jpeg), photo(8, 8)):
        event = orjson.loads(orjson.dumps({"v": 1, **write_event(
            Op.ADD, "c", WriteItem(id="x", image=image), 1, 0)}))
        jsonschema.validate(event, schema)
        _, _, item = parse_write(event)
        assert isinstance(item, WriteItem)
        np.testing.assert_array_equal(to_pixels(item.image),  # type: ignore[arg-type]
                                      to_pixels(image))
    jsonschema.validate({"v": 1, "op": "add", "collection": "c", "id": "y",
                         "image": {"file": base64.b64encode(jpeg).decode()}}, schema)


def test_the_embedded_client_takes_image_file_bytes(tmp_path: object) -> None:
    array = photo(320, 240)
    jpeg = encode_file(array, "JPEG", quality=90)
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    client = streamer.Client()
    col = client.create_collection("files", embedding_function=OpenCLIPEmbeddingFunction(
        "streamer-tiny"))
    col.add(ids=["jpeg", "pixels"], images=[jpeg, decoded])
    got = col.get(ids=["jpeg", "pixels"], include=["embeddings"])
    np.testing.assert_allclose(got["embeddings"][0], got["embeddings"][1], atol=1e-6)
    assert col.query(query_images=[jpeg], n_results=1)["ids"][0][0] in {"jpeg", "pixels"}


def test_import_streamer_does_not_load_aiokafka() -> None:
    code = ("import sys, streamer\n"
            "assert 'aiokafka' not in sys.modules, 'aiokafka loaded by import streamer'\n"
            "assert streamer.KafkaClient.__name__ == 'KafkaClient'\n"
            "assert streamer.AsyncKafkaClient.__name__ == 'AsyncKafkaClient'\n"
            "assert 'aiokafka' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
