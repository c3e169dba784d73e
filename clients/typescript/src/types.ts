// Public types: what a caller passes and gets. Results are typed by `include`: a field not
// included is `null`, as in the Python client's results.
import type { Metadata as WireMetadata, Where, WhereDocument, Builtin } from "./generated/wire.js";

export type { Where, WhereDocument, Builtin };
export type Metadata = NonNullable<WireMetadata>;
export type Include = "documents" | "embeddings" | "metadatas" | "distances" | "uris" | "data";
export type Embedding = number[] | Float32Array;

/** Raw pixels: uint8, shape [height, width] (grey) or [height, width, channels] (RGB/RGBA). */
export interface PixelImage {
  data: Uint8Array | Uint8ClampedArray;
  shape: [number, number] | [number, number, number];
}

/** Any image a page or a Node program holds. A Blob/File holds an encoded file (PNG, JPEG,
 *  WebP...), sent as is and decoded server-side; in Node, `new Blob([await readFile(path)])`. */
export type ImageInput = PixelImage | ImageData | HTMLCanvasElement | OffscreenCanvas | ImageBitmap | Blob;

/** A decoded array from the wire (loaded data, embeddings of a query). */
export interface NdArray {
  dtype: string;
  shape: number[];
  data: Uint8Array | Int16Array | Int32Array | BigInt64Array | Float32Array | Float64Array | Uint16Array;
}

type GetFields = {
  documents: (string | null)[];
  embeddings: number[][];
  metadatas: (Metadata | null)[];
  uris: (string | null)[];
  data: (NdArray | null)[];
};
type QueryFields = { [K in keyof GetFields]: GetFields[K][] } & { distances: number[][] };

export type GetResult<I extends Include = "documents" | "metadatas"> =
  { ids: string[]; included: I[] } &
  { [K in keyof GetFields]: K extends I ? GetFields[K] : null };

export type QueryResult<I extends Include = "documents" | "metadatas" | "distances"> =
  { ids: string[][]; included: I[] } &
  { [K in keyof QueryFields]: K extends I ? QueryFields[K] : null };

export interface RequestOptions {
  /** Aborts the call: it rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Rejects with RequestTimeoutError after this many ms (default: the client's). */
  timeoutMs?: number;
}

export interface RecordSet {
  ids: string[];
  embeddings?: Embedding[];
  documents?: string[];
  images?: ImageInput[];
  uris?: string[];
  metadatas?: (Metadata | null)[];
}

export interface WriteOptions extends RequestOptions {
  /** Wait for the writer's verdict (embedding, loading): default true. */
  wait?: boolean;
}

export interface GetParams<I extends Include> extends RequestOptions {
  ids?: string[];
  where?: Where;
  whereDocument?: WhereDocument;
  limit?: number;
  offset?: number;
  include?: I[];
}

export interface QueryInputs {
  queryTexts?: string[];
  queryImages?: ImageInput[];
  queryUris?: string[];
  queryEmbeddings?: Embedding[];
}

export interface QueryParams<I extends Include> extends QueryInputs, RequestOptions {
  nResults?: number;
  ids?: string[];
  where?: Where;
  whereDocument?: WhereDocument;
  include?: I[];
}

export interface DeleteParams extends WriteOptions {
  ids?: string[];
  where?: Where;
  whereDocument?: WhereDocument;
  limit?: number;
}

export type LiveField = "documents" | "metadatas" | "uris";

export interface SubscribeParams extends QueryInputs {
  /** Push every new record within this distance (resumable across reconnects). */
  threshold?: number;
  /** Or: push records that enter the current top k. */
  topK?: number;
  where?: Where;
  whereDocument?: WhereDocument;
  include?: LiveField[];
  signal?: AbortSignal;
}

/** A record pushed by a live query. */
export interface LiveMatch {
  id: string;
  seq: number;
  distance: number;
  document?: string | null;
  metadata?: Metadata | null;
  uri?: string | null;
}

/** A BM25 sparse vector index on a key, built from documents (Chroma's
 *  `SparseVectorIndexConfig` with `ChromaBm25EmbeddingFunction`). */
export interface SparseIndex {
  key: string;
  sourceKey?: "#document";
  /** chroma_bm25's config (k, b, avg_doc_length, token_max_length, stopwords); {} for its defaults. */
  config?: Record<string, unknown>;
  bm25?: boolean;
}

/** One search in Chroma's dict form (what chromadb's `Search.to_dict()` gives), or an object
 *  that gives it (`toJSON()`). A `$knn` query may be a text: the server embeds it with the
 *  collection's own function (dense or BM25). */
export type SearchInput = Record<string, unknown> | { toJSON(): Record<string, unknown> };

/** Chroma's column-major search result: per search, its rows; a column not selected is null. */
export interface SearchResult {
  ids: string[][];
  documents: ((string | null)[] | null)[];
  embeddings: (number[][] | null)[];
  metadatas: ((Metadata | null)[] | null)[];
  scores: (number[] | null)[];
  select: string[][];
}
