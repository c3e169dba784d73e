// Wire results to typed results: embeddings as number[][], loaded data as NdArray.
import { decodeArray, decodeMatrix } from "./arrays.js";
import type { WireArray, WireGetResult, WireQueryResult } from "./generated/wire.js";
import type { GetResult, Include, NdArray, QueryResult } from "./types.js";

const arrays = (xs: (WireArray | null)[]): (NdArray | null)[] => xs.map((x) => (x === null ? null : decodeArray(x)));

export function getResult<I extends Include>(w: WireGetResult): GetResult<I> {
  return {
    ids: w.ids, included: w.included as I[],
    documents: w.documents ?? null, metadatas: w.metadatas ?? null, uris: w.uris ?? null,
    embeddings: w.embeddings ? decodeMatrix(w.embeddings) : null,
    data: w.data ? arrays(w.data) : null,
  } as GetResult<I>;
}

export function queryResult<I extends Include>(w: WireQueryResult): QueryResult<I> {
  return {
    ids: w.ids, included: w.included as I[],
    documents: w.documents ?? null, metadatas: w.metadatas ?? null, uris: w.uris ?? null,
    distances: w.distances ?? null,
    embeddings: w.embeddings ? w.embeddings.map(decodeMatrix) : null,
    data: w.data ? w.data.map((row) => (row === null ? [] : arrays(row))) : null,
  } as QueryResult<I>;
}
