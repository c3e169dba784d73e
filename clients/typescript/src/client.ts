// StreamerClient and Collection: Chroma's collection API over the gateway's websocket.
import { encodeEmbedding } from "./arrays.js";
import { InvalidArgumentError } from "./errors.js";
import type { Builtin, CollectionSpec, WireGetResult, WireImage, WireQueryResult, WsRequest } from "./generated/wire.js";
import { encodeImage } from "./images.js";
import { LiveQuery } from "./live.js";
import { getResult, queryResult } from "./results.js";
import { Socket, type ReconnectOptions, type WebSocketConstructor } from "./socket.js";
import type {
  DeleteParams, GetParams, GetResult, ImageInput, Include, Metadata, QueryInputs, QueryParams,
  QueryResult, RecordSet, RequestOptions, SearchInput, SearchResult, SparseIndex, SubscribeParams,
  WriteOptions,
} from "./types.js";

export interface StreamerClientOptions {
  /** The gateway: http(s):// or ws(s):// URL of `streamer serve` (the /ws path is added). */
  url: string;
  /** A bearer token from STREAMER_AUTH_TOKENS. */
  token?: string;
  /** A WebSocket constructor where the runtime has none (Node < 22: `import WebSocket from "ws"`). */
  WebSocket?: WebSocketConstructor;
  /** Default per-request timeout (ms), 30 s. */
  timeoutMs?: number;
  reconnect?: ReconnectOptions;
}

export interface CreateCollectionParams extends RequestOptions {
  name: string;
  metadata?: Metadata;
  /** A built-in, run server-side; default open_clip with the streamer-tiny model. */
  embeddingFunction?: Builtin | null;
  /** e.g. { name: "image_loader", config: { roots: ["/photos"] } }: loads URIs server-side. */
  dataLoader?: Builtin | null;
  getOrCreate?: boolean;
  /** A BM25 sparse vector index for hybrid search (`Collection.search`). */
  sparse?: SparseIndex | null;
}

type Write = "add" | "update" | "upsert";

function wsUrl(url: string): string {
  const u = new URL(url);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (u.pathname === "/" || u.pathname === "") u.pathname = "/ws";
  return u.toString();
}

async function images(xs: ImageInput[] | undefined): Promise<WireImage[] | undefined> {
  return xs === undefined ? undefined : Promise.all(xs.map(encodeImage));
}

async function queryInputs(p: QueryInputs): Promise<Partial<WsRequest>> {
  const given = [p.queryTexts, p.queryImages, p.queryUris, p.queryEmbeddings].filter((x) => x !== undefined);
  if (given.length !== 1) {
    throw new InvalidArgumentError(
      "You must provide exactly one of queryEmbeddings, queryTexts, queryImages, or queryUris.");
  }
  return {
    ...(p.queryTexts ? { texts: p.queryTexts } : {}),
    ...(p.queryUris ? { uris: p.queryUris } : {}),
    ...(p.queryEmbeddings ? { embeddings: p.queryEmbeddings.map(encodeEmbedding) } : {}),
    ...(p.queryImages ? { images: await images(p.queryImages) } : {}),
  };
}

export class Collection {
  constructor(private readonly socket: Socket, readonly spec: CollectionSpec) {}

  get id(): string { return this.spec.id; }
  get name(): string { return this.spec.name; }
  get metadata(): Metadata | null { return this.spec.metadata ?? null; }

  add(records: RecordSet, opts?: WriteOptions): Promise<void> { return this.write("add", records, opts); }
  update(records: RecordSet, opts?: WriteOptions): Promise<void> { return this.write("update", records, opts); }
  upsert(records: RecordSet, opts?: WriteOptions): Promise<void> { return this.write("upsert", records, opts); }

  private async write(op: Write, r: RecordSet, opts: WriteOptions = {}): Promise<void> {
    await this.socket.request({
      op, collection: this.id, ids: r.ids, wait: opts.wait ?? true,
      ...(r.embeddings ? { embeddings: r.embeddings.map(encodeEmbedding) } : {}),
      ...(r.documents ? { documents: r.documents } : {}),
      ...(r.uris ? { uris: r.uris } : {}),
      ...(r.metadatas ? { metadatas: r.metadatas } : {}),
      ...(r.images ? { images: await images(r.images) } : {}),
    }, opts);
  }

  async delete(p: DeleteParams = {}): Promise<void> {
    await this.socket.request({
      op: "delete", collection: this.id, ids: p.ids ?? null, where: p.where ?? null,
      where_document: p.whereDocument ?? null, limit: p.limit ?? null, wait: p.wait ?? true,
    }, p);
  }

  async count(opts?: RequestOptions): Promise<number> {
    return this.socket.request<number>({ op: "count", collection: this.id }, opts);
  }

  async get<I extends Include = "documents" | "metadatas">(p: GetParams<I> = {}): Promise<GetResult<I>> {
    const w = await this.socket.request<WireGetResult>({
      op: "get", collection: this.id, ids: p.ids ?? null, where: p.where ?? null,
      where_document: p.whereDocument ?? null, limit: p.limit ?? null, offset: p.offset ?? null,
      ...(p.include ? { include: p.include } : {}),
    }, p);
    return getResult<I>(w);
  }

  async query<I extends Include = "documents" | "metadatas" | "distances">(p: QueryParams<I>): Promise<QueryResult<I>> {
    const w = await this.socket.request<WireQueryResult>({
      op: "query", collection: this.id, ...(await queryInputs(p)), n_results: p.nResults ?? 10,
      ids: p.ids ?? null, where: p.where ?? null, where_document: p.whereDocument ?? null,
      ...(p.include ? { include: p.include } : {}),
    }, p);
    return queryResult<I>(w);
  }

  /** Chroma's Search API: filter, rank (Knn, Rrf, arithmetic), group, limit and select, one
   *  result per search. */
  async search(searches: SearchInput | SearchInput[], opts?: RequestOptions): Promise<SearchResult> {
    const list = Array.isArray(searches) ? searches : [searches];
    const plain = list.map((s) => (typeof s.toJSON === "function" ? (s.toJSON as () => Record<string, unknown>)() : s));
    return this.socket.request<SearchResult>({ op: "search", collection: this.id, searches: plain }, opts);
  }

  /** A live query: `for await (const m of collection.subscribe({queryTexts: [...], threshold: 0.3}))`;
   *  `break` or `return()` unsubscribes. Await `ready` to know it is registered. */
  subscribe(p: SubscribeParams): LiveQuery {
    if ((p.threshold === undefined) === (p.topK === undefined)) {
      throw new InvalidArgumentError("A live query takes exactly one of threshold or topK");
    }
    const given = [p.queryTexts, p.queryImages, p.queryUris, p.queryEmbeddings].filter((x) => x !== undefined);
    if (given.length !== 1 || given[0]!.length !== 1) {
      throw new InvalidArgumentError("A live query takes exactly one query input");
    }
    const frame = queryInputs(p).then((inputs) => ({
      op: "subscribe" as const, collection: this.id, ...inputs,
      ...(p.threshold !== undefined ? { threshold: p.threshold } : { top_k: p.topK! }),
      ...(p.where ? { where: p.where } : {}),
      ...(p.whereDocument ? { where_document: p.whereDocument } : {}),
      ...(p.include ? { include: p.include } : {}),
    }));
    return new LiveQuery(this.socket, frame, p.signal);
  }
}

export class StreamerClient {
  private readonly socket: Socket;

  constructor(opts: StreamerClientOptions) {
    const impl = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!impl) {
      throw new InvalidArgumentError(
        "This runtime has no global WebSocket: pass one, e.g. new StreamerClient({ url, token, WebSocket }) with WebSocket from the 'ws' package");
    }
    this.socket = new Socket(wsUrl(opts.url), opts.token, impl, opts.timeoutMs ?? 30_000, {
      initialDelayMs: opts.reconnect?.initialDelayMs ?? 100,
      maxDelayMs: opts.reconnect?.maxDelayMs ?? 5_000,
    });
  }

  async listCollections(opts?: RequestOptions): Promise<Collection[]> {
    const specs = await this.socket.request<CollectionSpec[]>({ op: "list_collections" }, opts);
    return specs.map((s) => new Collection(this.socket, s));
  }

  async getCollection(p: { name: string } & RequestOptions): Promise<Collection> {
    return new Collection(this.socket, await this.socket.request<CollectionSpec>({ op: "get_collection", name: p.name }, p));
  }

  async createCollection(p: CreateCollectionParams): Promise<Collection> {
    const spec = await this.socket.request<CollectionSpec>({
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

  getOrCreateCollection(p: Omit<CreateCollectionParams, "getOrCreate">): Promise<Collection> {
    return this.createCollection({ ...p, getOrCreate: true });
  }

  async deleteCollection(p: { name: string } & RequestOptions): Promise<void> {
    await this.socket.request({ op: "delete_collection", name: p.name }, p);
  }

  close(): void {
    this.socket.close();
  }
}
