// Wire results to typed results: embeddings as number[][], loaded data as NdArray.
import { decodeArray, decodeMatrix } from "./arrays.js";
const arrays = (xs) => xs.map((x) => (x === null ? null : decodeArray(x)));
export function getResult(w) {
    return {
        ids: w.ids, included: w.included,
        documents: w.documents ?? null, metadatas: w.metadatas ?? null, uris: w.uris ?? null,
        embeddings: w.embeddings ? decodeMatrix(w.embeddings) : null,
        data: w.data ? arrays(w.data) : null,
    };
}
export function queryResult(w) {
    return {
        ids: w.ids, included: w.included,
        documents: w.documents ?? null, metadatas: w.metadatas ?? null, uris: w.uris ?? null,
        distances: w.distances ?? null,
        embeddings: w.embeddings ? w.embeddings.map(decodeMatrix) : null,
        data: w.data ? w.data.map((row) => (row === null ? [] : arrays(row))) : null,
    };
}
