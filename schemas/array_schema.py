"""JSON Schema of arrays and images on the wire (``schemas.events`` encodes and decodes
them); shared by the topic contracts and the websocket's."""

from typing import Any

from schemas.events import IMAGE_CODECS

ARRAY_FIELDS: dict[str, Any] = {
    "dtype": {"enum": ["uint8", "int16", "int32", "int64", "float16", "float32", "float64"]},
    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "maxItems": 4},
    "b64": {"type": "string"}}
ARRAY = {"type": "object", "required": ["dtype", "shape", "b64"], "additionalProperties": False,
         "description": "A typed array: little-endian raw bytes, base64.",
         "properties": ARRAY_FIELDS}
IMAGE = {"description": "An image: a pixel array, raw (ARRAY) or compressed losslessly (what the "
                        "clients send), or an encoded file as its producer holds it.",
         "anyOf": [
             ARRAY,
             {"type": "object", "required": ["dtype", "shape", "codec", "b64"],
              "additionalProperties": False,
              "description": "A pixel array, compressed losslessly. 'zstd': the little-endian "
                             "raw bytes, zstd-compressed. 'delta-zstd' (uint8 HxW or HxWxC): each "
                             "pixel minus its left neighbour per channel, mod 256, then zstd. "
                             "Decoded exactly to dtype and shape.",
              "properties": {**ARRAY_FIELDS, "codec": {"enum": list(IMAGE_CODECS)}}},
             {"type": "object", "required": ["file"], "additionalProperties": False,
              "description": "An encoded image file (JPEG, PNG, WebP; also GIF, BMP), sent as it "
                             "is; decoded server-side to RGB under the pixel limit, which is "
                             "checked from the file's header first.",
              "properties": {"file": {"type": "string", "contentEncoding": "base64",
                                      "contentMediaType": "image/*"}}}]}
