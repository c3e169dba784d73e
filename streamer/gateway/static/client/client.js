// StreamerClient and Collection: Chroma's collection API over the gateway's websocket.
import { encodeEmbedding } from "./arrays.js";
import { InvalidArgumentError } from "./errors.js";
import { encodeImage } from "./images.js";
import { LiveQuery } from "./live.js";
import { getResult, queryResult } from "./results.js";
import { Socket } from "./socket.js";
function wsUrl(url) {
    const u = new URL(url);
    if (u.protocol === "http:")
        u.protocol = "ws:";
    else if (u.protocol === "https:")
        u.protocol = "wss:";
    if (u.pathname === "/" || u.pathname === "")
        u.pathname = "/ws";
    return u.toString();
}
async function images(xs) {
    return xs === undefined ? undefined : Promise.all(xs.map(encodeImage));
}
async function queryInputs(p) {
    const given = [p.queryTexts, p.queryImages, p.queryUris, p.queryEmbeddings].filter((x) => x !== undefined);
    if (given.length !== 1) {
        throw new InvalidArgumentError("You must provide exactly one of queryEmbeddings, queryTexts, queryImages, or queryUris.");
    }
    return {
        ...(p.queryTexts ? { texts: p.queryTexts } : {}),
        ...(p.queryUris ? { uris: p.queryUris } : {}),
        ...(p.queryEmbeddings ? { embeddings: p.queryEmbeddings.map(encodeEmbedding) } : {}),
        ...(p.queryImages ? { images: await images(p.queryImages) } : {}),
    };
}
export class Collection {
    socket;
    spec;
    constructor(socket, spec) {
        this.socket = socket;
        this.spec = spec;
    }
    get id() { return this.spec.id; }
    get name() { return this.spec.name; }
    get metadata() { return this.spec.metadata ?? null; }
    add(records, opts) { return this.write("add", records, opts); }
    update(records, opts) { return this.write("update", records, opts); }
    upsert(records, opts) { return this.write("upsert", records, opts); }
    async write(op, r, opts = {}) {
        await this.socket.request({
            op, collection: this.id, ids: r.ids, wait: opts.wait ?? true,
            ...(r.embeddings ? { embeddings: r.embeddings.map(encodeEmbedding) } : {}),
            ...(r.documents ? { documents: r.documents } : {}),
            ...(r.uris ? { uris: r.uris } : {}),
            ...(r.metadatas ? { metadatas: r.metadatas } : {}),
            ...(r.images ? { images: await images(r.images) } : {}),
        }, opts);
    }
    async delete(p = {}) {
        await this.socket.request({
            op: "delete", collection: this.id, ids: p.ids ?? null, where: p.where ?? null,
            where_document: p.whereDocument ?? null, limit: p.limit ?? null, wait: p.wait ?? true,
        }, p);
    }
    async count(opts) {
        return this.socket.request({ op: "count", collection: this.id }, opts);
    }
    async get(p = {}) {
        const w = await this.socket.request({
            op: "get", collection: this.id, ids: p.ids ?? null, where: p.where ?? null,
            where_document: p.whereDocument ?? null, limit: p.limit ?? null, offset: p.offset ?? null,
            ...(p.include ? { include: p.include } : {}),
        }, p);
        return getResult(w);
    }
    async query(p) {
        const w = await this.socket.request({
            op: "query", collection: this.id, ...(await queryInputs(p)), n_results: p.nResults ?? 10,
            ids: p.ids ?? null, where: p.where ?? null, where_document: p.whereDocument ?? null,
            ...(p.include ? { include: p.include } : {}),
        }, p);
        return queryResult(w);
    }
    /** Chroma's Search API: filter, rank (Knn, Rrf, arithmetic), group, limit and select, one
     *  result per search. */
    async search(searches, opts) {
        const list = Array.isArray(searches) ? searches : [searches];
        const plain = list.map((s) => (typeof s.toJSON === "function" ? s.toJSON() : s));
        return this.socket.request({ op: "search", collection: this.id, searches: plain }, opts);
    }
    /** A live query: `for await (const m of collection.subscribe({queryTexts: [...], threshold: 0.3}))`;
     *  `break` or `return()` unsubscribes. Await `ready` to know it is registered. */
    subscribe(p) {
        if ((p.threshold === undefined) === (p.topK === undefined)) {
            throw new InvalidArgumentError("A live query takes exactly one of threshold or topK");
        }
        const given = [p.queryTexts, p.queryImages, p.queryUris, p.queryEmbeddings].filter((x) => x !== undefined);
        if (given.length !== 1 || given[0].length !== 1) {
            throw new InvalidArgumentError("A live query takes exactly one query input");
        }
        const frame = queryInputs(p).then((inputs) => ({
            op: "subscribe", collection: this.id, ...inputs,
            ...(p.threshold !== undefined ? { threshold: p.threshold } : { top_k: p.topK }),
            ...(p.where ? { where: p.where } : {}),
            ...(p.whereDocument ? { where_document: p.whereDocument } : {}),
            ...(p.include ? { include: p.include } : {}),
        }));
        return new LiveQuery(this.socket, frame, p.signal);
    }
}
export class StreamerClient {
    socket;
    constructor(opts) {
        const impl = opts.WebSocket ?? globalThis.WebSocket;
        if (!impl) {
            throw new InvalidArgumentError("This runtime has no global WebSocket: pass one, e.g. new StreamerClient({ url, token, WebSocket }) with WebSocket from the 'ws' package");
        }
        this.socket = new Socket(wsUrl(opts.url), opts.token, impl, opts.timeoutMs ?? 30_000, {
            initialDelayMs: opts.reconnect?.initialDelayMs ?? 100,
            maxDelayMs: opts.reconnect?.maxDelayMs ?? 5_000,
        });
    }
    async listCollections(opts) {
        const specs = await this.socket.request({ op: "list_collections" }, opts);
        return specs.map((s) => new Collection(this.socket, s));
    }
    async getCollection(p) {
        return new Collection(this.socket, await this.socket.request({ op: "get_collection", name: p.name }, p));
    }
    async createCollection(p) {
        const spec = await this.socket.request({
            op: "create_collection", name: p.name, metadata: p.metadata ?? null,
            ...(p.embeddingFunction !== undefined ? { embedding_function: p.embeddingFunction } : {}),
            data_loader: p.dataLoader ?? null, get_or_create: p.getOrCreate ?? false,
            ...(p.sparse ? { sparse: {
                    key: p.sparse.key, source_key: p.sparse.sourceKey ?? "#document", bm25: p.sparse.bm25 ?? true,
                    embedding_function: { name: "chroma_bm25", config: p.sparse.config ?? {} },
                } } : {}),
        }, p);
        return new Collection(this.socket, spec);
    }
    getOrCreateCollection(p) {
        return this.createCollection({ ...p, getOrCreate: true });
    }
    async deleteCollection(p) {
        await this.socket.request({ op: "delete_collection", name: p.name }, p);
    }
    close() {
        this.socket.close();
    }
}
