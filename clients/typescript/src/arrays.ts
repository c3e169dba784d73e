// Arrays on the wire: {dtype, shape, b64} with little-endian raw bytes (schemas/events.py).
import { InvalidArgumentError } from "./errors.js";
import type { WireArray } from "./generated/wire.js";
import type { Embedding, NdArray } from "./types.js";

const CHUNK = 0x8000;

export function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += CHUNK) {
    s += String.fromCharCode(...bytes.subarray(i, i + CHUNK));
  }
  return btoa(s);
}

export function fromBase64(b64: string): Uint8Array {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function bytesOf(view: ArrayBufferView): Uint8Array {
  if (!LITTLE_ENDIAN) throw new InvalidArgumentError("big-endian hosts are not supported");
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

export function encodeArray(dtype: WireArray["dtype"], shape: number[], data: ArrayBufferView): WireArray {
  return { dtype, shape: shape as WireArray["shape"], b64: toBase64(bytesOf(data)) };
}

export function encodeEmbedding(e: Embedding): WireArray {
  const f = e instanceof Float32Array ? e : Float32Array.from(e);
  if (!f.every(Number.isFinite)) throw new InvalidArgumentError("Embedding contains NaN or infinity");
  return encodeArray("float32", [f.length], f);
}

const VIEWS = {
  uint8: Uint8Array, int16: Int16Array, int32: Int32Array, int64: BigInt64Array,
  float16: Uint16Array, float32: Float32Array, float64: Float64Array,
} as const;

export function decodeArray(a: WireArray): NdArray {
  const bytes = fromBase64(a.b64);
  const View = VIEWS[a.dtype];
  // A fresh, aligned buffer: the decoded bytes start at offset 0.
  const data = new View(bytes.buffer as ArrayBuffer, 0, bytes.byteLength / View.BYTES_PER_ELEMENT);
  return { dtype: a.dtype, shape: [...a.shape], data };
}

/** An n x d float array as rows of numbers (Chroma's JS client returns number[][]). */
export function decodeMatrix(a: WireArray): number[][] {
  const { shape, data } = decodeArray(a);
  const rows = shape[0] ?? 0;
  const cols = shape.length > 1 ? (shape[1] ?? 0) : data.length;
  const flat = Array.from(data as Float32Array);
  const out: number[][] = [];
  for (let r = 0; r < rows; r++) out.push(flat.slice(r * cols, (r + 1) * cols));
  return out;
}
