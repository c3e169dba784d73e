"""The Python side of the TypeScript client's tests (clients/typescript/test/): one call of
the Python Kafka client, given as JSON on argv, printed as JSON. The node tests run it to
produce records and to compare query results with the Python client's."""

from __future__ import annotations

import asyncio
import base64
import sys
from typing import Any

import numpy as np
import orjson
from PIL import Image

from streamer.kafka.client import AsyncKafkaClient


def _image(obj: dict[str, Any]) -> np.ndarray:
    """Raw pixels ({shape, b64}) or a file ({path}) decoded here, as an RGB array."""
    if "path" in obj:
        with Image.open(obj["path"]) as img:
            return np.asarray(img.convert("RGB"))
    return np.frombuffer(base64.b64decode(obj["b64"]), dtype=np.uint8).reshape(obj["shape"])


async def main(cmd: dict[str, Any]) -> Any:
    client = await AsyncKafkaClient(kafka_topic_prefix=cmd["prefix"], wait_writes=True).start()
    try:
        col = await client.get_collection(cmd["collection"])
        if cmd["op"] == "add":
            images = [_image(i) for i in cmd["images"]] if "images" in cmd else None
            await col.add(ids=cmd["ids"], documents=cmd.get("documents"), images=images,
                          metadatas=cmd.get("metadatas"))
            return None
        if cmd["op"] == "query":
            images = [_image(i) for i in cmd["query_images"]] if "query_images" in cmd else None
            result = await col.query(query_texts=cmd.get("query_texts"), query_images=images,
                                     n_results=cmd["n_results"], include=["distances"])
            return {"ids": result["ids"], "distances": result["distances"]}
        raise ValueError(f"unknown op {cmd['op']}")
    finally:
        await client.close()


if __name__ == "__main__":
    out = asyncio.run(main(orjson.loads(sys.argv[1])))
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
