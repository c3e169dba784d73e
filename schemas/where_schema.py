"""JSON Schema of Chroma's ``where`` / ``where_document`` grammar (the validator with Chroma's
messages is ``consumers.validation.where``)."""

from typing import Any

SCALAR = {"type": ["string", "number", "boolean"]}
OPERATOR = {"type": "object", "minProperties": 1, "maxProperties": 1,
            "properties": {op: SCALAR for op in ("$eq", "$ne", "$contains", "$not_contains")}
            | {op: {"type": "number"} for op in ("$gt", "$gte", "$lt", "$lte")}
            | {op: {"type": "array", "minItems": 1, "items": SCALAR} for op in ("$in", "$nin")},
            "additionalProperties": False}
WHERE: dict[str, Any] = {
    "$id": "where", "type": "object", "minProperties": 1, "maxProperties": 1,
    "properties": {"$and": {"type": "array", "minItems": 2, "items": {"$ref": "where"}},
                   "$or": {"type": "array", "minItems": 2, "items": {"$ref": "where"}}},
    "additionalProperties": {"anyOf": [SCALAR, OPERATOR]}}
WHERE_DOCUMENT: dict[str, Any] = {
    "$id": "where_document", "type": "object", "minProperties": 1, "maxProperties": 1,
    "properties": {op: {"type": "string", "minLength": 1}
                   for op in ("$contains", "$not_contains", "$regex", "$not_regex")}
    | {op: {"type": "array", "minItems": 2, "items": {"$ref": "where_document"}}
       for op in ("$and", "$or")},
    "additionalProperties": False}
