"""``/openapi.json``: an OpenAPI 3.1 description of the Chroma HTTP API v2 routes this
gateway implements, built from the route table (``gateway.chroma_http``) and the request
bodies' JSON Schemas (``gateway.chroma_wire.BODIES``), so it cannot drift from what runs."""

from __future__ import annotations

import re
from typing import Any

from streamer.gateway.chroma_wire import BODIES

#: operationId -> the request body it takes
_BODY = {"create_tenant": "create_tenant", "create_database": "create_database",
         "create_collection": "create_collection", "update_collection": "update_collection",
         "collection_add": "add", "collection_update": "update", "collection_upsert": "upsert",
         "collection_delete": "delete", "collection_get": "get", "collection_query": "query"}
_OK = {"collection_add": "201"}
_ERROR = {"type": "object", "required": ["error", "message"],
          "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}


def _operation(method: str, path: str, name: str) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": name, "responses": {
        _OK.get(name, "200"): {"description": "OK",
                               "content": {"application/json": {"schema": {}}}},
        "default": {"description": "Chroma's error shape", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}}}
    params = re.findall(r"{(\w+)}", path)
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True,
                             "schema": {"type": "string"}} for p in params]
    if name == "list_collections":
        op["parameters"] = [*op.get("parameters", []), *(
            {"name": q, "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 0}} for q in ("limit", "offset"))]
    if name in _BODY:
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": BODIES[_BODY[name]]}}}
    if name == "not_implemented":
        tail = path.rsplit("/", 1)[-1].strip("{}") if path.endswith("}") else \
            path.rsplit("}/", 1)[-1].replace("/", "_")
        op["operationId"] = f"not_implemented_{method.lower()}_{tail}"
        op["description"] = "Chroma route streamer does not implement: 501"
    return op


def document(routes: list[tuple[str, str, str]], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, name in routes:
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, name)
    return {"openapi": "3.1.0",
            "info": {"title": "streamer: Chroma HTTP API v2", "version": version,
                     "description": "chromadb.HttpClient's API on streamer serve "
                                    "(docs/http-api.md)"},
            "paths": paths,
            "components": {"schemas": {"ErrorResponse": _ERROR},
                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}]}
