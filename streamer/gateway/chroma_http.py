"""Chroma's HTTP API v2 (chromadb 1.5.9) on the gateway's port, so ``chromadb.HttpClient``
works against ``streamer serve`` (Kafka) and ``streamer serve --embedded`` unchanged.

Every call goes through the gateway's ``Operations`` and the ``AsyncCollection`` methods the
Python client uses, over the same ``Backend``, so validation, results and errors are the
client's, in Chroma's wire shapes (``gateway.chroma_wire``). Collections are addressed by
their streamer id, a UUID in every mode; the one tenant and database are Chroma's defaults
(``default_tenant``/``default_database``): others are Chroma's 404, creating or deleting
them a 403 (``docs/http-api.md``).

Writes answer once applied: ``wait=True`` (the writer's verdict, so a refused record is the
request's error) and then ``Backend.sync`` (over Kafka, a read RPC carrying the session's
offsets, answered once the replica that serves reads applied them), so a Chroma client's
query after a 201 sees the records, from this gateway or any client of that replica.

Auth: the gateway's bearer tokens (``Authorization: Bearer`` or Chroma's ``X-Chroma-Token``);
``http_anonymous`` grants a request without a token. Heartbeat, healthcheck, version and
pre-flight checks are open, as the existing ``/api/v2/heartbeat`` was."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from schemas.errors import InvalidArgumentError, NotFoundError, StreamerError
from schemas.records import CollectionSpec
from streamer.client.collection import AsyncCollection
from streamer.client.search import sparse_of_schema
from streamer.gateway import chroma_openapi
from streamer.gateway.auth import Authenticator, Grant, Mode
from streamer.gateway.chroma_wire import (
    DATABASE_ID,
    DEFAULT_DATABASE,
    DEFAULT_TENANT,
    VERSION,
    HTTPError,
    collection_json,
    collection_uuid,
    declared_embedding_function,
    embeddings,
    from_error,
    json_response,
    large_json_response,
    not_found,
    query_uint,
    read_body,
    result_json,
    space_of,
    without_sparse,
)
from streamer.gateway.ops import Operations
from streamer.settings import Settings

log = logging.getLogger(__name__)
Handler = Callable[[web.Request, Grant], Awaitable[web.Response]]
API = "/api/v2"
DB = API + "/tenants/{tenant}/databases/{database}"
COLL = DB + "/collections/{collection_id}"
_ONE_TENANT = (f"streamer serves one tenant ({DEFAULT_TENANT}) and one database "
               f"({DEFAULT_DATABASE})")


def anonymous_grant(spec: str | None) -> Grant | None:
    if not spec:
        return None
    if spec not in ("r", "w", "rw"):
        raise InvalidArgumentError(f"http_anonymous must be r, w or rw, not {spec!r}")
    modes: frozenset[Mode] = frozenset(m for m in ("r", "w") if m in spec)
    return Grant("anonymous", modes, None)


class ChromaAPI:
    def __init__(self, settings: Settings, ops: Operations, auth: Authenticator,
                 ready: Callable[[], bool]) -> None:
        self.settings = settings
        self.ops = ops
        self.backend = ops.backend
        self.auth = auth
        self.anonymous = anonymous_grant(settings.http_anonymous)
        self.ready = ready

    def add_routes(self, app: web.Application) -> None:
        for method, path, _, handler, open_ in self.routes():
            app.router.add_route(method, path, self._wrap(handler, open_))

    def routes(self) -> list[tuple[str, str, str, Handler, bool]]:
        """(method, path, operationId, handler, open without a token)."""
        return [
            ("GET", API + "/heartbeat", "heartbeat", self.heartbeat, True),
            ("GET", API + "/healthcheck", "healthcheck", self.healthcheck, True),
            ("GET", API + "/version", "version", self.version, True),
            ("GET", API + "/pre-flight-checks", "pre_flight_checks", self.pre_flight, True),
            ("GET", "/openapi.json", "openapi", self.openapi, True),
            ("GET", API + "/auth/identity", "get_user_identity", self.identity, False),
            ("POST", API + "/reset", "reset", self.reset, False),
            ("POST", API + "/tenants", "create_tenant", self.create_tenant, False),
            ("GET", API + "/tenants/{tenant}", "get_tenant", self.get_tenant, False),
            ("PATCH", API + "/tenants/{tenant}", "update_tenant", self.refuse, False),
            ("GET", API + "/tenants/{tenant}/databases", "list_databases", self.databases, False),
            ("POST", API + "/tenants/{tenant}/databases", "create_database", self.refuse, False),
            ("GET", DB, "get_database", self.get_database, False),
            ("DELETE", DB, "delete_database", self.refuse, False),
            ("GET", DB + "/collections", "list_collections", self.list_collections, False),
            ("POST", DB + "/collections", "create_collection", self.create_collection, False),
            ("GET", DB + "/collections_count", "count_collections", self.count_collections, False),
            ("GET", DB + "/collections/by-id/{collection_id}", "get_collection_by_id",
             self.get_by_id, False),
            ("GET", COLL, "get_collection", self.get_collection, False),
            ("PUT", COLL, "update_collection", self.update_collection, False),
            ("DELETE", COLL, "delete_collection", self.delete_collection, False),
            ("GET", COLL + "/count", "collection_count", self.count, False),
            ("POST", COLL + "/add", "collection_add", self.write, False),
            ("POST", COLL + "/update", "collection_update", self.write, False),
            ("POST", COLL + "/upsert", "collection_upsert", self.write, False),
            ("POST", COLL + "/delete", "collection_delete", self.delete, False),
            ("POST", COLL + "/get", "collection_get", self.get, False),
            ("POST", COLL + "/query", "collection_query", self.query, False),
            ("POST", COLL + "/search", "collection_search", self.search, False),
            ("GET", API + "/collections/{crn}", "not_implemented", self.unsupported, False),
            *((m, COLL + tail, "not_implemented", self.unsupported, False) for m, tail in (
                ("POST", "/fork"), ("GET", "/fork_count"),
                ("GET", "/indexing_status"), ("POST", "/functions/attach"),
                ("GET", "/functions/{function_name}"),
                ("POST", "/attached_functions/{name}/detach"))),
        ]

    # ---- plumbing -----------------------------------------------------------------
    def _grant(self, request: web.Request) -> Grant:
        token = request.headers.get("X-Chroma-Token")
        grant = self.auth.grant(token.strip()) if token else self.auth.from_headers(
            request.headers)
        if grant is not None:
            return grant
        given = token or request.headers.get("Authorization")
        if given is None and self.anonymous is not None:
            return self.anonymous
        raise HTTPError(401, "AuthError", "missing or invalid bearer token")

    def _wrap(self, handler: Handler, open_: bool) -> Callable[[web.Request], Awaitable[
            web.Response]]:
        anyone = Grant("open", frozenset(), None)

        async def run(request: web.Request) -> web.Response:
            try:
                grant = anyone if open_ else self._grant(request)
                if "tenant" in request.match_info:
                    self._scope(request)
                return await handler(request, grant)
            except HTTPError as exc:
                return exc.response()
            except StreamerError as exc:
                if exc.retriable:
                    log.warning("%s %s: %s", request.method, request.path, exc)
                return from_error(exc).response()
            except web.HTTPException:
                raise
            except Exception as exc:
                log.exception("%s %s failed", request.method, request.path)
                return HTTPError(500, "InternalError", str(exc)).response()
        return run

    @staticmethod
    def _scope(request: web.Request) -> None:
        """Only Chroma's default tenant and database exist here."""
        tenant, database = request.match_info["tenant"], request.match_info.get("database")
        if tenant != DEFAULT_TENANT:
            raise not_found(f"Tenant [{tenant}] not found")
        if database is not None and database != DEFAULT_DATABASE:
            raise not_found(f"Database [{database}] not found. Are you sure it exists?")

    async def _spec(self, request: web.Request, grant: Grant, mode: Mode) -> CollectionSpec:
        cid = collection_uuid(request.match_info["collection_id"])
        try:
            spec = await self.ops.spec({"collection": cid})
        except NotFoundError:
            raise not_found(f"Collection [{cid}] does not exist.") from None
        grant.check(mode, spec.name)
        return spec

    async def _collection(self, request: web.Request, grant: Grant,
                          mode: Mode) -> AsyncCollection:
        return await self.ops.wrap(await self._spec(request, grant, mode))

    # ---- system -------------------------------------------------------------------
    async def heartbeat(self, request: web.Request, grant: Grant) -> web.Response:
        return json_response({"nanosecond heartbeat": time.time_ns()})

    async def healthcheck(self, request: web.Request, grant: Grant) -> web.Response:
        ready = self.ready()
        return json_response({"is_executor_ready": ready, "is_log_client_ready": ready},
                             200 if ready else 503)

    async def version(self, request: web.Request, grant: Grant) -> web.Response:
        return json_response(VERSION)

    async def pre_flight(self, request: web.Request, grant: Grant) -> web.Response:
        return json_response({"max_batch_size": self.backend.max_batch_size,
                              "supports_base64_encoding": True})

    async def openapi(self, request: web.Request, grant: Grant) -> web.Response:
        return json_response(chroma_openapi.document(
            [(m, p, n) for m, p, n, _, _ in self.routes() if p.startswith(API)], VERSION))

    async def identity(self, request: web.Request, grant: Grant) -> web.Response:
        user = "" if grant is self.anonymous else grant.name
        return json_response({"user_id": user, "tenant": DEFAULT_TENANT,
                              "databases": [DEFAULT_DATABASE]})

    async def reset(self, request: web.Request, grant: Grant) -> web.Response:
        if not self.settings.allow_reset:
            raise HTTPError(403, "ChromaError", "Reset is disabled by config")
        if "w" not in grant.modes or grant.collections is not None:
            raise HTTPError(403, "AuthorizationError", "Reset needs write access to every "
                                                       "collection")
        for spec in await self.backend.list_collections():
            with contextlib.suppress(NotFoundError):  # deleted meanwhile
                await self.backend.delete_collection(spec.name)
        return json_response(True)

    async def unsupported(self, request: web.Request, grant: Grant) -> web.Response:
        raise HTTPError(501, "ChromaError", f"{request.method} {request.path} is not "
                                            "implemented by streamer")

    # ---- tenants and databases ----------------------------------------------------------
    async def refuse(self, request: web.Request, grant: Grant) -> web.Response:
        raise HTTPError(403, "ChromaError", f"{_ONE_TENANT}: {request.method} "
                                            f"{request.path} is refused")

    async def create_tenant(self, request: web.Request, grant: Grant) -> web.Response:
        body = await read_body(request, "create_tenant")
        if body["name"] == DEFAULT_TENANT:
            raise HTTPError(409, "UniqueConstraintError", f"Tenant [{DEFAULT_TENANT}] "
                                                          "already exists")
        return await self.refuse(request, grant)

    async def get_tenant(self, request: web.Request, grant: Grant) -> web.Response:
        return json_response({"name": DEFAULT_TENANT, "resource_name": None})

    @staticmethod
    def _database() -> dict[str, Any]:
        return {"id": DATABASE_ID, "name": DEFAULT_DATABASE, "tenant": DEFAULT_TENANT}

    async def databases(self, request: web.Request, grant: Grant) -> web.Response:
        offset = query_uint(request, "offset") or 0
        limit = query_uint(request, "limit")
        listed = [self._database()][offset:]
        return json_response(listed if limit is None else listed[:limit])

    async def get_database(self, request: web.Request, grant: Grant) -> web.Response:
        return json_response(self._database())

    # ---- collections --------------------------------------------------------------
    async def _readable(self, grant: Grant, limit: int | None = None,
                        offset: int | None = None) -> list[CollectionSpec]:
        if grant.collections is None and "r" in grant.modes:
            return await self.backend.list_collections(limit, offset)
        specs = [s for s in await self.backend.list_collections() if grant.allows("r", s.name)]
        specs = specs[offset or 0:]
        return specs if limit is None else specs[:limit]

    async def list_collections(self, request: web.Request, grant: Grant) -> web.Response:
        specs = await self._readable(grant, query_uint(request, "limit"),
                                     query_uint(request, "offset"))
        return json_response([collection_json(s) for s in specs])

    async def count_collections(self, request: web.Request, grant: Grant) -> web.Response:
        return json_response(len(await self._readable(grant)))

    async def create_collection(self, request: web.Request, grant: Grant) -> web.Response:
        body = await read_body(request, "create_collection")
        name = body["name"]
        grant.check("w", name)
        spec = await self.backend.create_collection(
            name, metadata=body.get("metadata"), embedding_function=None, data_loader=None,
            get_or_create=bool(body.get("get_or_create", False)),
            space=space_of(body.get("configuration")),
            sparse=sparse_of_schema(body.get("schema")),
            hnsw=(body.get("configuration") or {}).get("hnsw"),
            client_embedding_function=declared_embedding_function(body))
        return json_response(collection_json(spec))

    async def get_collection(self, request: web.Request, grant: Grant) -> web.Response:
        # Chroma's GET .../collections/{x} names the collection (its PUT, an id).
        name = request.match_info["collection_id"]
        grant.check("r", name)
        return json_response(collection_json(await self.backend.get_collection(name)))

    async def get_by_id(self, request: web.Request, grant: Grant) -> web.Response:
        raw = request.match_info["collection_id"]
        try:
            cid = collection_uuid(raw)
        except HTTPError:
            raise HTTPError(400, "InvalidArgumentError", "Validation error: collection_id: Invalid "
                                                         "collection ID format, expected UUID") from None
        try:
            spec = await self.ops.spec({"collection": cid})
        except NotFoundError:
            raise not_found(f"Collection [{cid}] does not exist") from None
        grant.check("r", spec.name)
        return json_response(collection_json(spec))

    async def update_collection(self, request: web.Request, grant: Grant) -> web.Response:
        body = await read_body(request, "update_collection")
        spec = await self._spec(request, grant, "w")
        new_name = body.get("new_name")
        if new_name:
            grant.check("w", new_name)
        await self.backend.modify_collection(spec.name, new_name=new_name,
                                             metadata=body.get("new_metadata"),
                                             configuration=body.get("new_configuration"))
        return json_response({})

    async def delete_collection(self, request: web.Request, grant: Grant) -> web.Response:
        name = request.match_info["collection_id"]  # a name, as in Chroma
        grant.check("w", name)
        await self.backend.delete_collection(name)
        return json_response({})

    # ---- records ------------------------------------------------------------------
    async def count(self, request: web.Request, grant: Grant) -> web.Response:
        return json_response(await (await self._collection(request, grant, "r")).count())

    async def write(self, request: web.Request, grant: Grant) -> web.Response:
        op = request.path.rsplit("/", 1)[1]
        body = await read_body(request, op)
        spec = await self._spec(request, grant, "w")
        coll = await self.ops.wrap(spec)
        if body["ids"]:  # Chroma answers an empty batch without writing anything
            await getattr(coll, op)(
                ids=body["ids"], embeddings=await embeddings(body.get("embeddings")),
                metadatas=without_sparse(body.get("metadatas"), spec), documents=body.get("documents"),
                uris=body.get("uris"), wait=True)
            await self.backend.sync()
        return json_response({}, 201 if op == "add" else 200)

    async def delete(self, request: web.Request, grant: Grant) -> web.Response:
        body = await read_body(request, "delete")
        coll = await self._collection(request, grant, "w")
        if all(body.get(k) is None for k in ("ids", "where", "where_document")):
            return json_response({"deleted": 0})  # Chroma: nothing named, nothing deleted
        result = await coll.delete(ids=body.get("ids"), where=body.get("where"),
                                   where_document=body.get("where_document"),
                                   limit=body.get("limit"), wait=True)
        await self.backend.sync()
        return json_response(result)

    async def get(self, request: web.Request, grant: Grant) -> web.Response:
        body = await read_body(request, "get")
        coll = await self._collection(request, grant, "r")
        result = await coll.get(ids=body.get("ids"), where=body.get("where"),
                                limit=body.get("limit"), offset=body.get("offset"),
                                where_document=body.get("where_document"),
                                include=body.get("include", ["documents", "metadatas"]))
        return await large_json_response(result_json(result, query=False))

    async def query(self, request: web.Request, grant: Grant) -> web.Response:
        body = await read_body(request, "query")
        coll = await self._collection(request, grant, "r")
        n_results = body.get("n_results")
        result = await coll.query(query_embeddings=await embeddings(body["query_embeddings"]),
                                  ids=body.get("ids"), n_results=10 if n_results is None
                                  else n_results, where=body.get("where"),
                                  where_document=body.get("where_document"),
                                  include=body.get("include",
                                                   ["documents", "metadatas", "distances"]))
        return await large_json_response(result_json(result, query=True))

    async def search(self, request: web.Request, grant: Grant) -> web.Response:
        """Chroma's Search API, which ``chroma run`` answers with 501: here, the same rule
        the clients run (``consumers.reads.search``)."""
        body = await read_body(request, "search")
        coll = await self._collection(request, grant, "r")
        return await large_json_response(dict(await coll.search(body["searches"])))


__all__ = ["ChromaAPI"]
