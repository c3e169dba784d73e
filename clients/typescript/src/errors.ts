// Typed errors: the classes are generated from schemas/generated/errors.json (Python's
// schemas/errors.py), so `code` and `retriable` mean the same on both sides.
import { ERROR_CLASSES, InternalError, StreamerError } from "./generated/errors.js";
import type { WireError } from "./generated/wire.js";

export * from "./generated/errors.js";

/** Rebuilds the error a server sent; an unknown code becomes an InternalError. */
export function errorFromWire(payload: WireError): StreamerError {
  const cls = ERROR_CLASSES[payload.code] ?? InternalError;
  return new cls(payload.message);
}

export function isStreamerError(value: unknown): value is StreamerError {
  return value instanceof StreamerError;
}
